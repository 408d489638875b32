"""What a ModelDeployment serves: resolved from a DPOTrainingJob's result or given explicitly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpo_operator.api import training as training_api
from dpo_operator.api.common import Phase, PvcLocation
from dpo_operator.api.deployment import ModelDeploymentSpec
from dpo_operator.api.promotion import PromotionStep


class ModelNotReady(Exception):
    """The training job has not produced its model yet (the deployment waits)."""


class ModelUnavailable(Exception):
    """The referenced model cannot be served this way (the deployment fails; the message says why)."""


@dataclass(frozen=True)
class ServedModel:
    served_name: str                   # what clients put in "model" (the adapter's name for LoRA)
    base_name: str                     # the base model (NIM's own model, or a name for the weights below)
    weights: PvcLocation | None = None     # full weights on a PVC (NIM_MODEL_NAME)
    adapter: PvcLocation | None = None     # a LoRA adapter on a PVC (under NIM_PEFT_SOURCE)
    remote_model: str | None = None        # a NeMo model (namespace/name@version) for the nemo backend
    remote_base: str | None = None         # a NeMo LoRA adapter's base model: its NIM serves the adapter
    nim_builtin: bool = False              # no weights given: the NIM image serves its own model


def customizer_base_model(config: str) -> str:
    """The base model of a Customizer config (``meta/llama-3.2-1b-instruct@v1.0.0+A100`` → ``meta/llama-3.2-1b-instruct``)."""
    return config.split("@", 1)[0]


def parse_pvc_url(url: str) -> PvcLocation:
    """``pvc://claim/some/path`` → PvcLocation."""
    if not url.startswith("pvc://"):
        raise ValueError(url)
    claim, _, path = url.removeprefix("pvc://").partition("/")
    return PvcLocation(claim_name=claim, path="/" + path)


def gate_allows(status: dict[str, Any], ref: str, deployment: str | None) -> bool:
    """Whether the job's promotion gate lets ``deployment`` serve its model now: its candidate while it is
    evaluated, the promotion target once the verdict Passed; nobody once it was refused."""
    promotion = status.get("promotion") or {}
    step = promotion.get("step")
    if step == PromotionStep.NOT_PROMOTED.value:
        raise ModelUnavailable(f"DPOTrainingJob {ref} was not promoted: {promotion.get('message', '')}")
    if step in (PromotionStep.SERVING_CANDIDATE.value, PromotionStep.EVALUATING.value):
        return deployment is not None and deployment == promotion.get("candidateDeployment")
    if step == PromotionStep.PROMOTING.value:
        return deployment is not None and deployment == promotion.get("target")
    return status.get("phase") == Phase.SUCCEEDED.value


def from_training_job(job: dict[str, Any] | None, ref: str, served_name: str | None,
                      deployment: str | None = None) -> ServedModel:
    """The model of DPOTrainingJob ``ref`` as ModelDeployment ``deployment`` serves it."""
    if job is None:
        raise ModelNotReady(f"DPOTrainingJob {ref} does not exist (yet)")
    status = job.get("status") or {}
    phase = status.get("phase")
    if phase in (Phase.FAILED.value, Phase.CANCELLED.value):
        raise ModelUnavailable(f"DPOTrainingJob {ref} ended {phase}: {status.get('message', '')}")
    if not gate_allows(status, ref, deployment) or not status.get("outputModel"):
        step = (status.get("promotion") or {}).get("step")
        raise ModelNotReady(f"waiting for DPOTrainingJob {ref} to succeed (phase {phase or 'unknown'}"
                            + (f", promotion {step})" if step else ")"))
    spec = training_api.DPOTrainingJobSpec.model_validate(job["spec"])
    output = status["outputModel"]
    name = served_name or ref
    if spec.backend == training_api.Backend.CUSTOMIZER.value:
        if spec.hyperparameters.finetuning_type == training_api.FinetuningType.LORA.value:
            # an adapter: served by a NIM of the base model with the Entity Store as its PEFT source, under its
            # own entity name (NeMo names it; servedModelName cannot rename it)
            base = customizer_base_model(spec.model.name)
            return ServedModel(served_name=output, base_name=base, remote_model=output, remote_base=base)
        return ServedModel(served_name=served_name or output, base_name=spec.model.name, remote_model=output)
    location = parse_pvc_url(output)
    if spec.hyperparameters.finetuning_type == training_api.FinetuningType.LORA.value:
        return ServedModel(served_name=name, base_name=spec.model.name, weights=spec.model.pvc, adapter=location)
    return ServedModel(served_name=name, base_name=spec.model.name, weights=location)


def resolve(spec: ModelDeploymentSpec, read_training_job: Any, deployment: str | None = None) -> ServedModel:
    if spec.model.explicit is not None:
        explicit = spec.model.explicit
        if explicit.lora_adapter is not None:
            return ServedModel(served_name=spec.served_model_name or f"{explicit.name}-lora", base_name=explicit.name,
                               weights=explicit.pvc, adapter=explicit.lora_adapter)
        return ServedModel(served_name=spec.served_model_name or explicit.name, base_name=explicit.name,
                           weights=explicit.pvc, remote_model=explicit.name if explicit.pvc is None else None,
                           nim_builtin=explicit.pvc is None)
    assert spec.model.training_job_ref is not None
    ref = spec.model.training_job_ref.name
    return from_training_job(read_training_job(ref), ref, spec.served_model_name, deployment)
