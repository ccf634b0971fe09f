"""The paper's experiments as named variants, and which variant fills each row of Tables II-V.

Each variant is one set of model and training settings (a partition of ``experiment_results``);
a variant shared by two tables (HMG-Emo-{T, AC} in Tables II and V) runs once. No torch import
here: Dagster loads this module in every step's process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Variant:
    """One experiment: ``model`` and ``training`` are ModelConfig / TrainConfig settings over
    the run's (whose defaults are the project's)."""

    key: str  # the partition key
    name: str
    model: dict = field(default_factory=dict)
    negative_sampling: bool = False
    training: dict = field(default_factory=dict)
    # original: the graph's comment features; llava: the paper's LLaVA-augmented ones (emotion
    # prompt on every edge); llava_leakfree: per fold, emotion prompt on training edges and the
    # neutral prompt on validation and test edges (``leak_free_features``).
    comments: Literal["original", "llava", "llava_leakfree"] = "original"


NO_T_AC = {"use_comments": False, "use_ac": False}

VARIANTS: tuple[Variant, ...] = (
    Variant("hmg_emo", "HMG-Emo"),
    Variant(
        "hmg_emo_transductive",
        "HMG-Emo, transductive (held-out edges pass messages)",
        training={"message_passing": "transductive"},
    ),
    Variant(
        "hmg_emo_beta_exp", "HMG-Emo, beta = exp (Eq. 5 as written)", {"beta_activation": "exp"}
    ),
    Variant(
        "hmg_emo_as_written",
        "HMG-Emo as written (Eq. 3 self term, exp beta, no skip, transductive)",
        {"self_term": "softmax", "skip_to_head": False, "beta_activation": "exp"},
        training={"message_passing": "transductive"},
    ),
    Variant("hmg_emo_no_ac", "HMG-Emo-{AC}", {"use_ac": False}),
    Variant("hmg_emo_no_t_ac", "HMG-Emo-{T, AC}", NO_T_AC),
    Variant("gat_no_t", "GAT, no comments, AC", {"backbone": "gat", "use_comments": False}),
    Variant("sage_no_t", "GraphSAGE, no comments, AC", {"backbone": "sage", "use_comments": False}),
    Variant(
        "graphconv_no_t",
        "GraphConv, no comments, AC",
        {"backbone": "graphconv", "use_comments": False},
    ),
    Variant(
        "hmg_emo_no_t_ac_negatives",
        "HMG-Emo-{T, AC} + negative sampling",
        {**NO_T_AC, "extra_classes": 1},
        negative_sampling=True,
    ),
    Variant("comments_only", "Comments only", {"architecture": "comments_only"}),
    Variant(
        "comments_only_llava",
        "Comments only, LLaVA-augmented",
        {"architecture": "comments_only"},
        comments="llava",
    ),
    Variant(
        "comments_only_llava_leakfree",
        "Comments only, LLaVA-augmented, leak-free (val/test prompted without emotion)",
        {"architecture": "comments_only"},
        comments="llava_leakfree",
    ),
)
VARIANTS_BY_KEY = {variant.key: variant for variant in VARIANTS}


@dataclass(frozen=True)
class PaperTable:
    number: str
    title: str
    rows: tuple[tuple[str, str], ...]  # (row label as in the paper, variant key or reported)


PAPER_TABLES: tuple[PaperTable, ...] = (
    PaperTable(
        "II",
        "Table II. HMG-Emo against RMTHG, and its ablations",
        (
            ("RMTHG", "reported:RMTHG"),
            ("HMG-Emo", "hmg_emo"),
            ("HMG-Emo, transductive protocol", "hmg_emo_transductive"),
            ("HMG-Emo, beta = exp (Eq. 5 as written)", "hmg_emo_beta_exp"),
            ("HMG-Emo as written in the paper", "hmg_emo_as_written"),
            ("HMG-Emo-{AC}", "hmg_emo_no_ac"),
            ("HMG-Emo-{T, AC}", "hmg_emo_no_t_ac"),
        ),
    ),
    PaperTable(
        "III",
        "Table III. The comments-only classifier (HMG-Emo's MLP head on comment features)",
        (
            ("Original comments", "comments_only"),
            ("LLaVA-augmented comments", "comments_only_llava"),
            ("LLaVA-augmented comments, leak-free", "comments_only_llava_leakfree"),
        ),
    ),
    PaperTable(
        "IV",
        "Table IV. GNN backbones, without comment features, with the adaptive combination",
        (("GAT", "gat_no_t"), ("GraphSAGE", "sage_no_t"), ("GraphConv", "graphconv_no_t")),
    ),
    PaperTable(
        "V",
        "Table V. Negative sampling (HMG-Emo-{T, AC})",
        (
            ("Without negative sampling", "hmg_emo_no_t_ac"),
            ("With negative sampling", "hmg_emo_no_t_ac_negatives#nine_class"),
            (
                "With negative sampling, real edges only (emotion argmax)",
                "hmg_emo_no_t_ac_negatives",
            ),
        ),
    ),
)
