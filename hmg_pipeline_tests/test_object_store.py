"""Artifacts and reports through a path that can be an object store (``HMG_ARTIFACTS_URL``),
tested with fsspec's in-memory file system (``memory://``): the torch artifact IO manager, the
reports, the setting's parsing, credentials kept out of messages and metadata, and a real
pipeline run whose graph, model and report go to ``memory://`` while DuckDB stays local."""

from __future__ import annotations

import importlib.util
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import fsspec
import numpy as np
import polars as pl
import pytest
import torch
from dagster import (
    AssetKey,
    IOManagerDefinition,
    asset,
    build_input_context,
    build_output_context,
    materialize,
)

from hmg_pipeline.core.locations import as_location, is_local, redact_url
from hmg_pipeline.core.plots import confusion_matrix_plot, training_curves
from hmg_pipeline.model.reports import EvaluationReport
from hmg_pipeline.resources import PipelinePaths, SettingError, env_setting
from hmg_pipeline.storage import MissingUpstream, TorchArtifactIOManager, artifact_io_manager

from .helpers import TinyDataset, view

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def memory() -> Iterator[fsspec.AbstractFileSystem]:
    """fsspec's in-memory file system (one store per process), emptied after the test."""
    fs = fsspec.filesystem("memory")
    yield fs
    fs.store.clear()
    fs.pseudo_dirs[:] = [""]


@pytest.fixture
def root(memory: fsspec.AbstractFileSystem) -> str:
    """A fresh ``memory://`` prefix for this test."""
    return f"memory://hmg-test-{uuid.uuid4().hex[:12]}/prefix"


def files_under(memory: fsspec.AbstractFileSystem, root: str) -> set[str]:
    prefix = root.removeprefix("memory://")
    return {key.removeprefix(f"/{prefix}/") for key in memory.store if key.startswith(f"/{prefix}")}


# --- the setting ---------------------------------------------------------------------------


def test_unset_artifacts_url_keeps_todays_layout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HMG_ARTIFACTS_URL", raising=False)
    monkeypatch.setenv("HMG_STORE_DIR", str(tmp_path / "store"))
    assert env_setting("HMG_ARTIFACTS_URL") == ""
    paths = PipelinePaths.from_env()
    assert paths.artifact("hetero_graph") == tmp_path / "store" / "artifacts" / "hetero_graph.pt"
    assert is_local(paths.artifacts_dir) and isinstance(paths.artifacts_dir, Path)
    assert paths.reports_dir == tmp_path / "store" / "reports" and paths.reports_dir.is_dir()
    assert paths.relative(paths.reports_dir / "evaluation.md") == "reports/evaluation.md"
    manager = artifact_io_manager(paths)
    assert isinstance(manager, TorchArtifactIOManager)
    assert manager.base_dir == str(tmp_path / "store" / "artifacts")
    assert manager.store_dir == str(tmp_path / "store")


def test_a_memory_url_puts_artifacts_and_reports_there(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, root: str
) -> None:
    monkeypatch.setenv("HMG_ARTIFACTS_URL", root)
    monkeypatch.setenv("HMG_STORE_DIR", str(tmp_path / "store"))
    assert env_setting("HMG_ARTIFACTS_URL") == root
    paths = PipelinePaths.from_env()
    assert str(paths.artifact("trained_model")) == f"{root}/artifacts/trained_model.pt"
    assert not is_local(paths.artifacts_dir) and str(paths.reports_dir) == f"{root}/reports"
    assert paths.relative(paths.reports_dir / "evaluation.md") == f"{root}/reports/evaluation.md"
    assert paths.duckdb_file == tmp_path / "store" / "hmg.duckdb"  # DuckDB stays local
    assert not (tmp_path / "store").exists()  # nothing created for the artifacts or reports


def test_a_local_artifacts_directory_outside_the_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    paths = PipelinePaths(store_dir="store", artifacts_url="shared/hmg")
    assert paths.artifact("x") == tmp_path / "shared" / "hmg" / "artifacts" / "x.pt"
    assert paths.reports_dir.is_dir() and paths.reports_dir == tmp_path / "shared/hmg/reports"
    assert paths.relative(paths.reports_dir / "a.md") == str(tmp_path / "shared/hmg/reports/a.md")


def artifacts_url_error(monkeypatch: pytest.MonkeyPatch, value: str) -> str:
    """The one-line message of the SettingError that HMG_ARTIFACTS_URL=``value`` raises."""
    monkeypatch.setenv("HMG_ARTIFACTS_URL", value)
    with pytest.raises(SettingError) as error:
        env_setting("HMG_ARTIFACTS_URL")
    return str(error.value)


def test_an_unknown_protocol_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    message = artifacts_url_error(monkeypatch, "nosuchproto://x")
    assert message.startswith("HMG_ARTIFACTS_URL='nosuchproto://x' is not allowed: use ")
    assert "s3://bucket/prefix" in message and "\n" not in message


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed")
def test_s3_without_s3fs_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    message = artifacts_url_error(monkeypatch, "s3://bucket/prefix")
    assert message.startswith("HMG_ARTIFACTS_URL='s3://bucket/prefix' cannot be used")
    assert "s3fs" in message and "pip install 'hmg_pipeline[s3]'" in message


def test_a_bad_url_fails_only_the_steps_that_use_artifacts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HMG_ARTIFACTS_URL", "nosuchproto://user:secret@x/p")
    paths = PipelinePaths.from_env()  # what the code location does at load: no error
    manager = artifact_io_manager(paths)
    assert isinstance(manager, IOManagerDefinition)
    assert "secret" not in (manager.description or "")

    @asset(io_manager_key="artifact_io_manager")
    def artifact() -> dict:
        return {"a": 1}

    @asset
    def elsewhere() -> None:
        pass

    resources = {"artifact_io_manager": manager}
    assert materialize([artifact, elsewhere], selection=["elsewhere"], resources=resources).success
    result = materialize(
        [artifact, elsewhere], selection=["artifact"], resources=resources, raise_on_error=False
    )
    assert not result.success and not result.get_asset_materialization_events()
    errors = [
        event.event_specific_data.error.to_string()
        for event in result.all_events
        if getattr(event.event_specific_data, "error", None) is not None
    ]
    expected = "SettingError: HMG_ARTIFACTS_URL='nosuchproto://***@x/p' is not allowed"
    assert any(expected in e for e in errors) and not any("secret" in e for e in errors)
    with pytest.raises(SettingError, match="HMG_ARTIFACTS_URL"):
        paths.reports_dir  # noqa: B018 (the property checks the setting)


# --- credentials ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("s3://AKIAKEY:secret@bucket/prefix", "s3://***@bucket/prefix"),
        ("https://user:pw@host:8080/x?sig=abc", "https://***@host:8080/x?***"),
        ("ftp://user@host/p", "ftp://***@host/p"),
        ("memory://x/y", "memory://x/y"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("/srv/store/artifacts/x.pt", "/srv/store/artifacts/x.pt"),
        ("data/store", "data/store"),
    ],
)
def test_redact_url_removes_credentials(text: str, shown: str) -> None:
    assert redact_url(text) == shown


# --- the torch artifact IO manager -----------------------------------------------------------


def test_artifacts_round_trip_through_memory(
    memory: fsspec.AbstractFileSystem, root: str, tmp_path: Path
) -> None:
    manager = artifact_io_manager(PipelinePaths(store_dir=str(tmp_path), artifacts_url=root))
    value = {"weights": torch.arange(300_000.0).reshape(3, -1), "names": ["a", "b"]}
    output = build_output_context(asset_key=AssetKey("hetero_graph"))
    manager.handle_output(output, value)

    assert files_under(memory, root) == {"artifacts/hetero_graph.pt"}
    stored = torch.load(io.BytesIO(memory.cat(f"{root}/artifacts/hetero_graph.pt")))
    assert torch.equal(stored["weights"], value["weights"])
    metadata = output.get_logged_metadata()
    assert metadata["path"].value == f"{root}/artifacts/hetero_graph.pt"
    assert type(metadata["path"]).__name__ == "UrlMetadataValue"
    size = memory.size(f"{root}/artifacts/hetero_graph.pt")
    assert size > 2**20 and metadata["size_mb"].value == round(size / 2**20, 2)

    loaded = manager.load_input(build_input_context(asset_key=AssetKey("hetero_graph")))
    assert torch.equal(loaded["weights"], value["weights"]) and loaded["names"] == ["a", "b"]
    assert list(tmp_path.iterdir()) == []  # the local store is not touched


class Unpicklable:
    """Fails half-way through ``torch.save``, after some bytes were written."""

    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def test_a_failed_save_leaves_the_stored_artifact_as_it_was(
    memory: fsspec.AbstractFileSystem, root: str, tmp_path: Path
) -> None:
    manager = artifact_io_manager(PipelinePaths(store_dir=str(tmp_path), artifacts_url=root))
    output = build_output_context(asset_key=AssetKey("trained_model"))
    manager.handle_output(output, {"weights": torch.ones(1000)})
    before = memory.cat(f"{root}/artifacts/trained_model.pt")
    with pytest.raises(RuntimeError, match="cannot pickle"):
        manager.handle_output(output, {"weights": torch.zeros(1000), "bad": Unpicklable()})
    assert memory.cat(f"{root}/artifacts/trained_model.pt") == before


def test_a_missing_artifact_names_the_asset(root: str, tmp_path: Path) -> None:
    manager = artifact_io_manager(PipelinePaths(store_dir=str(tmp_path), artifacts_url=root))
    with pytest.raises(MissingUpstream) as error:
        manager.load_input(build_input_context(asset_key=AssetKey("trained_model")))
    message = str(error.value)
    assert "\n" not in message and "upstream asset trained_model is not in the store" in message
    assert f"no file {root}/artifacts/trained_model.pt" in message
    assert "dagster asset materialize --select '*trained_model'" in message


def test_credentials_in_the_url_never_reach_the_metadata(
    memory: fsspec.AbstractFileSystem, tmp_path: Path
) -> None:
    root = f"memory://user:secret@hmg-{uuid.uuid4().hex[:12]}"
    manager = TorchArtifactIOManager(base_dir=f"{root}/artifacts")
    output = build_output_context(asset_key=AssetKey("model"))
    manager.handle_output(output, {"a": 1})
    shown = output.get_logged_metadata()["path"].value
    assert "secret" not in shown and shown.startswith("memory://***@hmg-")
    with pytest.raises(MissingUpstream) as error:
        manager.load_input(build_input_context(asset_key=AssetKey("absent")))
    assert "secret" not in str(error.value)


def test_local_artifacts_are_written_atomically_as_before(tmp_path: Path) -> None:
    manager = artifact_io_manager(PipelinePaths(store_dir=str(tmp_path / "store")))
    output = build_output_context(asset_key=AssetKey("hetero_graph"))
    manager.handle_output(output, {"a": torch.ones(2)})
    target = tmp_path / "store" / "artifacts" / "hetero_graph.pt"
    assert sorted(p.name for p in target.parent.iterdir()) == ["hetero_graph.pt"]  # no .part
    assert torch.load(target)["a"].sum() == 2
    assert output.get_logged_metadata()["path"].value == str(target)
    assert type(output.get_logged_metadata()["path"]).__name__ == "PathMetadataValue"


# --- reports -------------------------------------------------------------------------------


def test_a_report_written_to_memory_is_readable_there(
    memory: fsspec.AbstractFileSystem, root: str, tmp_path: Path
) -> None:
    history = [SimpleNamespace(epoch=e, loss=1.0 / e, val_weighted_f1=0.1 * e) for e in (1, 2)]
    report = EvaluationReport(
        summary=pl.DataFrame({"metric": ["weighted_f1"], "HMG-Emo": ["0.5000"]}),
        differences=pl.DataFrame(),
        curves=training_curves({0: history}),
        confusion=confusion_matrix_plot(np.array([[2, 1], [0, 3]]), ["awe", "fear"], "fold 0"),
    )
    paths = PipelinePaths(store_dir=str(tmp_path / "store"), artifacts_url=root)
    document = report.write(paths.reports_dir)

    assert str(document) == f"{root}/reports/evaluation.md"
    assert files_under(memory, root) == {
        "reports/evaluation.md",
        "reports/training_curves.png",
        "reports/confusion_matrix.png",
    }
    text = as_location(f"{root}/reports/evaluation.md").read_text(encoding="utf-8")
    assert text.startswith("# Cross-validated evaluation") and "| weighted_f1 |" in text
    for plot in ("confusion_matrix.png", "training_curves.png"):
        assert memory.cat(f"{root}/reports/{plot}")[:8] == PNG_SIGNATURE
    assert not (tmp_path / "store").exists()


# --- a pipeline run ---------------------------------------------------------------------------


def test_materialize_the_model_with_artifacts_and_report_in_memory(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    memory: fsspec.AbstractFileSystem,
    root: str,
    tiny: TinyDataset,
) -> None:
    from hmg_pipeline.definitions import all_assets, all_checks, build_resources
    from hmg_pipeline.model.predict import load_trained_model
    from hmg_pipeline.predict import main
    from hmg_pipeline.resources import ComputeResource

    tiny.write_trainable_views([view("u4", "i1", "awe"), view("u4", "i2", "fear")])
    paths = PipelinePaths(
        raw_dir=str(tiny.raw_dir), store_dir=str(tiny.store_dir), artifacts_url=root
    )
    result = materialize(
        [*all_assets, *all_checks],
        selection=["*trained_model"],
        resources=build_resources(paths, ComputeResource(device="cpu")),
        run_config={"ops": {"trained_model": {"config": {"epochs": 1, "folds": 2}}}},
    )
    assert result.success

    stored = files_under(memory, root)
    assert {"artifacts/hetero_graph.pt", "artifacts/trained_model.pt"} <= stored
    assert {"reports/evaluation.md", "reports/confusion_matrix.png"} <= stored
    assert memory.cat(f"{root}/reports/confusion_matrix.png")[:8] == PNG_SIGNATURE
    # DuckDB (and nothing else of ours) in the local store.
    assert (tiny.store_dir / "hmg.duckdb").is_file()
    assert not (tiny.store_dir / "artifacts").exists() and not (tiny.store_dir / "reports").exists()
    graph_path = result.asset_materializations_for_node("hetero_graph")[0].metadata["path"]
    assert graph_path.value == f"{root}/artifacts/hetero_graph.pt"

    trained = load_trained_model(f"{root}/artifacts/trained_model.pt")
    assert trained.fold in (0, 1) and len(trained.class_names) > 0

    # The command line reads both artifacts from HMG_ARTIFACTS_URL.
    monkeypatch.setenv("HMG_ARTIFACTS_URL", root)
    monkeypatch.setenv("HMG_STORE_DIR", str(tiny.store_dir))
    assert main(["u1", "i1", "nobody", "i1"]) == 0
    assert "unknown_user" in capsys.readouterr().out
    monkeypatch.setenv("HMG_ARTIFACTS_URL", f"{root}-nowhere")
    assert main(["u1", "i1"]) == 1
    assert f"{root}-nowhere/artifacts/trained_model.pt does not exist" in capsys.readouterr().err
