"""Encoders (bundled for real, paper's with tiny random models), the vector cache, Eq. 1, the
missing-comment fill and bad input, through the features assets."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from PIL import Image

from hmg_pipeline.core import encoders
from hmg_pipeline.core.features import VectorCache, embed_with_cache, user_context
from hmg_pipeline.definitions import defs
from hmg_pipeline.resources import EncoderResource

from .helpers import TinyDataset, jpeg_bytes, view

CPU = encoders.Device(torch.device("cpu"))
ROOT = Path(__file__).resolve().parents[1]
FEATURES = [
    "image_embeddings",
    "unreadable_images",
    "comment_embeddings",
    "group_embeddings",
    "user_context_embeddings",
]


@pytest.fixture(scope="module")
def bundled_image() -> encoders.ImageEncoder:
    return encoders.image_encoder(encoders.EncoderSettings("bundled"), CPU)


@pytest.fixture(scope="module")
def bundled_text() -> encoders.TextEncoder:
    return encoders.text_encoder(encoders.EncoderSettings("bundled"), CPU)


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised BertModel and its WordPiece tokenizer, saved like mBERT."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-bert")
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *"abcdefghijklmnopqrstuvwxyz",
        "wow",
        "sad",
        "##s",
        "!",
        ",",
        ".",
    ]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(directory / "vocab.txt")).save_pretrained(directory)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=40,
    )
    BertModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def random_resnet50_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from torchvision.models import resnet50

    path = tmp_path_factory.mktemp("resnet") / "resnet50-random.pth"
    torch.manual_seed(0)
    torch.save(resnet50(weights=None).state_dict(), path)
    return path


def write_images(directory: Path, colours: dict[str, tuple[int, int, int]]) -> list[Path]:
    paths = []
    for name, colour in colours.items():
        path = directory / f"{name}.jpg"
        path.write_bytes(jpeg_bytes(colour, size=48))
        paths.append(path)
    return paths


def test_bundled_image_encoder_is_real_and_deterministic(
    bundled_image: encoders.ImageEncoder,
) -> None:
    sample_images = sorted((ROOT / "data" / "sample" / "images").glob("*.jpg"))[:3]
    first, failures = encoders.encode_images(bundled_image, sample_images, 3, 0)
    second, _ = encoders.encode_images(bundled_image, sample_images, 1, 0)
    assert failures == {} and first.shape == (3, 1280)
    np.testing.assert_allclose(first, second, rtol=1e-4, atol=1e-5)  # batch size does not matter
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert np.linalg.norm(first[a] - first[b]) > 1e-2 * np.linalg.norm(first[a])
    assert bundled_image.identity.startswith("efficientnet-lite0/224/gap/decode-v")


def test_bundled_text_encoder_is_real_and_deterministic(bundled_text: encoders.TextEncoder) -> None:
    texts = ["this makes me so angry", "so peaceful and calm", "so peaceful and calm"]
    vectors = encoders.encode_texts(bundled_text, texts, batch_size=2)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(vectors[1], vectors[2], rtol=1e-5, atol=1e-6)
    assert not np.allclose(vectors[0], vectors[1])
    # A trained sentence model puts paraphrases closer than unrelated sentences.
    more = encoders.encode_texts(bundled_text, ["I am furious about this", "a quiet calm lake"], 2)
    cosine = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    assert cosine(vectors[0], more[0]) > cosine(vectors[0], more[1])


def test_paper_encoders_load_through_the_same_path(
    tiny_bert_dir: Path, random_resnet50_file: Path, tmp_path: Path
) -> None:
    settings = encoders.EncoderSettings(
        "paper", image_weights=str(random_resnet50_file), text_model=str(tiny_bert_dir)
    )
    image = encoders.image_encoder(settings, CPU)
    vectors, failures = encoders.encode_images(
        image, write_images(tmp_path, {"a": (1, 2, 3)}), 4, 0
    )
    assert image.dim == 2048 and vectors.shape == (1, 2048) and not failures
    text = encoders.text_encoder(settings, CPU)
    assert text.name == "bert-base-multilingual-cased" and text.dim == 32
    assert text.max_length == 40
    out = encoders.encode_texts(text, ["wow", "sad sad sad!"], 2)
    assert out.shape == (2, 32) and np.isfinite(out).all()


def test_missing_weights_fail_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(encoders.EncoderUnavailable, match=r"ResNet-50 .*does not exist"):
        encoders.image_encoder(
            encoders.EncoderSettings("paper", image_weights=str(tmp_path / "nope.pth")), CPU
        )
    with pytest.raises(encoders.EncoderUnavailable, match="HMG_TEXT_MODEL"):
        encoders.text_encoder(
            encoders.EncoderSettings("paper", text_model=str(tmp_path / "no-model")), CPU
        )
    with pytest.raises(ValueError, match="HMG_ENCODERS"):
        encoders.image_encoder(encoders.EncoderSettings("clip"), CPU)


def test_undecodable_images_are_reported_not_crashing(
    bundled_image: encoders.ImageEncoder, tmp_path: Path
) -> None:
    good = write_images(tmp_path, {"ok": (10, 200, 10)})[0]
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("not an image", encoding="utf-8")
    missing = tmp_path / "missing.jpg"
    vectors, failures = encoders.encode_images(
        bundled_image, [good, truncated, empty, text, missing], 8, 0
    )
    assert set(failures) == {1, 2, 3, 4}
    assert "cannot decode" in failures[1] and "0 bytes" in failures[2]
    assert "cannot decode" in failures[3] and "cannot read file" in failures[4]
    assert np.isfinite(vectors[0]).all() and np.isnan(vectors[1:]).all()


def png_16bit(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG written by hand (PIL cannot write 16-bit RGB): grey, grey+alpha, RGB, RGBA
    by the last axis (1, 2, 3, 4)."""
    height, width, channels = pixels.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16_bit_images_are_scaled_not_clipped(channels: int) -> None:
    ramp = np.linspace(0, 65535, 16 * 16).reshape(16, 16, 1).round().astype(np.uint16)
    pixels = np.repeat(ramp, channels, axis=2)
    if channels in (2, 4):
        pixels[..., -1] = 65535  # opaque alpha
    decoded = np.asarray(encoders.decode_image(png_16bit(pixels)))
    assert decoded.dtype == np.uint8 and decoded.shape == (16, 16, 3)
    expected = np.rint(ramp[..., 0] / 257).astype(int)
    assert np.abs(decoded[..., 0].astype(int) - expected).max() <= 1
    assert (decoded == 255).mean() < 0.05  # the old clipping made 99.6% white


def test_float_images_out_of_range_are_reported() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(buffer, format="TIFF")
    assert np.asarray(encoders.decode_image(buffer.getvalue()))[0, 0, 0] == 128
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 300.0, np.float32)).save(buffer, format="TIFF")
    with pytest.raises(encoders.ImageDecodeError, match=r"only \[0, 1\] is supported"):
        encoders.decode_image(buffer.getvalue())


def test_text_normalisation_and_truncation(bundled_text: encoders.TextEncoder) -> None:
    assert encoders.normalise_text("  \n\t ") is None
    assert encoders.normalise_text("a\u00a0 b\n") == "a b"
    assert encoders.normalise_text("bad \udcff byte") == "bad ? byte"
    long_text = "word " * 5000
    tokens = bundled_text.tokenizer(
        [long_text], truncation=True, max_length=bundled_text.max_length
    )
    assert len(tokens["input_ids"][0]) == bundled_text.max_length
    assert encoders.encode_texts(bundled_text, [long_text], 1).shape == (1, 384)


def test_uniform_fill_is_deterministic_per_edge() -> None:
    first = encoders.uniform_fill(["u1\x1fi1", "u2\x1fi1"], 16)
    again = encoders.uniform_fill(["u2\x1fi1", "u1\x1fi1"], 16)
    np.testing.assert_array_equal(first[0], again[1])
    assert not np.array_equal(first[0], first[1])
    assert first.min() >= 0.0 and first.max() < 1.0


def test_eq1_user_context_on_a_hand_made_example() -> None:
    groups = ["g1", "g2", "g3"]
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [4.0, 4.0]], dtype=np.float32)
    members = pl.DataFrame(
        {"user_id": ["a", "a", "a", "b", "x"], "group_id": ["g1", "g2", "g1", "g3", "g1"]}
    )
    context, counts = user_context(["a", "b", "c"], members, groups, vectors)
    np.testing.assert_allclose(context, [[0.5, 0.5], [4.0, 4.0], [0.0, 0.0]])
    assert counts.tolist() == [2, 1, 0]


def test_cache_reuses_and_separates_encoders(tmp_path: Path) -> None:
    calls: list[list[int]] = []

    def compute(indices: list[int]):
        calls.append(indices)
        return np.array([[float(i), 1.0] for i in indices], dtype=np.float32), {}

    with VectorCache(tmp_path / "cache.duckdb") as cache:
        first = embed_with_cache(cache, "enc-a", 2, ["h1", "h2", "h1"], compute)
        assert (first.computed, first.reused) == (2, 0) and calls == [[0, 1]]
        np.testing.assert_array_equal(first.vectors[2], first.vectors[0])
        second = embed_with_cache(cache, "enc-a", 2, ["h2", "h3"], compute)
        assert (second.computed, second.reused) == (1, 1) and calls[-1] == [1]
        other = embed_with_cache(cache, "enc-b", 2, ["h1"], compute)
        assert (other.computed, other.reused) == (1, 0)
        assert cache.count("enc-a") == 3 and cache.count("enc-b") == 1


def feature_views(first_comment: str) -> list[tuple[object, ...]]:
    """Views over good, broken and missing images; the first comment is the one tests edit."""
    return [
        view("u1", "i1", "awe", comment_text=first_comment),
        view("u2", "i1", "fear", comment_text="   "),
        view("u3", "i2", "sadness", comment_text="so sad " * 400),
        view("u1", "i2", "anger"),
        view("u2", "i3", "awe", comment_text="broken image"),
        view("u3", "i4", "awe"),
        view("u1", "i5", "awe"),
        view("u3", "i5", "fear"),
    ]


@pytest.fixture
def feature_data(tiny: TinyDataset) -> TinyDataset:
    (tiny.raw_dir / "img" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (tiny.raw_dir / "img" / "empty.jpg").write_bytes(b"")
    tiny.write_images(
        [
            ("i1", "u9", None, "img/a.jpg", None),
            ("i2", "u9", None, "img/b.jpg", None),
            ("i3", "u9", None, "img/bad.jpg", None),
            ("i4", "u9", None, "img/empty.jpg", None),
            ("i5", "u9", "https://example.org/5.jpg", None, None),  # no file, not downloaded
        ]
    )
    tiny.write_views(feature_views("wow, breathtaking"))
    return tiny


def metadata_of(result, node: str, output: str | None = None):
    materializations = result.asset_materializations_for_node(node)
    if output is not None:
        materializations = [m for m in materializations if m.asset_key.path[-1] == output]
    return materializations[0].metadata


def test_features_assets_cache_fill_and_quarantine(feature_data: TinyDataset) -> None:
    result = feature_data.materialize()
    images = feature_data.table("features.image_embeddings")
    assert sorted(images["image_id"]) == ["i1", "i2"]
    assert images.schema["vector"] == pl.Array(pl.Float32, 1280)
    unreadable = feature_data.table("features.unreadable_images").sort("image_id")
    assert unreadable["image_id"].to_list() == ["i3", "i4", "i5"]
    assert dict(unreadable.select("image_id", "edges").rows()) == {"i3": 1, "i4": 1, "i5": 2}
    reasons = dict(unreadable.select("image_id", "reason").rows())
    assert "cannot decode" in reasons["i3"] and "0 bytes" in reasons["i4"]
    assert "no local file" in reasons["i5"]
    assert (
        metadata_of(result, "image_embeddings", "image_embeddings")[
            "edges_dropped_image_unreadable"
        ].value
        == 4
    )

    comments = feature_data.table("features.comment_embeddings")
    assert comments.height == feature_data.table("labels.clean_labels").height == 8
    assert comments["has_comment"].sum() == 3  # whitespace-only text counts as missing
    filled = comments.filter(~pl.col("has_comment"))["vector"].to_numpy()
    assert (filled >= 0).all() and (filled < 1).all() and filled.std() > 0.1
    comment_meta = metadata_of(result, "comment_embeddings")
    assert comment_meta["computed"].value == 3 and comment_meta["reused_from_cache"].value == 0

    users = feature_data.table("features.user_context_embeddings")
    groups = feature_data.table("features.group_embeddings")
    g1 = groups.filter(pl.col("group_id") == "g1")["vector"].to_numpy()[0]
    u1 = users.filter(pl.col("user_id") == "u1").row(0, named=True)
    assert u1["n_groups"] == 1
    np.testing.assert_allclose(np.array(u1["vector"]), g1, rtol=1e-6)
    u3 = users.filter(pl.col("user_id") == "u3").row(0, named=True)
    assert u3["n_groups"] == 0 and not any(u3["vector"])

    # Second run: nothing new to embed; the uniform fill is the same.
    again = feature_data.materialize(FEATURES)
    assert metadata_of(again, "comment_embeddings")["computed"].value == 0
    assert metadata_of(again, "comment_embeddings")["reused_from_cache"].value == 3
    assert metadata_of(again, "image_embeddings", "image_embeddings")["computed"].value == 0
    assert metadata_of(again, "group_embeddings")["computed"].value == 0
    refilled = feature_data.table("features.comment_embeddings")
    np.testing.assert_array_equal(
        refilled.filter(~pl.col("has_comment"))["vector"].to_numpy(), filled
    )

    # One changed comment: exactly one text is embedded again.
    feature_data.write_views(feature_views("wow, breathtaking!!"))
    changed = feature_data.materialize(
        run_config={"ops": {"comment_embeddings": {"config": {"missing_comment_fill": "zeros"}}}}
    )
    assert metadata_of(changed, "comment_embeddings")["computed"].value == 1
    zeros = feature_data.table("features.comment_embeddings").filter(~pl.col("has_comment"))
    assert not zeros["vector"].to_numpy().any()


def test_paper_profile_runs_the_assets(
    feature_data: TinyDataset, tiny_bert_dir: Path, random_resnet50_file: Path
) -> None:
    from .helpers import materialize_on

    paper = EncoderResource(
        profile="paper", image_weights=str(random_resnet50_file), text_model=str(tiny_bert_dir)
    )
    result = materialize_on(feature_data.raw_dir, feature_data.store_dir, encoders=paper)
    assert (
        metadata_of(result, "comment_embeddings")["encoder"].value == "bert-base-multilingual-cased"
    )
    assert feature_data.table("features.image_embeddings").schema["vector"] == pl.Array(
        pl.Float32, 2048
    )
    assert feature_data.table("features.user_context_embeddings").schema["vector"] == pl.Array(
        pl.Float32, 32
    )


def test_embedding_assets_share_the_gpu_pool() -> None:
    job = defs.resolve_implicit_global_asset_job_def()
    pools = {node.name: node.pool for node in job.graph.node_defs}
    for name in ("image_embeddings", "comment_embeddings", "group_embeddings"):
        assert pools[name] == "gpu", name


def test_exif_orientation_is_applied_and_changes_the_cache_identity(
    bundled_image: encoders.ImageEncoder,
) -> None:
    """A phone photo stored sideways with orientation 6 ("rotate 90 clockwise") is decoded
    upright, as viewers show it; cached vectors of the old decoding are not reused."""
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))  # left half red: the top once upright
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    buffer = io.BytesIO()
    stored.save(buffer, format="PNG", exif=exif)
    decoded = encoders.decode_image(buffer.getvalue())
    assert decoded.size == (20, 40)
    top, bottom = decoded.getpixel((10, 5)), decoded.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 50 and bottom[2] > 200 and bottom[0] < 50
    assert encoders.DECODER_VERSION == "decode-v3"
    assert "/decode-v3@" in bundled_image.identity


def test_decode_reasons_are_stable_across_runs() -> None:
    """PIL names the BytesIO it read with its memory address; the stored reason must not."""
    with pytest.raises(encoders.ImageDecodeError) as first:
        encoders.decode_image(b"not an image")
    with pytest.raises(encoders.ImageDecodeError) as second:
        encoders.decode_image(b"not an image")
    assert str(first.value) == str(second.value)
    assert (
        str(first.value)
        == "cannot decode image: UnidentifiedImageError: cannot identify image file"
    )
