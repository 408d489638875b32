"""Operator-wide settings, read from the environment (the Helm chart sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from dpo_operator import __version__

# the released workload image; its tag is the operator's own version, as the chart's workloads.image
WORKLOAD_IMAGE_REPOSITORY = "ghcr.io/dpo-operator/dpo-workload"


@dataclass(frozen=True)
class OperatorConfig:
    workload_image: str
    nim_image: str
    data_root: str = "/data"
    # where the operator reaches a ModelDeployment's Service to check readiness; the in-cluster DNS name by
    # default (set it when the operator runs outside the cluster, e.g. behind kubectl port-forward)
    probe_url_template: str = "http://{name}.{namespace}.svc.cluster.local:{port}"

    @classmethod
    def from_env(cls) -> "OperatorConfig":
        return cls(
            workload_image=os.environ.get("DPO_WORKLOAD_IMAGE", f"{WORKLOAD_IMAGE_REPOSITORY}:{__version__}"),
            nim_image=os.environ.get("DPO_NIM_IMAGE", "nvcr.io/nim/meta/llama-3.2-1b-instruct:latest"),
            probe_url_template=os.environ.get("DPO_PROBE_URL_TEMPLATE", cls.probe_url_template),
        )
