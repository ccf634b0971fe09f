"""Embedding throughput: images/s (JPEG decode of 500x375 images included) and texts/s.

CPU, bundled encoders (what the demo uses):
    python -m bench.embeddings --profile bundled --images 256 --texts 2000
GPU, the paper's encoders at their real sizes with random weights (no download needed):
    python -m bench.embeddings --profile paper --random-weights --device cuda \
        --images 8192 --texts 50000 --batch-images 256 --batch-texts 512

Reports the median of --repeats runs (after one warm-up batch).
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hmg_pipeline.core import encoders
from hmg_pipeline.core.sample import FILLERS, PHRASES


def write_jpegs(directory: Path, count: int, seed: int = 0) -> list[Path]:
    """Photo-like 500x375 JPEGs (smooth gradients plus noise), ~40-80 KB each."""
    rng = np.random.default_rng(seed)
    paths = []
    _yy, xx = np.mgrid[0:375, 0:500]
    for i in range(min(count, 64)):
        base = rng.uniform(0, 255, 3)
        image = (
            base
            + 60 * np.sin(xx / rng.uniform(20, 80))[..., None]
            + rng.normal(0, 25, (375, 500, 3))
        )
        buffer = io.BytesIO()
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        path = directory / f"{i}.jpg"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return [paths[i % len(paths)] for i in range(count)]


def comments(count: int, seed: int = 0) -> list[str]:
    """IESN-like comments: a phrase, often with filler, 5-40 words."""
    rng = np.random.default_rng(seed)
    phrases = [p for lang in PHRASES.values() for ps in lang.values() for p in ps]
    fillers = [f for fs in FILLERS.values() for f in fs]
    out = []
    for _ in range(count):
        parts = [rng.choice(phrases) for _ in range(rng.integers(1, 4))]
        parts += [rng.choice(fillers) for _ in range(rng.integers(0, 3))]
        out.append(", ".join(parts))
    return out


def random_paper_settings(directory: Path) -> encoders.EncoderSettings:
    """ResNet-50 and a bert-base-sized multilingual BERT with random weights, saved locally."""
    from torchvision.models import resnet50
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.save(resnet50(weights=None).state_dict(), directory / "resnet50.pth")
    text_dir = directory / "mbert-random"
    text_dir.mkdir()
    # mBERT's vocabulary is not available offline: a WordPiece vocab of the same size made of
    # characters and frequent-looking pieces keeps the embedding matrix at its real size.
    chars = sorted({c for text in comments(5000) for c in text})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]
    vocab += [f"##{c}" for c in chars]
    vocab += [f"w{i}" for i in range(119_547 - len(vocab))]
    (text_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(text_dir / "vocab.txt"), do_lower_case=False).save_pretrained(
        text_dir
    )
    BertModel(BertConfig(vocab_size=len(vocab))).save_pretrained(text_dir)
    return encoders.EncoderSettings(
        "paper", image_weights=str(directory / "resnet50.pth"), text_model=str(text_dir)
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", choices=encoders.PROFILES, default="bundled")
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--batch-images", type=int, default=64)
    parser.add_argument("--batch-texts", type=int, default=128)
    parser.add_argument("--workers", type=int, default=-1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    device = encoders.Device(torch.device(args.device), amp=args.device.startswith("cuda"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        settings = (
            random_paper_settings(tmp_path)
            if args.random_weights
            else encoders.EncoderSettings(args.profile)
        )
        image = encoders.image_encoder(settings, device)
        text = encoders.text_encoder(settings, device)
        paths = write_jpegs(tmp_path, args.images)
        texts = comments(args.texts)
        encoders.encode_images(image, paths[: args.batch_images], args.batch_images, args.workers)
        encoders.encode_texts(text, texts[: args.batch_texts], args.batch_texts)
        image_rates, text_rates = [], []
        for _ in range(args.repeats):
            if device.is_cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
            encoders.encode_images(image, paths, args.batch_images, args.workers)
            if device.is_cuda:
                torch.cuda.synchronize()
            image_rates.append(len(paths) / (time.perf_counter() - started))
            started = time.perf_counter()
            encoders.encode_texts(text, texts, args.batch_texts)
            if device.is_cuda:
                torch.cuda.synchronize()
            text_rates.append(len(texts) / (time.perf_counter() - started))
    tokens = text.tokenizer(texts[:1000])["input_ids"]
    print(
        f"profile={args.profile} random_weights={args.random_weights} device={args.device} "
        f"torch_threads={torch.get_num_threads()}"
    )
    print(
        f"image encoder {image.name} ({image.dim}-d), {len(paths)} JPEGs 500x375, "
        f"batch {args.batch_images}: median {statistics.median(image_rates):.1f} images/s "
        f"(runs: {', '.join(f'{r:.1f}' for r in image_rates)})"
    )
    print(
        f"text encoder {text.name} ({text.dim}-d), {len(texts)} comments, mean "
        f"{np.mean([len(t) for t in tokens]):.1f} tokens, batch {args.batch_texts}: median "
        f"{statistics.median(text_rates):.1f} texts/s "
        f"(runs: {', '.join(f'{r:.1f}' for r in text_rates)})"
    )
    if device.is_cuda:
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
