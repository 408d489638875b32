"""Operator-wide settings, read once from the environment at start-up (the Helm chart sets them)."""

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

# worker threads per lane: each kind (and the Customizer backend apart from local training) has its own, so slow
# remote calls of one kind never hold another's work; one namespace takes at most half of a lane
DEFAULT_LANES = {"collection": 8, "training": 8, "customizer": 8, "deployment": 8, "default": 2}


@dataclass(frozen=True)
class OperatorConfig:
    workload_image: str = f"{WORKLOAD_IMAGE_REPOSITORY}:{__version__}"
    nim_image: str = "nvcr.io/nim/meta/llama-3.2-1b-instruct:1.12.0"  # pinned: :latest moves under a running fleet
    data_root: str = "/data"
    # where the operator reaches a ModelDeployment's Service to check readiness; the in-cluster DNS name by
    # default (set it when the operator runs outside the cluster, e.g. behind kubectl port-forward)
    probe_url_template: str = "http://{name}.{namespace}.svc.cluster.local:{port}"
    # where workload pods (an evaluation) reach a ModelDeployment's Service; unset: its status.endpoint, the
    # in-cluster DNS name (the embedded clusters set it: their pods are local processes)
    workload_endpoint_url_template: str | None = None
    # the Pod Security Standard level every workload pod must meet, template overrides included
    # (chart: workloads.podSecurityLevel; restricted, baseline or privileged)
    pod_security_level: str = "restricted"
    # toleration keys and nodeSelector label keys ("key" any value, "key=value" that value, "*" anything) a
    # template may use (chart: workloads.allowedTolerations / workloads.allowedNodeSelectors)
    allowed_tolerations: tuple[str, ...] = field(default_factory=lambda: _split(DEFAULT_TOLERATIONS))
    allowed_node_selectors: tuple[str, ...] = field(default_factory=lambda: _split(DEFAULT_NODE_SELECTORS))
    lanes: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LANES))
    max_backoff_seconds: float = 300.0
    secret_retry_seconds: float = 60.0  # a missing Secret is looked for again at least this often
    conflict_retry_seconds: float = 1.0  # a status write refused as stale: decide again this soon
    kube_request_timeout: float = 30.0  # total seconds for one Kubernetes API call
    remote_call_deadline: float = 60.0  # total seconds for one NeMo call (connect, send, every read)
    probe_deadline: float = 5.0  # total seconds for a NIM readiness check (both requests)
    stalled_after_seconds: float = 300.0  # liveness: overdue work and no reconcile finished for this long
    # when objects are looked at again without an event
    collection_resync_seconds: float = 120.0  # a running collection (in case a Job or pod event was missed)
    training_resync_seconds: float = 60.0  # a running local training Job
    # a running collection's or training's pod log is read for progress at most this often (chart: progressInterval)
    progress_interval_seconds: float = 10.0
    queue_check_seconds: float = 10.0  # a Job Kueue holds (Workloads are read, not watched: no event comes)
    rollout_check_seconds: float = 5.0  # a ModelDeployment rolling out
    ready_check_seconds: float = 30.0  # a Ready ModelDeployment: does it stay so?
    max_poll_backoff_seconds: float = 600.0  # Customizer polls that fail back off up to this
    # cancelling/deleting remote work on delete: failed attempts before a Warning event (the finalizer stays until
    # it is confirmed, or a person removes it)
    remote_delete_attempts: int = 5
    # watch the NVIDIA NIM Operator's NIMServices/NIMCaches (chart: nimOperator.enabled; needs its CRDs and RBAC)
    watch_nim_operator: bool = True
    # the Prometheus endpoint (/metrics; chart: metrics.port); 0: none (a local run, the tests' default)
    metrics_port: int = 0

    @classmethod
    def from_env(cls) -> "OperatorConfig":
        env = os.environ
        return cls(
            workload_image=env.get("DPO_WORKLOAD_IMAGE", cls.workload_image),
            nim_image=env.get("DPO_NIM_IMAGE", cls.nim_image),
            probe_url_template=env.get("DPO_PROBE_URL_TEMPLATE", cls.probe_url_template),
            workload_endpoint_url_template=env.get("DPO_WORKLOAD_ENDPOINT_URL_TEMPLATE") or None,
            pod_security_level=env.get("DPO_POD_SECURITY_LEVEL", "restricted").strip() or "restricted",
            allowed_tolerations=_listed("DPO_ALLOWED_TOLERATIONS", DEFAULT_TOLERATIONS),
            allowed_node_selectors=_listed("DPO_ALLOWED_NODE_SELECTORS", DEFAULT_NODE_SELECTORS),
            kube_request_timeout=float(env.get("DPO_KUBE_REQUEST_TIMEOUT", cls.kube_request_timeout)),
            watch_nim_operator=env.get("DPO_NIM_OPERATOR", "true").strip().lower() not in ("false", "0", "no"),
            max_backoff_seconds=float(env.get("DPO_MAX_BACKOFF_SECONDS", cls.max_backoff_seconds)),
            progress_interval_seconds=float(env.get("DPO_PROGRESS_INTERVAL_SECONDS", cls.progress_interval_seconds)),
            metrics_port=int(env.get("DPO_METRICS_PORT") or cls.metrics_port),
            queue_check_seconds=float(env.get("DPO_QUEUE_CHECK_SECONDS", cls.queue_check_seconds)),
            rollout_check_seconds=float(env.get("DPO_ROLLOUT_CHECK_SECONDS", cls.rollout_check_seconds)),
        )
