# The workload image: collector (with NeMo Agent Toolkit for NAT workflows), dataset uploader and DPO trainer
# (torch + transformers + peft, CUDA; wandb for local.wandb). A NAT workflow's own package goes in an image built FROM this one.
#   docker build -f docker/workload.Dockerfile -t ghcr.io/dpo-operator/dpo-workload:0.1.0 .
# TORCH_INDEX selects the wheel flavour: the CUDA 12.8 build for GPU nodes (default), or
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu for a CPU-only image (kind, CI).
# Base image: a tag, not yet a digest (no registry could be reached where this was written). To pin it:
#   docker buildx imagetools inspect python:3.11-slim   ->  FROM python:3.11-slim@sha256:<that digest>
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
# a C/C++ compiler for torch.compile (local.compile): Triton builds its GPU kernel launchers with it, Inductor CPU kernels
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/lock.txt ./requirements/lock.txt
COPY operator ./operator
# versions from requirements/lock.txt (`make lock`); torch==2.13.0 there matches the CPU or CUDA build of TORCH_INDEX
RUN pip install --no-cache-dir --extra-index-url "${TORCH_INDEX}" -c requirements/lock.txt ".[workload,nat,wandb]" \
    && rm -rf /src
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HOME=/tmp/hf \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor TRITON_CACHE_DIR=/tmp/triton
WORKDIR /workspace
USER 65532:65532
ENTRYPOINT ["dpo-operator"]
