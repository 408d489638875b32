# The workload image: collector, dataset uploader and DPO trainer (torch + transformers + peft, CUDA; wandb for
# local.wandb), and NeMo Agent Toolkit for NAT workflows in an environment of its own.
#   docker build -f docker/workload.Dockerfile -t ghcr.io/dpo-operator/dpo-workload:0.1.0 .
# TORCH_INDEX selects the wheel flavour: the CUDA 12.8 build for GPU nodes (default), or
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu for a CPU-only image (kind, CI).
# Base image: a tag, not yet a digest (no registry could be reached where this was written), hence its line in
# docker/unpinned-images.txt. `make pin-images` resolves the digest (docker buildx imagetools inspect, or crane) and
# rewrites each FROM as python:3.12-slim@sha256:<digest>.
# Python 3.12: NVIDIA's NAT examples import typing.override.
FROM python:3.12-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
# a C/C++ compiler for torch.compile (local.compile): Triton builds its GPU kernel launchers with it, Inductor CPU kernels
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/lock.txt requirements/nat-lock.txt ./requirements/
COPY operator ./operator
# Two environments. /opt/dpo (on PATH): the trainer's and the operator's pods, versions from requirements/lock.txt
# (`make lock`); torch==2.13.0 there matches the CPU or CUDA build of TORCH_INDEX.
RUN python -m venv /opt/dpo \
    && /opt/dpo/bin/pip install --no-cache-dir --extra-index-url "${TORCH_INDEX}" -c requirements/lock.txt \
       ".[workload,wandb]"
# /opt/nat: NeMo Agent Toolkit, nvidia-nat[eval], the NeMo Customizer and LangChain (NVIDIA) plugins NVIDIA's DPO
# example names, and the collector (dpo-operator without its dependencies: no kopf, no kubernetes), versions from
# requirements/nat-lock.txt (`make nat-lock`). Apart because their pins conflict with the trainer's: huggingface-hub<2,
# and boto3's python-dateutil<3 against kubernetes==37.0.2. A collection or evaluation that runs a NAT workflow
# re-executes its command with $DPO_NAT_PYTHON (dpo_operator/natenv.py). A workflow's own package goes in there:
#   FROM ghcr.io/dpo-operator/dpo-workload:0.1.0
#   USER root
#   COPY my_workflow /src/my_workflow
#   RUN /opt/nat/bin/pip install --no-cache-dir -c /opt/nat/constraints.txt /src/my_workflow && rm -rf /src
#   USER 65532:65532
RUN python -m venv /opt/nat \
    && /opt/nat/bin/pip install --no-cache-dir -r requirements/nat-lock.txt \
    && /opt/nat/bin/pip install --no-cache-dir --no-deps . \
    && cp requirements/nat-lock.txt /opt/nat/constraints.txt \
    && rm -rf /src
ENV PATH=/opt/dpo/bin:$PATH DPO_NAT_PYTHON=/opt/nat/bin/python \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HOME=/tmp/hf \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor TRITON_CACHE_DIR=/tmp/triton
WORKDIR /workspace
USER 65532:65532
ENTRYPOINT ["dpo-operator"]
