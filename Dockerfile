# The hmg_pipeline code location image for Kubernetes (deploy/README.md).
#   CPU:  docker build -t REGISTRY/hmg-pipeline:0.1.0-cpu .
#   CUDA: docker build --build-arg TORCH_VARIANT=cu130 -t REGISTRY/hmg-pipeline:0.1.0-cu130 .
# One image serves the code server, the run pods and the step pods (CPU and GPU steps alike;
# a CPU image runs the GPU steps on CPU, slowly).
FROM python:3.11-slim

# cpu, or the CUDA build of the pinned torch on https://download.pytorch.org/whl/ (e.g. cu130,
# the one PyPI's torch 2.14.1 wheel is built with; cu128 or cu126 for older GPU drivers).
ARG TORCH_VARIANT=cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first, from the variant's index: `pip install .` then finds torch==2.14.1 (+cpu/+cuXXX)
# installed and keeps it. Same pins as pyproject.toml.
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
        torch==2.14.1 torchvision==0.29.1

WORKDIR /opt/hmg
COPY pyproject.toml README.md ./
COPY hmg_pipeline ./hmg_pipeline
# s3: fsspec's S3 filesystem, for HMG_ARTIFACTS_URL=s3://... (artifacts and reports); k8s: the
# step executor (HMG_EXECUTOR=k8s) and the Postgres instance storage of the run pods.
RUN pip install ".[s3,k8s]"
# The bundled sample (6 MB), for a smoke run in the cluster: HMG_RAW_DIR=/opt/hmg/data/sample.
COPY workspace.yaml ./
COPY data/sample ./data/sample

RUN useradd --create-home --uid 1000 hmg \
    && mkdir -p /store /raw /opt/dagster/dagster_home \
    && chown hmg /store /raw /opt/dagster/dagster_home
USER 1000

# The store and the raw tables live on the shared volume (deploy/store-pvc.yaml), mounted at
# these paths in every pod. HMG_EXECUTOR=k8s: the code server, the run pods and the step pods
# load the definitions from this image, so they agree on the executor (each step its own pod);
# `docker run -e HMG_EXECUTOR=multiprocess ...` runs the image outside a cluster. HF_HOME and
# TORCH_HOME: weights downloaded for HMG_ENCODERS=paper, once for all pods, on the volume.
ENV HMG_EXECUTOR=k8s \
    HMG_STORE_DIR=/store \
    HMG_RAW_DIR=/raw \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    HF_HOME=/store/cache/huggingface \
    TORCH_HOME=/store/cache/torch

EXPOSE 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "hmg_pipeline.definitions"]
