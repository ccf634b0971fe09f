"""The bundled-sample generator: deterministic, and its planted properties hold."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetSelection

from hmg_pipeline.core import sample
from hmg_pipeline.core.schema import MIKELS_EMOTIONS

from .helpers import materialize_on, read_store_table


def digest(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample")
    sample.generate(out, seed=7, scale="small")
    return out


@pytest.fixture(scope="module")
def cleaned(generated: Path, tmp_path_factory: pytest.TempPathFactory):
    store = tmp_path_factory.mktemp("store")
    result = materialize_on(generated, store, AssetSelection.groups("raw", "flickr", "labels"))
    return result, store


def test_same_seed_gives_identical_files(generated: Path, tmp_path: Path) -> None:
    sample.generate(tmp_path / "again", seed=7, scale="small")
    assert digest(generated) == digest(tmp_path / "again")
    sample.generate(tmp_path / "other", seed=8, scale="small")
    assert digest(generated)["views.csv"] != digest(tmp_path / "other")["views.csv"]


def test_small_scale_sizes(generated: Path) -> None:
    spec = sample.SCALES["small"]
    assert pl.read_csv(generated / "views.csv", infer_schema=False).height == spec.views
    assert pl.read_csv(generated / "contacts.csv", infer_schema=False).height == spec.contact_pairs
    assert pl.read_csv(generated / "users.csv").height == spec.users
    assert len(list((generated / "images").glob("*.jpg"))) == spec.images
    size = sum(p.stat().st_size for p in generated.rglob("*") if p.is_file())
    assert size < 20 * 2**20


def test_every_cleaning_rule_fires_on_the_sample(cleaned) -> None:
    result, store = cleaned
    quarantine = read_store_table(store, "raw.quarantine")
    assert set(quarantine["table"].unique()) >= {"images", "views", "contacts", "group_members"}
    reasons = " ".join(quarantine["reason"].to_list())
    for fragment in (
        "escapes",
        "absolute",
        "does not exist",
        "duplicate image_id",
        "unparseable time",
        "unparseable number",
        "is not one of",
        "missing required",
        "not in the images table",
        "image is quarantined",
    ):
        assert fragment in reasons, fragment
    drops = read_store_table(store, "labels.label_drops")
    assert set(drops["rule"].unique()) == {"unknown", "duplicate"}
    contacts = result.asset_materializations_for_node("clean_contacts")[0].metadata
    assert contacts["dropped_self_loops"].value > 0
    assert contacts["merged_duplicates_or_reversed"].value > 0
    assert all(e.passed for e in result.get_asset_check_evaluations())


def test_planted_coverage_imbalance_and_noise(cleaned, generated: Path) -> None:
    _, store = cleaned
    clean = read_store_table(store, "labels.clean_labels")
    coverage = clean["comment_text"].is_not_null().mean()
    assert 0.30 <= coverage <= 0.38
    shares = clean["emotion"].value_counts(normalize=True)
    assert set(shares["emotion"]) == set(MIKELS_EMOTIONS)
    assert shares["proportion"].max() >= 0.25
    assert shares["proportion"].min() <= 0.04
    raw = pl.read_csv(generated / "views.csv", infer_schema=False)
    noisy = raw["emotion"].str.to_lowercase().str.contains("unknown|\\|").mean()
    assert 0.07 <= noisy <= 0.13
    id_only = raw.filter(pl.col("comment_id").is_not_null() & pl.col("comment_text").is_null())
    assert id_only.height > 0.05 * raw.height


def test_comments_in_at_least_four_languages(cleaned) -> None:
    _, store = cleaned
    texts = read_store_table(store, "labels.clean_labels")["comment_text"].drop_nulls().to_list()
    found = {
        language
        for language, phrases in sample.PHRASES.items()
        for text in texts
        if any(p in text for ps in phrases.values() for p in ps)
    }
    assert len(found) >= 4


def test_labels_depend_on_image_user_and_groups(cleaned, generated: Path) -> None:
    """Each planted factor alone predicts labels better than the majority class."""
    _, store = cleaned
    clean = read_store_table(store, "labels.clean_labels")
    majority = clean["emotion"].value_counts(normalize=True)["proportion"].max()

    def accuracy_of_best_guess(key: str, frame: pl.DataFrame) -> float:
        # Leave-one-out: the most frequent label among the *other* edges of the same key.
        # Low-count keys are noisy, so only keys with at least 4 edges count.
        grouped = frame.group_by(key, "emotion").len()
        best = grouped.sort("len", descending=True).group_by(key).first()
        totals = frame.group_by(key).len().rename({"len": "n"})
        scored = frame.join(best.rename({"emotion": "guess"}), on=key).join(totals, on=key)
        scored = scored.filter(pl.col("n") >= 4)
        return (scored["emotion"] == scored["guess"]).mean()

    assert accuracy_of_best_guess("image_id", clean) > majority
    assert accuracy_of_best_guess("user_id", clean) > majority


def test_group_descriptions_name_their_theme(generated: Path) -> None:
    groups = pl.read_csv(generated / "groups.csv")
    described = groups.filter(pl.col("description").is_not_null())
    assert 0.7 * groups.height <= described.height < groups.height
    assert described["description"].str.contains("|".join(MIKELS_EMOTIONS)).all()
