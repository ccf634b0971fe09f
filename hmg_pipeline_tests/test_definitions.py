"""The code location: it loads, every asset has a group and schema, writers are serialised, and
every selection a user would type (``K`` and ``*K`` for each asset K) plans; a few of them run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from dagster import AssetKey, AssetSelection
from dagster._core.execution.api import create_execution_plan

from hmg_pipeline.definitions import all_checks, defs
from hmg_pipeline.resources import ComputeResource, PipelinePaths
from hmg_pipeline.storage import DUCKDB_TAG_KEY, MissingUpstream, executor_from_env, multiprocess

from .helpers import TinyDataset

ROOT = Path(__file__).resolve().parents[1]
GRAPH = defs.resolve_asset_graph()
ASSET_KEYS = sorted(key.to_user_string() for key in GRAPH.get_all_asset_keys())


def resolve(text: str) -> set[AssetKey]:
    """The asset keys of a ``--select`` string, resolved as Dagster's CLI does."""
    return set(AssetSelection.from_coercible(text.split(",")).resolve(GRAPH))


@pytest.mark.parametrize("key", ASSET_KEYS)
def test_every_asset_alone_and_with_its_upstream_plans(key: str) -> None:
    for text in (key, f"*{key}"):
        keys = resolve(text)
        job = defs.resolve_implicit_job_def_def_for_assets(list(keys))
        assert job is not None, text
        plan = create_execution_plan(job.get_subset(asset_selection=keys))
        assert plan.step_keys_to_execute, text


@pytest.mark.parametrize("key", ASSET_KEYS)
def test_a_check_reads_only_what_its_asset_and_its_upstream_provide(key: str) -> None:
    upstream = resolve(f"*{key}")
    for checks in all_checks:
        for check_key in checks.check_keys:
            if check_key.asset_key.to_user_string() == key:
                assert set(checks.keys_by_input_name.values()) <= upstream, check_key
    for node in {GRAPH.get(k).assets_def for k in upstream}:
        for check_key in node.check_keys:
            if check_key.asset_key.to_user_string() == key:
                assert set(node.keys_by_input_name.values()) <= upstream, check_key


@pytest.mark.parametrize(
    "selection", ["*clean_labels", "*label_drops", "*unreadable_images", "*valid_requests"]
)
def test_a_selection_with_its_upstream_materialises_from_an_empty_store(
    tiny: TinyDataset, selection: str
) -> None:
    result = tiny.materialize(AssetSelection.from_coercible([selection]))
    assert result.success
    done = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert done == {k.to_user_string() for k in resolve(selection)}


def test_an_asset_alone_runs_on_its_stored_upstream_and_says_what_is_missing(
    tiny: TinyDataset,
) -> None:
    with pytest.raises(MissingUpstream, match=r"upstream asset \w+ is not in the store"):
        tiny.materialize(["clean_labels"])
    assert tiny.materialize(AssetSelection.from_coercible(["*clean_labels"])).success
    clean = tiny.table("labels.clean_labels")
    assert tiny.materialize(["label_drops"]).success  # alone, on the stored upstream
    assert tiny.materialize(["clean_labels"]).success
    assert tiny.table("labels.clean_labels").equals(clean)


def test_definitions_load_and_every_asset_is_grouped_and_stored_in_its_schema() -> None:
    graph = defs.resolve_asset_graph()
    artifacts = {"hetero_graph", "trained_model"}  # torch artifacts, not DuckDB tables
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.group_name != "default", key
        if key.to_user_string() not in artifacts:
            assert node.metadata.get("schema") == node.group_name, key
    assert {"raw_images", "quarantine", "clean_labels", "clean_contacts"} <= {
        key.to_user_string() for key in graph.get_all_asset_keys()
    }


def test_every_duckdb_step_is_limited_to_one_at_a_time() -> None:
    job = defs.resolve_implicit_global_asset_job_def()
    for node in job.graph.node_defs:
        assert node.tags.get(DUCKDB_TAG_KEY) == "writer", node.name
    assert defs.executor is executor_from_env()  # multiprocess unless HMG_EXECUTOR says so
    resolved = multiprocess.config_schema.resolve_config({}).value  # type: ignore[union-attr]
    limits = resolved["config"]["tag_concurrency_limits"]
    assert {"key": DUCKDB_TAG_KEY, "value": "writer", "limit": 1} in limits


def test_paths_resolve_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    monkeypatch.setenv("HMG_RAW_DIR", str(tmp_path / "raw"))
    monkeypatch.setenv("HMG_STORE_DIR", str(tmp_path / "store"))
    paths = PipelinePaths.from_env()
    assert paths.raw_path == tmp_path / "raw"
    assert paths.store_path == tmp_path / "store" and paths.store_path.is_dir()


def test_compute_resource_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ComputeResource(device="cpu").torch_device() == torch.device("cpu")
    auto = ComputeResource(device="auto").torch_device()
    assert auto.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert ComputeResource(device="cpu", amp=True).amp_enabled is False
    with pytest.raises(ValueError, match="not a device"):
        ComputeResource(device="gpu please").torch_device()
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU is visible"):
            ComputeResource(device="cuda").torch_device()
    monkeypatch.setenv("HMG_DEVICE", "cpu")
    monkeypatch.setenv("HMG_AMP", "0")
    resource = ComputeResource.from_env()
    assert (resource.device, resource.amp) == ("cpu", False)


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"```(?:bash|sh)\n(.*?)\n```", readme, flags=re.S)
    assert commands[0].strip() == "make demo"
    assert commands[1].strip() == "make test"
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_sample_cli_writes_tables(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "hmg_pipeline.core.sample", "--out", str(tmp_path), "--seed", "3"],
        check=True,
        capture_output=True,
        env={**os.environ},
    )
    assert (tmp_path / "views.csv").is_file() and (tmp_path / "images").is_dir()


def test_paper_experiments_runs_every_variant_and_hmg_main_never_sees_llava() -> None:
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
    )

    from hmg_pipeline.model.variants import VARIANTS

    job = defs.resolve_job_def("paper_experiments")
    keys = [variant.key for variant in VARIANTS]
    assert job.partitions_def.get_partition_keys() == keys
    assert job.tags[ASSET_PARTITION_RANGE_START_TAG] == keys[0]
    assert job.tags[ASSET_PARTITION_RANGE_END_TAG] == keys[-1]
    assert {"experiment_results", "paper_tables", "hetero_graph"} <= {
        node.name for node in job.nodes
    }
    # A run covers one partitions definition: the LLaVA shards are the job llava_augmentation.
    assert not {"llava_comments", "llava_comment_embeddings"} & {node.name for node in job.nodes}
    shards = defs.resolve_job_def("llava_augmentation")
    shard_keys = shards.partitions_def.get_partition_keys()
    assert len(shard_keys) == 16 and shards.tags[ASSET_PARTITION_RANGE_END_TAG] == shard_keys[-1]
    assert {"llava_comments", "llava_comment_embeddings", "clean_labels"} <= {
        node.name for node in shards.nodes
    }
    # The paper's ethics note: augmented comments never train HMG-Emo by default.
    main = {node.name for node in defs.resolve_job_def("hmg_main").nodes}
    assert "trained_model" in main and not {"llava_comments", "llava_comment_embeddings"} & main
    # The demo also keeps what it leaves out, so its counts add up.
    selected = defs.resolve_job_def("hmg_main").asset_layer.selected_asset_keys
    assert {"predictions", "label_drops", "unreadable_images"} <= {
        key.to_user_string() for key in selected
    }


def test_llava_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from hmg_pipeline.resources import LlavaResource

    assert LlavaResource().model_name() == "llava-hf/llava-1.5-7b-hf"
    assert LlavaResource(backend="ollama").model_name() == "llava"
    monkeypatch.setenv("HMG_LLAVA_BACKEND", "ollama")
    monkeypatch.setenv("HMG_LLAVA_MODEL", "llava:13b")
    monkeypatch.setenv("HMG_OLLAMA_URL", "http://gpu-box:11434")
    resource = LlavaResource.from_env()
    assert (resource.backend, resource.model_name(), resource.ollama_url) == (
        "ollama",
        "llava:13b",
        "http://gpu-box:11434",
    )
    # The cache key names what changes greedy output: the length limit and the dtype.
    assert LlavaResource().identity("cpu") == (
        "transformers",
        "llava-hf/llava-1.5-7b-hf|max_new_tokens=60,fp32",
    )
    assert LlavaResource().identity("cuda") != LlavaResource().identity("cpu")
    assert LlavaResource(max_new_tokens=20).identity("cpu") != LlavaResource().identity("cpu")
    with pytest.raises(ValueError, match="transformers, ollama or openai"):
        LlavaResource(backend="vllm").generator(Path("."), "cpu")
