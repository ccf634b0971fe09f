"""Where steps run: the `gpu` concurrency pool and the Kubernetes pod settings of its steps.

Every asset that needs a GPU (encoders, LLaVA, training) is in the pool ``GPU_POOL``, whose
instance-wide limit is set to the number of GPUs (``dagster instance concurrency set gpu N``,
deploy/README.md), and carries ``GPU_OP_TAGS`` in its ``op_tags``: with dagster-k8s's
``k8s_job_executor`` (``HMG_EXECUTOR=k8s``) its step pod asks for one ``nvidia.com/gpu`` and
tolerates the GPU nodes' taint. Every other step runs in a CPU pod with
``CPU_STEP_K8S_CONFIG`` (the executor's ``step_k8s_config``); dagster-k8s deep-merges a step's
tag over it, so a GPU step keeps the shared volume and environment and gets the GPU resources.
The tags are inert under the local executors. No Dagster import here.
"""

from __future__ import annotations

from typing import Any

GPU_POOL = "gpu"
K8S_CONFIG_TAG = "dagster-k8s/config"  # dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY
GPU_RESOURCE = "nvidia.com/gpu"

# A CPU step: encoders load on CPU, polars/DuckDB tables of IESN size fit in a few GiB.
CPU_STEP_K8S_CONFIG: dict[str, Any] = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "1", "memory": "4Gi"},
            "limits": {"memory": "8Gi"},
        }
    }
}

# A GPU step: one GPU, CPU for the image loader workers, and a memory-backed /dev/shm (the
# default 64 MiB of a container is too small for torch DataLoader workers).
GPU_K8S_CONFIG: dict[str, Any] = {
    "container_config": {
        "resources": {
            "requests": {"cpu": "4", "memory": "16Gi", GPU_RESOURCE: "1"},
            "limits": {"memory": "32Gi", GPU_RESOURCE: "1"},
        },
        "volume_mounts": [{"name": "dshm", "mount_path": "/dev/shm"}],
    },
    "pod_spec_config": {
        "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
        "volumes": [{"name": "dshm", "empty_dir": {"medium": "Memory", "size_limit": "8Gi"}}],
    },
}

# The op tags of every asset in GPU_POOL, next to its other tags: ``op_tags={**DUCKDB_TAGS,
# **GPU_OP_TAGS}`` (Dagster stores a dict tag value as JSON).
GPU_OP_TAGS: dict[str, Any] = {K8S_CONFIG_TAG: GPU_K8S_CONFIG}

# The steps that only send requests to a served LLaVA (the openai and ollama backends): a pool
# of their own, whose limit is the number of shards that may call the servers at once (each
# keeps HMG_LLAVA_CONCURRENCY requests in flight), on CPU pods.
LLAVA_SERVER_POOL = "llava_server"


def llava_generation_placement(backend: str) -> tuple[str, dict[str, Any]]:
    """(pool, op tags) of ``llava_comments`` for a LLaVA backend: in-process transformers
    generation needs a GPU; a served model (openai, ollama) or none does not, so its shards
    run on CPU pods in ``LLAVA_SERVER_POOL`` and leave the GPUs to the server."""
    if backend == "transformers":
        return GPU_POOL, GPU_OP_TAGS
    return LLAVA_SERVER_POOL, {}
