"""The Kubernetes deployment (Dockerfile, deploy/): with ``HMG_EXECUTOR=k8s`` the definitions
load with dagster-k8s's executor and its DuckDB limit; the GPU assets, and only they, ask for a
GPU pod, as dagster-k8s itself parses and merges the tags into a step's Job; the instance
(deploy/dagster.yaml) validates against Dagster's schema with its classes imported; the Helm
values and manifests agree with it and with each other. No cluster is needed (none is here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes
import pytest
import yaml
from dagster import OpDefinition
from dagster._config import process_config
from dagster._core.instance.ref import InstanceRef
from dagster._serdes.config_class import ConfigurableClassData, class_from_code_pointer
from dagster_k8s import K8sRunLauncher, k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    USER_DEFINED_K8S_CONFIG_KEY,
    DagsterK8sJobConfig,
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)
from dagster_k8s.models import k8s_snake_case_dict
from dagster_postgres import DagsterPostgresStorage

from hmg_pipeline.placement import GPU_POOL, GPU_RESOURCE, K8S_CONFIG_TAG
from hmg_pipeline.storage import DUCKDB_TAG_KEY, k8s_executor

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# What the Helm chart sets in every Dagster pod, for the instance's {env: ...} values.
INSTANCE_ENV = {
    "DAGSTER_PG_HOST": "postgres",
    "DAGSTER_PG_USERNAME": "dagster",
    "DAGSTER_PG_PASSWORD": "secret",
    "DAGSTER_PG_DB": "dagster",
    "DAGSTER_K8S_JOB_NAMESPACE": "dagster",
    "DAGSTER_K8S_SERVICE_ACCOUNT": "dagster",
    "DAGSTER_K8S_INSTANCE_CONFIG_MAP": "dagster-instance",
    "DAGSTER_K8S_PG_PASSWORD_SECRET": "dagster-postgresql-secret",
    "DAGSTER_HOME": "/opt/dagster/dagster_home",
}


def load_yaml(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text(encoding="utf-8"))


def load_documents(name: str) -> dict[str, dict]:
    """The documents of a multi-document manifest by kind."""
    text = (DEPLOY / name).read_text(encoding="utf-8")
    return {doc["kind"]: doc for doc in yaml.safe_load_all(text) if doc}


def gpu_and_tagged_ops() -> tuple[dict[str, OpDefinition], set[str], set[str]]:
    """Every op of the code location (assets and checks), the ones in the gpu pool and the ones
    that carry a dagster-k8s/config tag."""
    from hmg_pipeline.definitions import defs

    ops: dict[str, OpDefinition] = {}
    for assets_def in defs.resolve_asset_graph().assets_defs:
        node = assets_def.node_def
        assert isinstance(node, OpDefinition), node.name
        ops[node.name] = node
    gpu = {name for name, op in ops.items() if op.pool == GPU_POOL}
    tagged = {name for name, op in ops.items() if USER_DEFINED_K8S_CONFIG_KEY in op.tags}
    return ops, gpu, tagged


# -- the executor -------------------------------------------------------------------------------


def test_the_k8s_executor_is_dagster_k8s_with_one_duckdb_writer_and_cpu_step_pods() -> None:
    executor = k8s_executor()
    assert executor.name == k8s_job_executor.name == "k8s"
    assert executor is k8s_executor()  # one definition, like the multiprocess one
    config = executor.config_schema.resolve_config({}).value["config"]  # type: ignore[union-attr]
    assert process_config(k8s_job_executor.config_schema.config_type, config).success
    assert {"key": DUCKDB_TAG_KEY, "value": "writer", "limit": 1} in config[
        "tag_concurrency_limits"
    ]
    assert config["max_concurrent"] >= 1
    requests = config["step_k8s_config"]["container_config"]["resources"]["requests"]
    assert requests["cpu"] and requests["memory"] and GPU_RESOURCE not in requests
    # The check above can fail: a wrong key or type is refused by the same schema.
    bad = {**config, "step_k8s_config": {"container_confg": {}}}
    assert not process_config(k8s_job_executor.config_schema.config_type, bad).success


LOAD_DEFINITIONS = """
import json, sys
from hmg_pipeline.definitions import defs
jobs = {name: defs.resolve_job_def(name).executor_def.name
        for name in ("hmg_main", "llava_augmentation", "paper_experiments")}
print(json.dumps({"executor": defs.executor.name, "jobs": jobs,
                  "dagster_k8s_imported": "dagster_k8s" in sys.modules}))
"""


@pytest.mark.parametrize(
    ("setting", "executor", "imported"),
    [("k8s", "k8s", True), ("", "hmg_executor", False)],
)
def test_the_code_location_loads_with_the_executor_of_hmg_executor(
    setting: str, executor: str, imported: bool
) -> None:
    """As the code server and the run pods load it: a fresh process with the setting; the local
    default does not import dagster_k8s (nor kubernetes) at all."""
    env = {**os.environ, "HMG_EXECUTOR": setting}
    done = subprocess.run(
        [sys.executable, "-c", LOAD_DEFINITIONS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["executor"] == executor
    assert set(loaded["jobs"].values()) == {executor}
    assert loaded["dagster_k8s_imported"] is imported


# -- GPU placement ------------------------------------------------------------------------------


# The assets that run a model (encoders, training, LLaVA). llava_comments only when it runs LLaVA
# in its own process (the default backend); with a served model it is a CPU step
# (test_llava_serving checks that placement).
GPU_ASSETS = {
    "image_embeddings",
    "comment_embeddings",
    "group_embeddings",
    "trained_model",
    "experiment_results",
    "llava_comment_embeddings",
}


def test_the_gpu_tags_are_on_exactly_the_gpu_pool_assets() -> None:
    ops, gpu, tagged = gpu_and_tagged_ops()
    in_process = os.environ.get("HMG_LLAVA_BACKEND", "").strip().lower() in ("", "transformers")
    assert gpu == GPU_ASSETS | ({"llava_comments"} if in_process else set())
    assert tagged == gpu, {"gpu pool without tag": gpu - tagged, "tag outside": tagged - gpu}
    for name in gpu:
        container = get_user_defined_k8s_config(ops[name].tags).container_config
        assert container["resources"]["limits"][GPU_RESOURCE] == "1", name
        assert ops[name].tags[DUCKDB_TAG_KEY] == "writer", name  # the DuckDB limit still holds


def step_job(op: OpDefinition) -> kubernetes.client.V1Job:
    """The Job that the k8s_job_executor would launch for ``op``: the run launcher's settings
    (deploy/dagster.yaml), the executor's step_k8s_config, the op's tags, merged by dagster-k8s
    in its own order (K8sStepHandler._get_container_context) and built by its own function."""
    launcher = load_yaml("dagster.yaml")["run_launcher"]["config"]
    executor = k8s_executor().config_schema.resolve_config({}).value["config"]  # type: ignore[union-attr]
    context = (
        K8sContainerContext(
            env_secrets=launcher["env_secrets"],
            env_vars=launcher["env_vars"],
            volumes=launcher["volumes"],
            volume_mounts=launcher["volume_mounts"],
            run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(launcher["run_k8s_config"]),
        )
        .merge(
            K8sContainerContext(
                run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor["step_k8s_config"])
            )
        )
        .merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(op.tags)))
    )
    job_config = DagsterK8sJobConfig(
        job_image="registry/hmg-pipeline:test",
        dagster_home=INSTANCE_ENV["DAGSTER_HOME"],
        instance_config_map=INSTANCE_ENV["DAGSTER_K8S_INSTANCE_CONFIG_MAP"],
    )
    return construct_dagster_k8s_job(
        job_config,
        args=["dagster", "api", "execute_step"],
        job_name=f"dagster-step-{op.name.replace('_', '-')}",
        user_defined_k8s_config=context.run_k8s_config,
        component="step_worker",
    )


def test_a_gpu_step_pod_gets_one_gpu_and_a_cpu_step_pod_none_both_on_the_shared_store() -> None:
    ops, gpu, _ = gpu_and_tagged_ops()
    cpu_op = ops["clean_labels"]
    assert cpu_op.name not in gpu
    for op, wants_gpu in ((ops["trained_model"], True), (cpu_op, False)):
        pod = step_job(op).spec.template.spec
        container = pod.containers[0]
        limits, requests = container.resources.limits, container.resources.requests
        assert (limits.get(GPU_RESOURCE) == "1") is wants_gpu, op.name
        assert GPU_RESOURCE not in requests or wants_gpu, op.name
        # The executor's CPU step resources override the run pod's (deep merge).
        assert requests["cpu"] == ("4" if wants_gpu else "1"), op.name
        tolerated = {t.key for t in pod.tolerations or []}
        assert (GPU_RESOURCE in tolerated) is wants_gpu, op.name
        mounts = {m.mount_path: m for m in container.volume_mounts}
        claims = {v.name: v.persistent_volume_claim for v in pod.volumes}
        assert claims[mounts["/store"].name].claim_name == "hmg-store", op.name
        assert mounts["/store"].sub_path == "store" and mounts["/raw"].sub_path == "raw"
        assert ("/dev/shm" in mounts) is wants_gpu, op.name
        assert {e.secret_ref.name for e in container.env_from} == {"hmg-secrets"}
        env = {e.name: e.value for e in container.env}
        assert env["HMG_EXECUTOR"] == "k8s" and env["HMG_STORE_DIR"] == "/store"


# -- the instance (deploy/dagster.yaml) ---------------------------------------------------------


def instance_classes(directory: Path) -> dict[str, tuple[type, ConfigurableClassData]]:
    """The configurable classes of the instance in ``directory``, read and validated as Dagster
    reads dagster.yaml, each imported and its config processed against the class's schema."""
    ref = InstanceRef.from_dir(str(directory))
    classes = {}
    for field in ("storage_data", "run_launcher_data", "run_coordinator_data"):
        data: ConfigurableClassData = getattr(ref, field)
        klass = class_from_code_pointer(data.module_name, data.class_name)
        result = process_config(klass.config_type(), data.config_dict)  # type: ignore[attr-defined]
        assert result.success, (field, result.errors)
        classes[field] = (klass, data)
    return classes


def test_the_instance_validates_with_k8s_run_launcher_postgres_and_pool_limits(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in INSTANCE_ENV.items():
        monkeypatch.setenv(name, value)
    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    classes = instance_classes(tmp_path)
    assert classes["storage_data"][0] is DagsterPostgresStorage
    assert classes["run_launcher_data"][0] is K8sRunLauncher
    assert classes["run_coordinator_data"][0].__name__ == "QueuedRunCoordinator"
    launcher = classes["run_launcher_data"][1].config_dict
    assert launcher["env_secrets"] == ["hmg-secrets"]
    for volume in launcher["volumes"]:  # the keys are the Kubernetes models' own
        k8s_snake_case_dict(kubernetes.client.V1Volume, volume)
    for mount in launcher["volume_mounts"]:
        k8s_snake_case_dict(kubernetes.client.V1VolumeMount, mount)
    settings = InstanceRef.from_dir(str(tmp_path)).settings
    assert settings["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}
    assert settings["concurrency"]["runs"]["max_concurrent_runs"] >= 1

    # The same reading refuses a broken instance, so the checks above can fail.
    broken = (DEPLOY / "dagster.yaml").read_text(encoding="utf-8")
    broken = broken.replace("    volume_mounts:", "    volume_mount:")
    (tmp_path / "dagster.yaml").write_text(broken, encoding="utf-8")
    with pytest.raises(Exception, match="volume_mount"):
        instance_classes(tmp_path)


# -- Helm values and manifests ------------------------------------------------------------------


def snake(model: type, items: list[dict]) -> list[dict]:
    return [k8s_snake_case_dict(model, item) for item in items]


def test_the_helm_values_match_the_instance_the_volume_and_the_vllm_service() -> None:
    values = load_yaml("values.yaml")
    instance = load_yaml("dagster.yaml")
    launcher = instance["run_launcher"]["config"]
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    helm_launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    for where in (deployment, helm_launcher):
        assert snake(kubernetes.client.V1Volume, where["volumes"]) == launcher["volumes"]
        assert (
            snake(kubernetes.client.V1VolumeMount, where["volumeMounts"])
            == (launcher["volume_mounts"])
        )
        assert [s["name"] for s in where["envSecrets"]] == launcher["env_secrets"]
    env = {item["name"]: item["value"] for item in deployment["env"]}
    assert {f"{k}={v}" for k, v in env.items()} >= set(launcher["env_vars"])
    assert deployment["codeServerArgs"] == ["-m", PYPROJECT["tool"]["dagster"]["module_name"]]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    pools, runs = values["concurrency"]["pools"], values["concurrency"]["runs"]
    assert values["concurrency"]["enabled"] is True
    assert pools["defaultLimit"] == instance["concurrency"]["pools"]["default_limit"]
    assert pools["granularity"] == instance["concurrency"]["pools"]["granularity"]
    assert runs["maxConcurrentRuns"] == instance["concurrency"]["runs"]["max_concurrent_runs"]
    # Dagster refuses max_concurrent_runs in both places (instance/config.py).
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert "maxConcurrentRuns" not in queued
    # Failed runs (a shard whose server died) are retried by the daemon, in both files alike.
    retries, helm_retries = instance["run_retries"], values["dagsterDaemon"]["runRetries"]
    assert retries["enabled"] is helm_retries["enabled"] is True
    assert retries["max_retries"] == helm_retries["maxRetries"] >= 1

    pvc = load_yaml("store-pvc.yaml")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    claims = {v["persistent_volume_claim"]["claim_name"] for v in launcher["volumes"]}
    assert claims == {pvc["metadata"]["name"]}

    vllm = load_documents("vllm.yaml")
    (server,) = vllm["Deployment"]["spec"]["template"]["spec"]["containers"]
    args = server["args"]
    service = vllm["Service"]
    (port,) = service["spec"]["ports"]
    assert env["HMG_LLAVA_BACKEND"] == "openai"
    assert env["HMG_LLAVA_BASE_URL"] == f"http://{service['metadata']['name']}:{port['port']}/v1"
    assert env["HMG_LLAVA_MODEL"] == args[0]
    assert env["HMG_LLAVA_CONCURRENCY"] == args[args.index("--max-num-seqs") + 1]
    assert port["targetPort"] == int(args[args.index("--port") + 1])


def test_the_vllm_server_has_one_gpu_and_is_ready_only_when_healthy() -> None:
    vllm = load_documents("vllm.yaml")
    assert set(vllm) == {"PersistentVolumeClaim", "Deployment", "Service"}
    pod = vllm["Deployment"]["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["image"].startswith("vllm/vllm-openai:")
    assert server["command"] == ["vllm", "serve"] and "--max-num-seqs" in server["args"]
    assert server["resources"]["limits"][GPU_RESOURCE] == "1"
    probe = server["readinessProbe"]["httpGet"]
    assert probe == {"path": "/health", "port": server["ports"][0]["containerPort"]}
    assert any(t["key"] == GPU_RESOURCE for t in pod["tolerations"])
    k8s_snake_case_dict(kubernetes.client.V1PodSpec, pod)  # the keys are the client model's


# -- the image ----------------------------------------------------------------------------------


def test_the_dockerfile_installs_torch_of_the_variant_then_the_project() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG TORCH_VARIANT=cpu$", text, flags=re.M)
    assert "https://download.pytorch.org/whl/${TORCH_VARIANT}" in text
    pins = {
        match.group(1): match.group(2)
        for dep in PYPROJECT["project"]["dependencies"]
        if (match := re.fullmatch(r"(torch|torchvision)==(\S+)", dep))
    }
    assert set(pins) == {"torch", "torchvision"}
    for name, version in pins.items():
        assert f"{name}=={version}" in text, name  # same pins as pyproject.toml
    assert text.index("download.pytorch.org") < text.index('pip install ".[s3,k8s]"')
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, flags=re.M).group(1))  # type: ignore[union-attr]
    assert cmd[:3] == ["dagster", "code-server", "start"]
    assert cmd[cmd.index("-m") + 1] == PYPROJECT["tool"]["dagster"]["module_name"]
    assert re.search(rf"^EXPOSE {cmd[cmd.index('-p') + 1]}$", text, flags=re.M)
    assert re.search(r"^USER (?!root|0\b)", text, flags=re.M)  # not root
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", "data/store", ".git"} <= set(ignored)


def test_the_deploy_readme_names_every_file_and_the_gpu_pool_command() -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for path in sorted(DEPLOY.glob("*.yaml")):
        assert f"deploy/{path.name}" in readme, path.name
    assert f"dagster instance concurrency set {GPU_POOL}" in readme
    assert "--build-arg TORCH_VARIANT=" in readme
    assert K8S_CONFIG_TAG in readme
