"""ModelDeployment: serve a trained model with an NVIDIA NIM."""

from __future__ import annotations

from enum import Enum

from pydantic import ConfigDict, Field, model_validator

from dpo_operator.api.common import ApiModel, CommonStatus, LocalObjectReference, PodOptions, PvcLocation, SecretKeyRef
from dpo_operator.api.kinds import KindInfo, PrinterColumn
from dpo_operator.api.schema_hints import nested


class ExplicitModel(ApiModel):
    """A model the NIM serves that did not come from a DPOTrainingJob."""

    name: str = Field(min_length=1, description="Served model name (or the base model a LoRA adapter extends).")
    pvc: PvcLocation | None = Field(default=None, description="Weights directory mounted into the NIM.")
    lora_adapter: PvcLocation | None = Field(default=None, description="A LoRA adapter directory to serve on top.")


class ModelRef(ApiModel):
    training_job_ref: LocalObjectReference | None = None
    explicit: ExplicitModel | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "ModelRef":
        if (self.training_job_ref is None) == (self.explicit is None):
            raise ValueError("model: set exactly one of 'trainingJobRef' or 'explicit'")
        return self


class DeploymentBackend(str, Enum):
    KUBERNETES = "kubernetes"
    NEMO = "nemo"


class ServiceType(str, Enum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class NemoDeploymentBackend(ApiModel):
    url: str = Field(min_length=1, description="NeMo Deployment Management root (the Entity Store URL in v1).")
    namespace: str = Field(default="dpo", min_length=1)
    image_name: str = Field(default="nvcr.io/nim/meta/llama-3.2-1b-instruct")
    image_tag: str = Field(default="latest")
    gpu: int = Field(default=1, ge=0)
    api_key_secret_ref: SecretKeyRef | None = None
    poll_interval_seconds: float = Field(default=15.0, ge=1.0)


class DeploymentTemplate(ApiModel):
    """A ModelDeployment spec without the model (a DPOTrainingJob fills that in)."""

    backend: DeploymentBackend = DeploymentBackend.KUBERNETES
    replicas: int = Field(default=1, ge=0, le=1000)
    served_model_name: str | None = Field(default=None, description="Name clients use; derived from the model when unset.")
    port: int = Field(default=8000, ge=1, le=65535)
    service_type: ServiceType = ServiceType.CLUSTER_IP
    ngc_api_key_secret_ref: SecretKeyRef | None = None
    model_cache_pvc: str | None = Field(default=None, description="PVC mounted at /opt/nim/.cache for downloaded weights.")
    shared_memory_size: str = Field(default="16Gi", description="Size of the /dev/shm emptyDir.")
    readiness_timeout_seconds: int = Field(default=1800, ge=10, description="Wall-clock limit from the rollout start.")
    nemo: NemoDeploymentBackend | None = None
    template: PodOptions = nested(PodOptions)

    @model_validator(mode="after")
    def _nemo_block(self) -> "DeploymentTemplate":
        if self.backend == DeploymentBackend.NEMO.value and self.nemo is None:
            raise ValueError("backend 'nemo' needs the 'nemo' block (url)")
        return self


class ModelDeploymentSpec(DeploymentTemplate):
    # the operator deletes what it created remotely where it created it: the backend and NeMo location stay put
    model_config = ConfigDict(**DeploymentTemplate.model_config, json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self.backend == oldSelf.backend",
         "message": "backend is immutable (the old backend's deployment would be left behind); create a new "
                    "ModelDeployment"},
        {"rule": "!has(oldSelf.nemo) || (has(self.nemo) && self.nemo.url == oldSelf.nemo.url"
                 " && self.nemo.namespace == oldSelf.nemo.namespace)",
         "message": "nemo.url and nemo.namespace are immutable (the operator deletes the NeMo deployment where it "
                    "created it); create a new ModelDeployment"}]})
    model: ModelRef


class ModelDeploymentStatus(CommonStatus):
    endpoint: str | None = None
    served_model_name: str | None = None
    ready_replicas: int | None = None
    rollout_start_time: str | None = Field(default=None, description="When the current revision began rolling out.")
    revision: str | None = Field(default=None, description="Hash of the spec that is rolling out or serving.")
    serving_revision: str | None = Field(default=None, description="Hash of the spec that last became Ready.")
    remote_deployment: str | None = None
    failure_reason: str | None = None


KIND = KindInfo(
    kind="ModelDeployment",
    plural="modeldeployments",
    singular="modeldeployment",
    short_names=["dpomd"],
    spec_model=ModelDeploymentSpec,
    status_model=ModelDeploymentStatus,
    printer_columns=[
        PrinterColumn("Phase", "string", ".status.phase"),
        PrinterColumn("Ready", "integer", ".status.readyReplicas"),
        PrinterColumn("Model", "string", ".status.servedModelName"),
        PrinterColumn("Endpoint", "string", ".status.endpoint", priority=1),
    ],
)
