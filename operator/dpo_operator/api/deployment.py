"""ModelDeployment: serve a trained model with an NVIDIA NIM."""

from __future__ import annotations

from enum import Enum

from pydantic import ConfigDict, Field, model_validator

from dpo_operator.api.common import (
    ApiModel,
    CommonStatus,
    FreeForm,
    LocalObjectReference,
    PodOptions,
    PvcLocation,
    SecretKeyRef,
)
from dpo_operator.api.kinds import KindInfo, PrinterColumn, status_columns
from dpo_operator.api.schema_hints import nested


class ExplicitModel(ApiModel):
    """A model the NIM serves that did not come from a DPOTrainingJob."""

    name: str = Field(min_length=1, description="Served model name (or the base model a LoRA adapter extends).")
    pvc: PvcLocation | None = Field(default=None, description="Weights directory mounted into the NIM.")
    lora_adapter: PvcLocation | None = Field(default=None, description="A LoRA adapter directory to serve on top.")


class ModelRef(ApiModel):
    """What to serve: exactly one of trainingJobRef or explicit."""

    training_job_ref: LocalObjectReference | None = Field(default=None, description=(
        "A DPOTrainingJob in the same namespace: its output model is served once it has Succeeded."))
    explicit: ExplicitModel | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "ModelRef":
        if (self.training_job_ref is None) == (self.explicit is None):
            raise ValueError("model: set exactly one of 'trainingJobRef' or 'explicit'")
        return self


class DeploymentBackend(str, Enum):
    KUBERNETES = "kubernetes"
    NEMO = "nemo"
    NIM_OPERATOR = "nimOperator"


class ServiceType(str, Enum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class NemoApiGeneration(str, Enum):
    """Which NeMo API the backend speaks: v1 (NeMo Microservices ≤25.x) or v2 (the NeMo platform, 26.x)."""

    V1 = "v1"
    V2 = "v2"


class NemoDeploymentBackend(ApiModel):
    """NeMo Deployment Management settings (backend nemo)."""

    url: str = Field(min_length=1, description=(
        "NeMo Deployment Management root (the Entity Store URL in v1); with api v2 the NeMo platform's base URL "
        "(its /apis/models and /apis/inference-gateway routes)."))
    api_version: NemoApiGeneration = Field(default=NemoApiGeneration.V1, description=(
        "v1: NeMo Microservices Deployment Management (/v1/deployment/...); v2: the NeMo platform (26.x): a "
        "deployment config and deployment in workspace, served through its inference gateway."))
    namespace: str = Field(default="dpo", min_length=1, description=(
        "NeMo namespace of the deployment config and model deployment (api v1)."))
    workspace: str = Field(default="default", min_length=1, max_length=255, pattern=r"^[\w\-.]+$", description=(
        "NeMo platform workspace of the deployment config and deployment, and of a model named without one "
        "(api v2)."))
    image_name: str = Field(default="nvcr.io/nim/meta/llama-3.2-1b-instruct", description=(
        "NIM image Deployment Management runs (nim_deployment.image_name); it must match the served model."))
    image_tag: str = Field(default="1.12.0", min_length=1, description=(
        "Tag of that image (nim_deployment.image_tag); pinned by default, as :latest moves under a running fleet."))
    gpu: int = Field(default=1, ge=0, description="GPUs of the NIM (nim_deployment.gpu).")
    api_key_secret_ref: SecretKeyRef | None = Field(default=None, description=(
        "Bearer token for the NeMo services, when they need one."))
    poll_interval_seconds: float = Field(default=15.0, ge=1.0, description=(
        "Not used yet: the operator checks a rollout every 5 s and a Ready deployment every 30 s."))


class CacheSource(str, Enum):
    NGC = "ngc"
    HUGGING_FACE = "huggingFace"


class NimCacheSettings(ApiModel):
    """A NIMCache the operator creates for a hub model (backend nimOperator, model.explicit without a pvc)."""

    source: CacheSource = Field(default=CacheSource.NGC, description=(
        "Where the NIM Operator downloads the model from: ngc (the NIM's model profiles, with ngcApiKeySecretRef) or "
        "huggingFace (model.explicit.name is the repository, organisation/name, with hfTokenSecretRef)."))
    size: str = Field(default="50Gi", min_length=1, description="Size of the PVC the NIM Operator creates for the cache.")
    storage_class: str | None = Field(default=None, description="StorageClass of that PVC; the cluster default when unset.")
    volume_access_mode: str = Field(default="ReadWriteOnce", description=(
        "Access mode of that PVC (ReadWriteMany lets replicas on several nodes share it)."))
    profiles: list[str] | None = Field(default=None, description="NGC model profiles to cache; all that fit when unset.")
    model_puller: str | None = Field(default=None, description=(
        "Image that downloads the model; the NIM image for ngc, required for huggingFace."))
    pull_secret: str = Field(default="ngc-secret", min_length=1, description=(
        "Image pull Secret (docker config) for the model puller image."))
    hf_endpoint: str = Field(default="https://huggingface.co", pattern=r"^https?://", description=(
        "Hugging Face Hub endpoint (source huggingFace)."))
    hf_token_secret_ref: SecretKeyRef | None = Field(default=None, description=(
        "Secret with the Hugging Face token under the key HF_TOKEN (the NIM Operator's convention); required for "
        "source huggingFace."))


class NimAutoscaling(ApiModel):
    """A HorizontalPodAutoscaler the NIM Operator manages for the NIMService (spec.scale.hpa)."""

    min_replicas: int = Field(default=1, ge=1, description="Fewest NIM pods.")
    max_replicas: int = Field(ge=1, description="Most NIM pods.")
    metrics: list[FreeForm] | None = Field(default=None, description=(
        "autoscaling/v2 MetricSpec entries, passed through (the HPA's default, CPU, when unset)."))
    behavior: FreeForm | None = Field(default=None, description="autoscaling/v2 HorizontalPodAutoscalerBehavior.")


class NimOperatorBackend(ApiModel):
    """NVIDIA NIM Operator settings (backend nimOperator): the operator creates a NIMService (apps.nvidia.com)."""

    cache: NimCacheSettings | None = Field(default=None, description=(
        "Cache a hub model in a NIMCache first (model.explicit without a pvc); without it the NIM downloads at "
        "start-up into modelCachePvc or an emptyDir."))
    autoscaling: NimAutoscaling | None = Field(default=None, description=(
        "Scale with an HPA between minReplicas and maxReplicas instead of the fixed replicas."))
    gpus: int = Field(default=1, ge=0, description="nvidia.com/gpu limit of each NIM pod (when template.resources is unset).")
    peft_refresh_interval_seconds: int = Field(default=30, ge=1, description=(
        "NIM_PEFT_REFRESH_INTERVAL: how often the NIM looks for new LoRA adapters in its PEFT source."))
    service_monitor: bool = Field(default=False, description=(
        "Ask the NIM Operator for a Prometheus ServiceMonitor (spec.metrics; needs the Prometheus Operator)."))


class DeploymentTemplate(ApiModel):
    """A ModelDeployment spec without the model (a DPOTrainingJob fills that in)."""

    backend: DeploymentBackend = Field(default=DeploymentBackend.KUBERNETES, description=(
        "kubernetes: a NIM Deployment and Service in this namespace (the fields below); nemo: NeMo Deployment "
        "Management serves it (see nemo; replicas, port, serviceType, ngcApiKeySecretRef, modelCachePvc, "
        "sharedMemorySize and template do not apply); nimOperator: a NIMService for the NVIDIA NIM Operator (and a "
        "NIMCache for a hub model; see nimOperator)."))
    replicas: int = Field(default=1, ge=0, le=1000, description=(
        "NIM pods (kubernetes backend); 0 scales to zero (phase Suspended)."))
    served_model_name: str | None = Field(default=None, description="Name clients use; derived from the model when unset.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the NIM listens on (NIM_SERVER_PORT) and the "
                                                                "Service exposes.")
    service_type: ServiceType = Field(default=ServiceType.CLUSTER_IP, description="Type of the NIM's Service.")
    ngc_api_key_secret_ref: SecretKeyRef | None = Field(default=None, description=(
        "NGC API key (NGC_API_KEY) the NIM uses to download its model profile from NGC."))
    model_cache_pvc: str | None = Field(default=None, description="PVC mounted at /opt/nim/.cache for downloaded weights.")
    shared_memory_size: str = Field(default="16Gi", description="Size of the /dev/shm emptyDir.")
    readiness_timeout_seconds: int = Field(default=3600, ge=10, description=(
        "Wall-clock limit from the rollout start (as long as startupTimeoutSeconds by default: large models take "
        "that long to download and load)."))
    startup_timeout_seconds: int = Field(default=3600, ge=30, le=86400, description=(
        "How long a NIM pod may take to start (download and load its model) before the kubelet restarts it: the "
        "startup probe's periodSeconds x failureThreshold (kubernetes and nimOperator backends). The default covers "
        "a 70B model; keep readinessTimeoutSeconds at least as long for a first rollout."))
    nemo: NemoDeploymentBackend | None = Field(default=None, description="Required with backend nemo.")
    nim_operator: NimOperatorBackend | None = Field(default=None, description=(
        "Settings of backend nimOperator (its defaults when unset; ignored by the other backends)."))
    template: PodOptions = nested(PodOptions)

    @model_validator(mode="after")
    def _nemo_block(self) -> "DeploymentTemplate":
        if self.backend == DeploymentBackend.NEMO.value and self.nemo is None:
            raise ValueError("backend 'nemo' needs the 'nemo' block (url)")
        return self

    @property
    def nim_operator_settings(self) -> NimOperatorBackend:
        return self.nim_operator or NimOperatorBackend()

    @model_validator(mode="after")
    def _nim_operator_secrets(self) -> "DeploymentTemplate":
        """The NIM Operator reads fixed keys from the Secrets it is given by name (NGC_API_KEY, HF_TOKEN)."""
        if self.backend != DeploymentBackend.NIM_OPERATOR.value:
            return self
        ngc, cache = self.ngc_api_key_secret_ref, self.nim_operator_settings.cache
        if ngc is not None and ngc.key != "NGC_API_KEY":
            raise ValueError("ngcApiKeySecretRef.key: backend nimOperator passes the Secret by name and the NIM "
                             f"Operator reads its key NGC_API_KEY (not {ngc.key!r}): store the key under NGC_API_KEY")
        if cache is not None and cache.source == CacheSource.NGC.value and ngc is None:
            raise ValueError("nimOperator.cache with source ngc needs ngcApiKeySecretRef (the NGC key downloads it)")
        if cache is not None and cache.source == CacheSource.HUGGING_FACE.value:
            token = cache.hf_token_secret_ref
            if token is None or token.key != "HF_TOKEN":
                raise ValueError("nimOperator.cache.hfTokenSecretRef: source huggingFace needs a Secret whose key "
                                 "is HF_TOKEN (the NIM Operator's convention)")
            if not cache.model_puller:
                raise ValueError("nimOperator.cache.modelPuller: source huggingFace needs the image that downloads "
                                 "the model (e.g. the NIM image)")
        scale = self.nim_operator_settings.autoscaling
        if scale is not None and scale.min_replicas > scale.max_replicas:
            raise ValueError(f"nimOperator.autoscaling: minReplicas {scale.min_replicas} is above maxReplicas "
                             f"{scale.max_replicas}")
        return self


PLATFORM_EXPLICIT_MESSAGE = (
    "backend nemo with nemo.apiVersion v2 serves a model entity registered on the NeMo platform (model.explicit.name, "
    "workspace/name): weights or a LoRA adapter on a PVC cannot be served there; use backend kubernetes or "
    "nimOperator for them")


class ModelDeploymentSpec(DeploymentTemplate):
    """Serve a model with an NVIDIA NIM: the model, and how it is served."""

    # the operator deletes what it created remotely where it created it: the backend and NeMo location stay put
    model_config = ConfigDict(**DeploymentTemplate.model_config, json_schema_extra={"x-kubernetes-validations": [
        {"rule": "self.backend == oldSelf.backend",
         "message": "backend is immutable (the old backend's deployment would be left behind); create a new "
                    "ModelDeployment"},
        {"rule": "!has(oldSelf.nemo) || (has(self.nemo) && self.nemo.url == oldSelf.nemo.url"
                 " && self.nemo.namespace == oldSelf.nemo.namespace && self.nemo.apiVersion == oldSelf.nemo.apiVersion"
                 " && self.nemo.workspace == oldSelf.nemo.workspace)",
         "message": "nemo.url and nemo.namespace are immutable, as are nemo.apiVersion and nemo.workspace (the "
                    "operator deletes the NeMo deployment where it created it); create a new ModelDeployment"},
        {"rule": "!(self.backend == 'nemo' && has(self.nemo) && self.nemo.apiVersion == 'v2' && has(self.model.explicit)"
                 " && (has(self.model.explicit.pvc) || has(self.model.explicit.loraAdapter)))",
         "message": PLATFORM_EXPLICIT_MESSAGE}]})
    model: ModelRef = Field(description="The model to serve.")

    @model_validator(mode="after")
    def _platform_serves_entities(self) -> "ModelDeploymentSpec":
        """The NeMo platform (api v2) serves model entities it knows: weights on a PVC never reach it."""
        explicit = self.model.explicit
        if (self.backend == DeploymentBackend.NEMO.value and self.nemo is not None
                and self.nemo.api_version == NemoApiGeneration.V2.value and explicit is not None
                and (explicit.pvc is not None or explicit.lora_adapter is not None)):
            raise ValueError(f"model.explicit: {PLATFORM_EXPLICIT_MESSAGE}")
        return self


class ModelDeploymentStatus(CommonStatus):
    """What serves, and where."""

    endpoint: str | None = Field(default=None, description="OpenAI-compatible API root clients call.")
    served_model_name: str | None = Field(default=None, description="The model name to put in requests.")
    ready_replicas: int | None = Field(default=None, description="NIM replicas ready to serve.")
    rollout_start_time: str | None = Field(default=None, description="When the current revision began rolling out.")
    revision: str | None = Field(default=None, description="Hash of the spec that is rolling out or serving.")
    serving_revision: str | None = Field(default=None, description="Hash of the spec that last became Ready.")
    remote_deployment: str | None = Field(default=None, description="The NeMo model deployment serving (backend "
                                                                    "nemo).")
    failure_reason: str | None = Field(default=None, description="Why serving failed, when it did.")


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
        *status_columns(),
    ],
)
