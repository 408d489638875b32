"""Types shared by the three custom resources: pod knobs, secret references, status and conditions.

Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python.
These models are the single source of truth: the CRDs under ``crds/`` are generated from them.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from dpo_operator.api.schema_hints import int_or_string, preserve_unknown

GROUP = "dpo.ai"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class ApiModel(BaseModel):
    """Base for every API object: camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
    )

    def to_api(self) -> dict[str, Any]:
        """The object as it appears in the Kubernetes API (camelCase, unset fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


Quantity = Annotated[str | int, int_or_string()]
"""A Kubernetes resource quantity such as ``"16Gi"``, ``"500m"`` or ``1``."""

FreeForm = Annotated[dict[str, Any], preserve_unknown()]
"""A Kubernetes core object passed through as is (affinity, toleration, envFrom source...)."""


class SecretKeyRef(ApiModel):
    """A key of a Secret in the resource's own namespace. Secrets are never copied into specs or status."""

    name: str = Field(min_length=1, description="Name of the Secret.")
    key: str = Field(min_length=1, description="Key inside the Secret.")


class LocalObjectReference(ApiModel):
    """A reference to an object by name in the resource's own namespace."""

    name: str = Field(min_length=1, description="Name of the object.")


class ResourceRequirements(ApiModel):
    """Container resources; request GPUs with ``nvidia.com/gpu``."""

    limits: dict[str, Quantity] | None = Field(default=None, description=(
        "Most of each resource the container may use (core/v1 ResourceRequirements.limits), e.g. "
        "{memory: 16Gi, nvidia.com/gpu: 1}."))
    requests: dict[str, Quantity] | None = Field(default=None, description=(
        "Resources the scheduler reserves for the container (core/v1 ResourceRequirements.requests); the limits "
        "when unset, as Kubernetes defaults them."))


class EnvVar(ApiModel):
    """An extra environment variable of the main container (core/v1 EnvVar)."""

    name: str = Field(min_length=1, description="Variable name.")
    value: str | None = Field(default=None, description="Literal value; use valueFrom for a Secret's key.")
    value_from: FreeForm | None = Field(default=None, description="A core/v1 EnvVarSource.")


class ImagePullPolicy(str, Enum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class PodOptions(ApiModel):
    """Knobs of the pods the operator launches (collection, training and serving pods alike)."""

    image: str | None = Field(default=None, description="Container image; the operator's configured default when unset.")
    image_pull_policy: ImagePullPolicy = Field(default=ImagePullPolicy.IF_NOT_PRESENT,
                                               description="When the kubelet pulls the image (core/v1 semantics).")
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, description="Secrets (type kubernetes.io/dockerconfigjson) for pulling from a private registry.")
    resources: ResourceRequirements | None = None
    node_selector: dict[str, str] | None = Field(default=None, description="Node labels the pods must run on.")
    tolerations: list[FreeForm] | None = Field(default=None, description="core/v1 Tolerations of the pods (e.g. for "
                                                                         "tainted GPU nodes).")
    affinity: FreeForm | None = Field(default=None, description="core/v1 Affinity of the pods, passed through.")
    priority_class_name: str | None = Field(default=None, description="PriorityClass of the pods.")
    service_account_name: str | None = Field(default=None, description=(
        "Service account of the pods; only those the operator's allowedServiceAccounts setting lists (none by "
        "default: the namespace's default account, without its token mounted)."))
    security_context: FreeForm | None = Field(default=None, description=(
        "Pod securityContext (core/v1 PodSecurityContext); replaces the default, which meets the 'restricted' Pod "
        "Security Standard (non-root uid 1000, RuntimeDefault seccomp)."))
    container_security_context: FreeForm | None = Field(default=None, description=(
        "securityContext of the main container (core/v1 SecurityContext); replaces the default (no privilege "
        "escalation, all capabilities dropped)."))
    env: list[EnvVar] | None = Field(default=None, description=(
        "Extra environment variables of the main container, after the operator's own."))
    env_from: list[FreeForm] | None = Field(default=None, description=(
        "core/v1 EnvFromSource entries (whole ConfigMaps or Secrets as variables) of the main container."))
    labels: dict[str, str] | None = Field(default=None, description="Extra labels for the pods.")
    annotations: dict[str, str] | None = Field(default=None, description="Extra annotations for the pods.")
    termination_grace_period_seconds: int | None = Field(default=None, ge=0, le=86400, description=(
        "Seconds a pod has between SIGTERM (preemption, suspension, eviction) and SIGKILL. The trainer saves a "
        "checkpoint on SIGTERM: training pods get 300 when unset, other pods Kubernetes' default (30)."))


class ConditionStatus(str, Enum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """A metav1.Condition."""

    type: str = Field(description="Condition type, e.g. Progressing, Succeeded, Ready, Failed, Suspended.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase machine-readable reason.")
    message: str = Field(default="", description="Human-readable details.")
    last_transition_time: str = Field(description="RFC 3339 time of the last status change.")
    observed_generation: int | None = Field(default=None, description="metadata.generation the condition was set for.")


class Phase(str, Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    PROGRESSING = "Progressing"
    READY = "Ready"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    SUSPENDED = "Suspended"
    QUEUED = "Queued"


class CommonStatus(ApiModel):
    """Status fields every kind has."""

    phase: Phase | None = Field(default=None, description="Where the resource is in its life cycle.")
    reason: str | None = Field(default=None, description=(
        "CamelCase reason of the current phase (the reason of the condition that explains it)."))
    message: str | None = Field(default=None, description="Human-readable summary of the current phase.")
    observed_generation: int | None = Field(default=None, description="metadata.generation this status reflects.")
    conditions: list[Condition] | None = Field(default=None, description="Standard metav1.Conditions.")
    start_time: str | None = Field(default=None, description="RFC 3339 time the resource left Pending (or Queued).")
    completion_time: str | None = Field(default=None, description="RFC 3339 time it reached a terminal phase.")


NO_BACKSTEPS = "a path inside the volume: no '..' segments"
# the same rule at admission (CEL, RE2) and in the operator (pydantic, below): a ".." segment anywhere
BACKSTEP_PATTERN = "(^|/)[.][.](/|$)"


class PvcLocation(ApiModel):
    """A directory on a PersistentVolumeClaim."""

    claim_name: str = Field(min_length=1, description="Name of the PersistentVolumeClaim (same namespace).")
    path: str = Field(default="/", max_length=4096, description=(
        "Directory inside the volume ('/' is its root; '..' segments are refused: the path may not leave it)."),
        json_schema_extra={"x-kubernetes-validations": [
            {"rule": f"!self.matches('{BACKSTEP_PATTERN}')", "message": f"must be {NO_BACKSTEPS}"}]})

    @field_validator("path")
    @classmethod
    def _inside(cls, path: str) -> str:
        if ".." in path.split("/"):
            raise ValueError(f"must be {NO_BACKSTEPS}")
        return path


class HubLocation(ApiModel):
    """A dataset or model repository on a Hugging Face Hub-compatible server (e.g. NeMo Datastore)."""

    endpoint: str = Field(min_length=1, description="Hub API root, e.g. http://nemo-datastore:3000/v1/hf.")
    repo_id: str = Field(pattern=r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$", description="namespace/name.")
    revision: str = Field(default="main", description="Branch, tag or commit of the repository.")
    token_secret_ref: SecretKeyRef | None = Field(default=None, description="Hub token (HF_TOKEN), when the server "
                                                                           "needs one.")


class StorageLocation(ApiModel):
    """Where a dataset or model lives: exactly one of ``pvc`` or ``hub``."""

    pvc: PvcLocation | None = None
    hub: HubLocation | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "StorageLocation":
        if (self.pvc is None) == (self.hub is None):
            raise ValueError("set exactly one of 'pvc' or 'hub'")
        return self

    def describe(self) -> str:
        if self.pvc is not None:
            return f"pvc://{self.pvc.claim_name}/{self.pvc.path.strip('/')}".rstrip("/")
        assert self.hub is not None
        return f"{self.hub.endpoint.rstrip('/')}/datasets/{self.hub.repo_id}@{self.hub.revision}"


KUEUE_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"


def queue_name_field() -> Any:
    """``spec.queueName``: the Kueue LocalQueue the resource's Jobs are submitted to."""
    return Field(default=None, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description=(
        "Kueue LocalQueue (in this namespace) the Jobs are queued in: they carry the label "
        "kueue.x-k8s.io/queue-name, Kueue admits them against its quota (the whole gang of a multi-node run as one "
        "Workload), and suspends them to preempt. Unset: no queue label (a Kueue that manages every Job still may "
        "hold them; the operator never un-suspends a Job it did not suspend)."),
        json_schema_extra={"x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": "queueName is immutable (Kueue allows no change once admitted)"}]})


def workload_priority_class_field() -> Any:
    """``spec.workloadPriorityClassName``: Kueue's WorkloadPriorityClass of the resource's Jobs."""
    return Field(default=None, max_length=253, pattern=KUEUE_NAME, description=(
        "Kueue WorkloadPriorityClass of the Jobs (label kueue.x-k8s.io/priority-class): orders the queue and decides "
        "who preempts whom. Only with queueName. Not the pods' PriorityClass (template.priorityClassName)."),
        json_schema_extra={"x-kubernetes-validations": [
            {"rule": "self == oldSelf", "message": "workloadPriorityClassName is immutable"}]})


class QueueStatus(ApiModel):
    """Where the resource's Job stands in Kueue (read from its Workload when the operator may read Workloads)."""

    name: str = Field(description="The LocalQueue (spec.queueName), or empty when Kueue holds an unlabelled Job.")
    workload: str | None = Field(default=None, description="Name of the Job's Kueue Workload.")
    admitted: bool = Field(default=False, description="Kueue admitted the Job (its quota is reserved).")
    cluster_queue: str | None = Field(default=None, description="ClusterQueue that admitted the Job.")
    reason: str | None = Field(default=None, description="Kueue's reason on the Workload (e.g. Pending, Preempted).")
    message: str | None = Field(default=None, description="Kueue's message on the Workload.")
    preemptions: int = Field(default=0, description=(
        "Times Kueue preempted the Job (evicted it to free quota); training resumes from its newest checkpoint."))


class JobControls(ApiModel):
    """batch/v1 Job knobs for the pods a resource launches."""

    backoff_limit: int = Field(default=2, ge=0, le=100, description=(
        "Pod retries before the Job (and the resource) fails (batch/v1 backoffLimit). A failure the pod reports "
        "as permanent fails at once; pods evicted or preempted by the cluster do not count."))
    active_deadline_seconds: int | None = Field(default=None, ge=1, description="Fail when running longer than this.")
    ttl_seconds_after_finished: int | None = Field(default=86400, ge=0, description=(
        "Seconds a finished Job and its pods are kept (for logs) before Kubernetes deletes them; the resource and "
        "its status stay."))

