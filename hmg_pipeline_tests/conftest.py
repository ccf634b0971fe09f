"""Fixtures shared by the tests (the helpers they use live in ``helpers.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import TinyDataset, jpeg_bytes, view, write_csv


@pytest.fixture
def tiny(tmp_path: Path) -> TinyDataset:
    """Three users, three images (two with files, one without), four contact rows, two groups."""
    raw = tmp_path / "raw"
    (raw / "img").mkdir(parents=True)
    (raw / "img" / "a.jpg").write_bytes(jpeg_bytes((200, 30, 30)))
    (raw / "img" / "b.jpg").write_bytes(jpeg_bytes((30, 30, 200)))
    dataset = TinyDataset(raw_dir=raw, store_dir=tmp_path / "store")
    dataset.write_images(
        [
            ("i1", "u9", "https://example.org/1.jpg", "img/a.jpg", "2014-01-01T00:00:00Z"),
            ("i2", "u9", None, "img/b.jpg", "1400000000"),
            ("i3", "u9", "https://example.org/3.jpg", None, None),
        ]
    )
    dataset.write_views(
        [
            view("u1", "i1", "awe", comment_id="c1", comment_text="wow", commented_at="1400000000"),
            view("u2", "i1", "fear", commented_at="2014-05-13T16:53:20+02:00", valence="2.5"),
            view("u2", "i2", "sadness"),
            view("u3", "i3", "Amusement "),
        ]
    )
    dataset.write_contacts([("u1", "u2"), ("u2", "u3")])
    write_csv(
        raw / "groups.csv",
        ("group_id", "name", "description"),
        [("g1", "Night skies", "stars"), ("g2", "Rain", None)],
    )
    write_csv(raw / "group_members.csv", ("group_id", "user_id"), [("g1", "u1"), ("g2", "u4")])
    return dataset
