"""Operator-wide settings, read from the environment (the Helm chart sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dpo_operator import __version__


def _split(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _listed(name: str, default: str = "") -> tuple[str, ...]:
    """A comma-separated list from the environment (the chart joins its value lists; set but empty: none)."""
    return _split(os.environ.get(name, default))


# what a GPU workload needs and grants nothing else: the NVIDIA device plugin's taint, and labels that pick a kind
# of node (GPU model, architecture, instance type, zone), never a role such as the control plane
DEFAULT_TOLERATIONS = "nvidia.com/gpu"
DEFAULT_NODE_SELECTORS = ("nvidia.com/gpu.product,nvidia.com/gpu.present,kubernetes.io/arch,kubernetes.io/os,"
                          "node.kubernetes.io/instance-type,topology.kubernetes.io/zone,topology.kubernetes.io/region")

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
    # the Pod Security Standard level every workload pod must meet, template overrides included
    # (chart: workloads.podSecurityLevel; restricted, baseline or privileged)
    pod_security_level: str = "restricted"
    # toleration keys and nodeSelector label keys ("key" any value, "key=value" that value, "*" anything) a
    # template may use (chart: workloads.allowedTolerations / workloads.allowedNodeSelectors)
    allowed_tolerations: tuple[str, ...] = field(default_factory=lambda: _split(DEFAULT_TOLERATIONS))
    allowed_node_selectors: tuple[str, ...] = field(default_factory=lambda: _split(DEFAULT_NODE_SELECTORS))

    @classmethod
    def from_env(cls) -> "OperatorConfig":
        return cls(
            workload_image=os.environ.get("DPO_WORKLOAD_IMAGE", f"{WORKLOAD_IMAGE_REPOSITORY}:{__version__}"),
            nim_image=os.environ.get("DPO_NIM_IMAGE", "nvcr.io/nim/meta/llama-3.2-1b-instruct:latest"),
            probe_url_template=os.environ.get("DPO_PROBE_URL_TEMPLATE", cls.probe_url_template),
            pod_security_level=os.environ.get("DPO_POD_SECURITY_LEVEL", "restricted").strip() or "restricted",
            allowed_tolerations=_listed("DPO_ALLOWED_TOLERATIONS", DEFAULT_TOLERATIONS),
            allowed_node_selectors=_listed("DPO_ALLOWED_NODE_SELECTORS", DEFAULT_NODE_SELECTORS),
        )
