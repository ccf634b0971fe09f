"""Dagster resources: where data lives, which device computes, and the services used.

The only module that reads the environment: every setting is parsed here, once, by
:data:`SETTINGS` (name, default, allowed values). A bad value raises :class:`SettingError`
naming the variable and what is allowed; :func:`resource_from_env` turns that into a resource
that fails when a step initialises it, so the code location still loads and only the assets
that use the setting fail.
"""

from __future__ import annotations

import errno
import math
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

from dagster import ConfigurableResource, ResourceDefinition
from pydantic import Field

from hmg_pipeline.core.flickr import DEFAULT_API_URL as DEFAULT_FLICKR_URL
from hmg_pipeline.core.flickr import FlickrSettings
from hmg_pipeline.core.llava import (
    DEFAULT_CONCURRENCY,
    DEFAULT_OLLAMA_URL,
    DEFAULT_OPENAI_URL,
    PAPER_LLAVA_MODEL,
    TINY_RANDOM,
)

if TYPE_CHECKING:
    import torch
    from upath import UPath

    from hmg_pipeline.core.encoders import Device, EncoderSettings, ImageEncoder, TextEncoder
    from hmg_pipeline.core.llava import CommentGenerator, StreamingGenerator

DEFAULT_RAW_DIR = "data/sample"
DEFAULT_STORE_DIR = "data/store"
DEFAULT_RECHECK_CRON = "0 3 * * 0"  # Sundays 03:00
MAX_FLICKR_QPS = 1000.0  # far above Flickr's 1/s (local test servers go higher); guards typos


class SettingError(ValueError):
    """An environment setting whose value is outside its allowed range."""


class SettingUnusable(ValueError):
    """A setting's value of an allowed form that cannot be used here; the message says why
    (raised by a parser, turned into a :class:`SettingError` naming the variable)."""


def _number(low: float, high: float, low_open: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        above_low = value > low if low_open else value >= low
        if not (math.isfinite(value) and above_low and value <= high):
            raise ValueError(text)
        return value

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.lower()
        if value not in options:
            raise ValueError(text)
        return value

    return parse


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(text)
        return value

    return parse


def _flag(text: str) -> bool:
    value = text.lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(text)


def _http_url(text: str) -> str:
    parsed = urlparse(text)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise ValueError(text)
    return text


def _device(text: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text.lower()):
        raise ValueError(text)
    return text.lower()


def _cron(text: str) -> str:
    from dagster._utils.schedules import is_valid_cron_string

    if not is_valid_cron_string(text):
        raise ValueError(text)
    return text


def _text(text: str) -> str:
    return text


def _artifacts_url(text: str) -> str:
    """Empty (the store), a local directory, or a URL whose protocol fsspec knows and whose
    file system is installed (``s3://`` needs s3fs: the ``s3`` extra)."""
    from hmg_pipeline.core.locations import url_protocol

    protocol = url_protocol(text)
    if protocol is None:
        if "::" in text:  # fsspec's chained URLs (simplecache::s3://...) are not supported
            raise ValueError(text)
        return text
    import fsspec
    from fsspec.registry import known_implementations

    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError:
        package = known_implementations.get(protocol, {}).get("class", "").split(".")[0]
        install = f"pip install {package}"
        if package == "s3fs":
            install = "pip install 'hmg_pipeline[s3]'"
        raise SettingUnusable(
            f"the {protocol}:// file system needs the package {package or '(unknown)'}, which is "
            f"not installed: {install}"
        ) from None
    except ValueError:  # "Protocol not known"
        raise ValueError(text) from None
    return text


@dataclass(frozen=True)
class Setting:
    """One environment variable: its default (used when unset or blank), what is allowed (for
    the error message) and the parser that enforces it."""

    name: str
    default: str
    allowed: str
    parse: Callable[[str], Any]


SETTINGS: dict[str, Setting] = {
    setting.name: setting
    for setting in (
        Setting("HMG_RAW_DIR", DEFAULT_RAW_DIR, "a directory path", _text),
        Setting("HMG_STORE_DIR", DEFAULT_STORE_DIR, "a directory path", _text),
        Setting(
            "HMG_ARTIFACTS_URL",
            "",
            "empty (the store directory), a directory path, or an fsspec URL such as "
            "s3://bucket/prefix, gs://bucket/prefix or memory://prefix",
            _artifacts_url,
        ),
        Setting("HMG_DEVICE", "auto", "auto, cpu, cuda or cuda:N", _device),
        Setting("HMG_AMP", "1", "1/0, true/false, yes/no or on/off", _flag),
        Setting("HMG_ENCODERS", "bundled", "bundled or paper", _choice("bundled", "paper")),
        Setting("HMG_IMAGE_WEIGHTS", "", "a state-dict file path (empty: default)", _text),
        Setting("HMG_TEXT_MODEL", "", "a model id or directory (empty: default)", _text),
        Setting("FLICKR_API_URL", DEFAULT_FLICKR_URL, "an http(s) URL", _http_url),
        Setting(
            "FLICKR_MAX_QPS",
            "1.0",
            f"a number > 0 and <= {MAX_FLICKR_QPS:g} (requests per second)",
            _number(0.0, MAX_FLICKR_QPS, low_open=True),
        ),
        Setting(
            "HMG_FLICKR_RECHECK_DAYS",
            "30",
            "a number of days >= 0 and <= 3650",
            _number(0.0, 3650.0, low_open=False),
        ),
        Setting(
            "HMG_FLICKR_RECHECK_CRON",
            DEFAULT_RECHECK_CRON,
            "a cron string, e.g. '0 3 * * 0'",
            _cron,
        ),
        Setting(
            "HMG_LLAVA_BACKEND",
            "transformers",
            "transformers, ollama, openai or none",
            _choice("transformers", "ollama", "openai", "none"),
        ),
        Setting("HMG_LLAVA_MODEL", "", "a model id, directory or served model name", _text),
        Setting("HMG_OLLAMA_URL", DEFAULT_OLLAMA_URL, "an http(s) URL", _http_url),
        Setting(
            "HMG_LLAVA_BASE_URL",
            DEFAULT_OPENAI_URL,
            "an http(s) URL, the OpenAI API root (e.g. http://vllm:8000/v1)",
            _http_url,
        ),
        Setting(
            "HMG_LLAVA_CONCURRENCY",
            str(DEFAULT_CONCURRENCY),
            "a whole number of requests in flight, 1 to 1024",
            _integer(1, 1024),
        ),
        Setting(
            "HMG_EXECUTOR",
            "multiprocess",
            "multiprocess, in_process or k8s",
            _choice("multiprocess", "in_process", "k8s"),
        ),
    )
}


def env_setting(name: str) -> Any:
    """The parsed value of environment setting ``name`` (its default when unset or blank)."""
    return parse_setting(name, os.environ.get(name, ""))


def parse_setting(name: str, raw: str) -> Any:
    """``raw`` parsed as setting ``name`` (its default when blank); :class:`SettingError`
    naming the variable when it is bad. A URL's credentials never enter the message."""
    from hmg_pipeline.core.locations import redact_url

    setting = SETTINGS[name]
    text = raw.strip() or setting.default
    try:
        return setting.parse(text)
    except SettingUnusable as error:
        raise SettingError(f"{name}={redact_url(raw)!r} cannot be used: {error}") from None
    except (ValueError, TypeError):
        raise SettingError(
            f"{name}={redact_url(raw)!r} is not allowed: use {setting.allowed}"
        ) from None


def resource_from_env(
    build: Callable[[], ConfigurableResource],
) -> ConfigurableResource | ResourceDefinition:
    """``build()``, or, when a setting is bad, a resource whose initialisation raises the
    setting's error: the code location loads, and only the steps that use it fail."""
    try:
        return build()
    except SettingError as error:
        return failing_resource(str(error))


Definition = TypeVar("Definition", bound=ResourceDefinition)


def failing_resource(message: str, kind: type[Definition] = ResourceDefinition) -> Definition:
    """A resource (or, with ``kind``, an IO manager) whose initialisation raises ``message``, a
    bad setting's error: the code location loads, and only the steps that use it fail."""

    def fail(_context: object) -> None:
        raise SettingError(message)

    return kind(resource_fn=fail, description=f"invalid setting: {message}")


class PipelinePaths(ConfigurableResource):
    """The raw input directory (``HMG_RAW_DIR``) and the store (``HMG_STORE_DIR``), and the
    whole layout of the store: every file or directory the pipeline writes is named here.

    Relative paths are resolved against the working directory of the Dagster process. Nothing
    is checked or created when the definitions load (the code location loads whatever the
    settings say); a step that uses a directory checks it, and creates the store, then, and a
    bad one fails that step with one line naming the setting (:class:`SettingError`).
    """

    raw_dir: str = Field(default=DEFAULT_RAW_DIR, description="directory of the raw tables")
    store_dir: str = Field(default=DEFAULT_STORE_DIR, description="DuckDB file and artifacts")
    artifacts_url: str = Field(
        default="",
        description="artifacts and reports: empty (the store), a directory or an fsspec URL "
        "(s3://bucket/prefix); DuckDB and its caches stay in the store",
    )

    @classmethod
    def from_env(cls) -> PipelinePaths:
        # HMG_ARTIFACTS_URL is checked where it is used (artifacts_root), so a bad one fails
        # the steps that write or read artifacts and reports, not the code location's load.
        return cls(
            raw_dir=env_setting("HMG_RAW_DIR"),
            store_dir=env_setting("HMG_STORE_DIR"),
            artifacts_url=os.environ.get("HMG_ARTIFACTS_URL", "").strip(),
        )

    @property
    def raw_path(self) -> Path:
        """The raw directory, which must exist; where the raw tables are read."""
        path = Path(self.raw_dir).resolve()
        if not path.is_dir():
            state = "is not a directory" if path.exists() else "does not exist"
            where = "" if str(path) == self.raw_dir else f" (resolved: {path})"
            raise SettingError(f"HMG_RAW_DIR={self.raw_dir!r} {state}{where}")
        return path

    @property
    def store_path(self) -> Path:
        """The store directory, created on first use."""
        return self.create_store(self.store_dir)

    @staticmethod
    def create_store(store_dir: str) -> Path:
        """Create the store directory ``store_dir`` if needed and check that it takes files;
        SettingError naming HMG_STORE_DIR when it cannot (a file is in the way, a read-only or
        virtual file system such as /proc, no permission)."""
        path = Path(store_dir).resolve()
        try:
            if path.exists() and not path.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "a file, not a directory", str(path))
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            reason = error.strerror or type(error).__name__
            if error.filename:
                reason += f": {error.filename}"
            raise SettingError(
                f"HMG_STORE_DIR={store_dir!r} is not a writable directory ({reason})"
            ) from None
        try:
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as error:  # the probe's random name would only confuse
            reason = error.strerror or type(error).__name__
            raise SettingError(
                f"HMG_STORE_DIR={store_dir!r} is not a writable directory "
                f"(cannot create a file in {path}: {reason})"
            ) from None
        return path

    @property
    def duckdb_file(self) -> Path:
        """The tables of every tabular asset, one DuckDB schema per asset group."""
        return Path(self.store_dir).resolve() / "hmg.duckdb"

    @property
    def artifacts_root(self) -> str:
        """Where artifacts and reports go: ``HMG_ARTIFACTS_URL`` (an fsspec URL as given, or a
        local directory, resolved), else the store directory. SettingError naming
        HMG_ARTIFACTS_URL when it is bad."""
        from hmg_pipeline.core.locations import url_protocol

        url = parse_setting("HMG_ARTIFACTS_URL", self.artifacts_url)
        if url and url_protocol(url) is not None:
            return url.rstrip("/")
        return str(Path(url or self.store_dir).resolve())

    def location(self, *parts: str) -> UPath:
        """``<artifacts root>/<parts>``: a local ``PosixUPath`` (a ``pathlib.Path``) or an
        object-store path."""
        from hmg_pipeline.core.locations import as_location

        return as_location("/".join([self.artifacts_root, *parts]))

    @property
    def artifacts_dir(self) -> UPath:
        """Torch artifacts: ``hetero_graph.pt``, ``trained_model.pt``."""
        return self.location("artifacts")

    def artifact(self, asset: str) -> UPath:
        return self.location("artifacts", f"{asset}.pt")

    @property
    def reports_dir(self) -> UPath:
        """Plots and markdown tables for people (metrics, paper tables), beside the artifacts;
        a local directory is created on first use (an object store needs none)."""
        from hmg_pipeline.core.locations import is_local

        path = self.location("reports")
        if not self.artifacts_url.strip():
            self.store_path  # noqa: B018 (creates and checks the store: HMG_STORE_DIR errors)
        if is_local(path):
            path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def embedding_cache(self) -> Path:
        return self.store_path / "embedding_cache.duckdb"

    @property
    def llava_cache(self) -> Path:
        return self.store_path / "llava_cache.duckdb"

    @property
    def flickr_state(self) -> Path:
        """Per-item Flickr results and the fetch log (resumable)."""
        return self.store_path / "flickr.duckdb"

    @property
    def images_dir(self) -> Path:
        """Images downloaded from Flickr (``download_images``)."""
        return self.store_path / "images"

    @property
    def models_dir(self) -> Path:
        """Models the pipeline builds itself (the tiny random LLaVA)."""
        return self.store_path / "models"

    def relative(self, path: Path | UPath) -> str:
        """``path`` relative to the store (for metadata that must not leak a machine's layout);
        a path elsewhere as it is, an object store's as its URL without credentials."""
        from hmg_pipeline.core.locations import is_local, shown

        if is_local(path):
            try:
                return str(Path(path).relative_to(self.store_path))
            except ValueError:  # HMG_ARTIFACTS_URL: a directory outside the store
                pass
        return shown(path)


class ComputeResource(ConfigurableResource):
    """Chooses the torch device (``HMG_DEVICE``: auto, cpu, cuda, cuda:N) and mixed precision.

    ``auto`` picks CUDA when a GPU is visible. AMP (bf16 autocast) only ever applies on CUDA.
    """

    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    amp: bool = Field(default=True, description="bf16 autocast on CUDA")

    @classmethod
    def from_env(cls) -> ComputeResource:
        return cls(device=env_setting("HMG_DEVICE"), amp=env_setting("HMG_AMP"))

    def torch_device(self) -> torch.device:
        """The device to compute on; a clear error when CUDA is asked for but absent."""
        import torch  # imported here: every Dagster step process loads this module

        requested = self.device.strip().lower()
        if requested == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(requested)
        except RuntimeError as error:
            raise ValueError(
                f"HMG_DEVICE={self.device!r} is not a device; use auto, cpu, cuda or cuda:N"
            ) from error
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError(
                    f"HMG_DEVICE={self.device!r} but no CUDA GPU is visible; use cpu or auto"
                )
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise RuntimeError(
                    f"HMG_DEVICE={self.device!r} but only {torch.cuda.device_count()} GPU(s)"
                )
        elif device.type != "cpu":
            raise ValueError(f"HMG_DEVICE={self.device!r}: only cpu and cuda are supported")
        return device

    @property
    def amp_enabled(self) -> bool:
        return self.amp and self.torch_device().type == "cuda"


class FlickrResource(ConfigurableResource):
    """Flickr API settings. The key is read from the environment variable named by
    ``api_key_env`` at run time, so it never enters Dagster config, logs or metadata."""

    api_url: str = Field(default=DEFAULT_FLICKR_URL, description="REST endpoint")
    max_qps: float = Field(
        default=1.0,
        gt=0,
        le=MAX_FLICKR_QPS,
        allow_inf_nan=False,
        description="request-rate ceiling for the whole run",
    )
    max_attempts: int = Field(default=5, description="attempts per request (transient errors)")
    timeout_s: float = Field(default=10.0, description="per-request timeout")
    backoff_base_s: float = Field(default=1.0, description="first retry waits up to this")
    backoff_max_s: float = Field(default=60.0, description="longest backoff between retries")
    workers: int = Field(default=4, description="threads; they share the rate ceiling")
    api_key_env: str = Field(default="FLICKR_API_KEY", description="env var holding the key")
    recheck_after_days: float = Field(
        default=30.0,
        ge=0,
        le=3650,
        allow_inf_nan=False,
        description="the scheduled re-check asks about items older than this",
    )

    @classmethod
    def from_env(cls) -> FlickrResource:
        return cls(
            api_url=env_setting("FLICKR_API_URL"),
            max_qps=env_setting("FLICKR_MAX_QPS"),
            recheck_after_days=env_setting("HMG_FLICKR_RECHECK_DAYS"),
        )

    def settings(self) -> FlickrSettings | None:
        """Client settings, or None when no key is set (the Flickr assets then do nothing)."""
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            return None
        return FlickrSettings(
            api_key=key,
            api_url=self.api_url,
            max_qps=self.max_qps,
            max_attempts=self.max_attempts,
            timeout_s=self.timeout_s,
            backoff_base_s=self.backoff_base_s,
            backoff_max_s=self.backoff_max_s,
        )


def flickr_recheck_cron() -> str:
    """``HMG_FLICKR_RECHECK_CRON``: when the weekly re-check of dead Flickr items fires. A bad
    value gives the default here, so the code location loads; the schedule's ticks then fail
    with the setting's error (they call ``env_setting`` again)."""
    try:
        return env_setting("HMG_FLICKR_RECHECK_CRON")
    except SettingError:
        return DEFAULT_RECHECK_CRON


class EncoderResource(ConfigurableResource):
    """Which encoders embed images and texts (``HMG_ENCODERS``: bundled or paper) and where
    their weights come from (``HMG_IMAGE_WEIGHTS``, ``HMG_TEXT_MODEL``; empty = default)."""

    profile: str = Field(default="bundled", description="bundled (offline) or paper")
    image_weights: str = Field(default="", description="image state-dict file (optional)")
    text_model: str = Field(default="", description="text model id or directory (optional)")
    batch_size_images: int = Field(default=64)
    batch_size_texts: int = Field(default=128)
    loader_workers: int = Field(default=-1, description="-1: 0 on CPU, min(8, cores) on CUDA")

    @classmethod
    def from_env(cls) -> EncoderResource:
        return cls(
            profile=env_setting("HMG_ENCODERS"),
            image_weights=env_setting("HMG_IMAGE_WEIGHTS"),
            text_model=env_setting("HMG_TEXT_MODEL"),
        )

    def settings(self) -> EncoderSettings:
        from hmg_pipeline.core.encoders import EncoderSettings  # torch loads only when needed

        return EncoderSettings(
            profile=self.profile,
            image_weights=self.image_weights,
            text_model=self.text_model,
            batch_size_images=self.batch_size_images,
            batch_size_texts=self.batch_size_texts,
            loader_workers=self.loader_workers,
        )

    @staticmethod
    def device(compute: ComputeResource) -> Device:
        from hmg_pipeline.core.encoders import Device

        return Device(compute.torch_device(), amp=compute.amp_enabled)

    def image_encoder(self, compute: ComputeResource) -> ImageEncoder:
        """The configured image encoder, loaded on the compute resource's device."""
        from hmg_pipeline.core.encoders import image_encoder

        return image_encoder(self.settings(), self.device(compute))

    def text_encoder(self, compute: ComputeResource) -> TextEncoder:
        """The configured text encoder, loaded on the compute resource's device."""
        from hmg_pipeline.core.encoders import text_encoder

        return text_encoder(self.settings(), self.device(compute))


class LlavaResource(ConfigurableResource):
    """Which vision-language model writes the augmented comments (``llava_comments``).

    ``HMG_LLAVA_BACKEND``: transformers (default), ollama, openai, or none (no generation: Table
    III's augmented row is then reported as not run). ``HMG_LLAVA_MODEL``: for transformers a
    Hugging Face id or local directory (default the paper's LLaVA 1.5 7B; the special value
    ``tiny-random`` is a tiny random model, an offline plumbing check), for Ollama the served
    model name (default ``llava``), for openai the served model (default the paper's, as
    ``vllm serve llava-hf/llava-1.5-7b-hf`` names it). ``HMG_OLLAMA_URL``: the Ollama server;
    ``HMG_LLAVA_BASE_URL``: the OpenAI-compatible API root; ``HMG_LLAVA_CONCURRENCY``: requests
    in flight; the API key is read from ``HMG_LLAVA_API_KEY`` when the backend is built, so it
    never enters Dagster config, logs or metadata."""

    backend: str = Field(default="transformers", description="transformers, ollama, openai, none")
    model: str = Field(default="", description="model id, directory or served model name")
    ollama_url: str = Field(default=DEFAULT_OLLAMA_URL, description="Ollama-compatible server")
    base_url: str = Field(default=DEFAULT_OPENAI_URL, description="OpenAI-compatible API root")
    concurrency: int = Field(
        default=DEFAULT_CONCURRENCY, ge=1, le=1024, description="openai: requests in flight"
    )
    api_key_env: str = Field(
        default="HMG_LLAVA_API_KEY", description="openai: env var holding the API key, if any"
    )
    timeout_s: float = Field(default=120.0, gt=0, description="openai: per-request timeout")
    attempts: int = Field(default=5, ge=1, description="openai: attempts per request")
    backoff_s: float = Field(default=1.0, ge=0, description="openai: first retry waits up to this")
    max_new_tokens: int = Field(default=60, description="longest comment, in tokens")
    batch_size: int = Field(
        default=0,
        ge=0,
        description="images per generate call (transformers), or generations per cache write "
        "(openai); 0: 8, 128 for tiny-random (whose per-call overhead dwarfs its compute), or "
        "max(64, concurrency) for openai",
    )
    seed: int = Field(default=0, description="seed of the synonym drawn for each edge")

    @classmethod
    def from_env(cls) -> LlavaResource:
        return cls(
            backend=env_setting("HMG_LLAVA_BACKEND"),
            model=env_setting("HMG_LLAVA_MODEL"),
            ollama_url=env_setting("HMG_OLLAMA_URL"),
            base_url=env_setting("HMG_LLAVA_BASE_URL"),
            concurrency=env_setting("HMG_LLAVA_CONCURRENCY"),
        )

    def generate_batch_size(self) -> int:
        """Images per generate call (or, for openai, generations per cache write): the setting,
        else 8 (a 7B model's batch on one GPU), 128 for the tiny random model (on 2 cores, 8
        per call gave 18 generations/s), or max(64, concurrency) for openai."""
        if self.batch_size:
            return self.batch_size
        if self.backend == "openai":
            return max(64, self.concurrency)
        return 128 if self.model_name() == TINY_RANDOM else 8

    def model_name(self) -> str:
        if self.model.strip():
            return self.model.strip()
        return "llava" if self.backend == "ollama" else PAPER_LLAVA_MODEL

    def describe(self) -> str:
        """The backend, model and (for servers) where, for the logs; never the API key."""
        from hmg_pipeline.core.locations import redact_url

        where = {
            "ollama": f" at {redact_url(self.ollama_url)}",
            "openai": f" at {redact_url(self.base_url)}",
        }
        text = f"{self.backend}/{self.model_name()}{where.get(self.backend, '')}"
        if self.backend == "openai":
            text += f", {self.concurrency} request(s) in flight"
        return text

    def identity(self, device: str) -> tuple[str, str]:
        """(backend, model and the settings that change its output): the generation cache key's
        first half. Greedy text also depends on the dtype, which follows the device. A served
        model's text does not depend on which server answers, so replicas share the cache."""
        settings = f"max_new_tokens={self.max_new_tokens}"
        if self.backend == "transformers":
            settings += ",fp16" if device.startswith("cuda") else ",fp32"
        return self.backend, f"{self.model_name()}|{settings}"

    def generator(self, models_dir: Path, device: str) -> CommentGenerator | StreamingGenerator:
        """The configured backend, ready to generate (a clear error when it is not)."""
        from hmg_pipeline.core.llava import (
            OllamaLlava,
            OpenAILlava,
            TransformersLlava,
            resolve_llava_model,
        )

        if self.backend == "openai":
            return OpenAILlava(
                self.base_url,
                self.model_name(),
                api_key=os.environ.get(self.api_key_env, "").strip() or None,
                concurrency=self.concurrency,
                max_new_tokens=self.max_new_tokens,
                timeout_s=self.timeout_s,
                attempts=self.attempts,
                backoff_s=self.backoff_s,
            )
        if self.backend == "ollama":
            return OllamaLlava(self.ollama_url, self.model_name(), self.max_new_tokens)
        if self.backend == "transformers":
            path = resolve_llava_model(self.model_name(), models_dir)
            return TransformersLlava(path, device, self.max_new_tokens, label=self.model_name())
        raise ValueError(
            f"HMG_LLAVA_BACKEND={self.backend!r}: use transformers, ollama or openai "
            "(none: no comments)"
        )
