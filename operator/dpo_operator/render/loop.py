"""The objects a DPOLoop creates (pure builders): the serving ModelDeployment (when it creates one) and each round's
DPOCollection and DPOTrainingJob. The gate's candidate ModelDeployment and DPOEvaluation are the training job's
(``deployOnCompletion.promotion``).

Names are derived from the loop's name and the round number, so a restarted operator finds what it created.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from dpo_operator.api import API_VERSION
from dpo_operator.api import collection as collection_api
from dpo_operator.api import deployment as deployment_api
from dpo_operator.api import training as training_api
from dpo_operator.api.common import PvcLocation
from dpo_operator.api.loop import KIND, AdapterInit, DPOLoopSpec, ReferencePolicy
from dpo_operator.api.training import FinetuningType
from dpo_operator.kube.naming import LABEL_PREFIX, child_name, label_value, labels_for, owner_reference
from dpo_operator.runtime.errors import InvalidSpec, describe_validation_error

LOOP_LABEL, ROUND_LABEL = f"{LABEL_PREFIX}/loop", f"{LABEL_PREFIX}/round"


@dataclass(frozen=True)
class RoundNames:
    collection: str
    training_job: str
    evaluation: str


def names(loop: str, round_number: int) -> RoundNames:
    training = child_name(loop, f"r{round_number}-train")
    return RoundNames(collection=child_name(loop, f"r{round_number}-collect"), training_job=training,
                      evaluation=child_name(training, "gate"))


@dataclass(frozen=True)
class Policy:
    """The policy a round starts from: the base model, and the promoted round's output when there is one."""

    promoted_job: str | None = None       # the DPOTrainingJob whose model serves (None: the base model)
    trained: PvcLocation | None = None    # its output (all weights, or a LoRA adapter)

    def describe(self, spec: DPOLoopSpec) -> str:
        return f"DPOTrainingJob {self.promoted_job}" if self.promoted_job else f"base model {spec.training.model.name}"


def pvc_url(location: PvcLocation) -> str:
    return f"pvc://{location.claim_name}/{location.path.strip('/')}".rstrip("/")


def _labels(body: Any, round_number: int | None, component: str) -> dict[str, str]:
    labels = {**labels_for(KIND.kind, body["metadata"]["name"], component),
              LOOP_LABEL: label_value(body["metadata"]["name"])}
    if round_number is not None:
        labels[ROUND_LABEL] = str(round_number)
    return labels


def _metadata(body: Any, name: str, round_number: int, component: str) -> dict[str, Any]:
    return {"name": name, "namespace": body["metadata"]["namespace"], "labels": _labels(body, round_number, component),
            "ownerReferences": [owner_reference(KIND.kind, body)]}


def api(model: BaseModel) -> dict[str, Any]:
    """What was set in ``model``, in API form: defaults stay unset, so the API server (and, for LoRA rank and alpha
    with model.adapter, the saved adapter) decides them as for a hand-written child."""
    return model.model_dump(by_alias=True, exclude_none=True, exclude_unset=True, mode="json")


def _checked(model: type[BaseModel], spec: dict[str, Any], field: str) -> dict[str, Any]:
    """``spec`` as the child kind accepts it, else InvalidSpec naming the loop's field."""
    try:
        return api(model.model_validate(spec))
    except ValidationError as exc:
        raise InvalidSpec(describe_validation_error(exc, field)) from None


def check(spec: DPOLoopSpec) -> None:
    """InvalidSpec (naming the field) for a loop no round of which could run."""
    training = spec.training
    if training.backend != training_api.Backend.LOCAL.value:
        raise InvalidSpec("spec.training.backend: a DPOLoop trains with the local backend (each round starts from "
                          "the previous round's weights or adapter on a PVC; the customizer backend cannot)")
    if training.local is None or training.local.output is None:
        raise InvalidSpec("spec.training.local.output is required: each round's model goes to "
                          "<output.path>/<loop>-r<N>-train/final, where the next round starts from")
    all_weights = training.hyperparameters.finetuning_type == FinetuningType.ALL_WEIGHTS.value
    if all_weights and spec.adapter_init == AdapterInit.BASE.value:
        raise InvalidSpec("spec.adapterInit: base applies to LoRA (a fresh adapter each round); all_weights training "
                          "always continues from the current policy's weights: set adapterInit previous")
    if not all_weights and spec.adapter_init == AdapterInit.BASE.value \
            and spec.reference == ReferencePolicy.PREVIOUS_ROUND.value:
        raise InvalidSpec("spec.reference: previousRound with adapterInit base would make the reference the base "
                          "model plus the previous adapter, which a round's training cannot load as its reference; "
                          "set reference: base, or adapterInit: previous")
    if spec.serving.template is None and spec.serving.candidate is None:
        return
    if training.model.pvc is None and spec.serving.template is not None:
        raise InvalidSpec("spec.serving.template: the loop serves the base model (training.model) from a PVC, but "
                          "training.model has no pvc; set training.model.pvc, or create the serving ModelDeployment "
                          "yourself and drop serving.template")


def check_children(body: Any, spec: DPOLoopSpec) -> None:
    """InvalidSpec now, before anything runs, for a template the round's DPOCollection or DPOTrainingJob would be
    refused with (the child kinds' own rules, naming the loop's field)."""
    collection(body, spec, 1, "http://serving.invalid/v1", "policy")
    deploy = spec.serving.candidate or spec.serving.template
    training_job(body, spec, 1, Policy(), api(deploy) if deploy is not None else {})


def serving_deployment(body: Any, spec: DPOLoopSpec, policy: Policy) -> dict[str, Any]:
    """The serving ModelDeployment of the current policy (round 0: the base model), created when missing. Not owned
    by the loop: deleting the loop leaves the promoted policy served (it carries the loop's labels only)."""
    assert spec.serving.template is not None
    model = spec.training.model
    assert model.pvc is not None
    served = {"trainingJobRef": {"name": policy.promoted_job}} if policy.promoted_job else \
        {"explicit": {"name": model.name, "pvc": model.pvc.to_api()}}
    return {"apiVersion": API_VERSION, "kind": deployment_api.KIND.kind,
            "metadata": {"name": spec.serving.name, "namespace": body["metadata"]["namespace"],
                         "labels": _labels(body, None, "serving")},
            "spec": _checked(deployment_api.ModelDeploymentSpec,
                             {**api(spec.serving.template), "model": served}, "spec.serving.template")}


def collection(body: Any, spec: DPOLoopSpec, round_number: int, endpoint: str, served_model: str) -> dict[str, Any]:
    """The round's DPOCollection: sampling from the serving deployment (the current policy), its own output
    directory, the seed offset by the round."""
    name = names(body["metadata"]["name"], round_number).collection
    template = api(spec.collection)
    output = spec.collection.output
    llm = {**template.pop("llm", {}), "baseUrl": endpoint}
    llm.setdefault("model", served_model)
    template.pop("output", None)
    result = {**template, "llm": llm, "seed": spec.collection.seed + round_number - 1,
              "output": {"pvc": {"claimName": output.claim_name, "path": f"{output.path.rstrip('/')}/{name}"}}}
    return {"apiVersion": API_VERSION, "kind": collection_api.KIND.kind,
            "metadata": _metadata(body, name, round_number, "collection"),
            "spec": _checked(collection_api.DPOCollectionSpec, result, "spec.collection")}


def candidate_template(spec: DPOLoopSpec, serving: dict[str, Any] | None) -> dict[str, Any]:
    """How candidates are served: serving.candidate, else serving.template, else the serving deployment's spec."""
    if spec.serving.candidate is not None:
        return api(spec.serving.candidate)
    if spec.serving.template is not None:
        return api(spec.serving.template)
    assert serving is not None
    return {k: v for k, v in (serving.get("spec") or {}).items() if k != "model"}


def starting_model(spec: DPOLoopSpec, policy: Policy) -> dict[str, Any]:
    """The round's spec.model: the base model, continued from the current policy (all weights: its weights;
    LoRA with adapterInit previous: its adapter)."""
    base = api(spec.training.model)
    if policy.trained is None:
        return base
    if spec.training.hyperparameters.finetuning_type == FinetuningType.ALL_WEIGHTS.value:
        return {"name": base["name"], "pvc": policy.trained.to_api()}
    if spec.adapter_init == AdapterInit.PREVIOUS.value:
        return {**base, "adapter": policy.trained.to_api()}
    return base


def reference_model(spec: DPOLoopSpec, policy: Policy) -> dict[str, Any] | None:
    """The round's spec.referenceModel: unset (the policy training starts from) unless reference is base and the
    round starts from a trained policy."""
    if spec.reference != ReferencePolicy.BASE.value or policy.trained is None:
        return None
    base = api(spec.training.model)
    return {key: base[key] for key in ("name", "pvc", "hub") if key in base}


@dataclass(frozen=True)
class Start:
    """What a round's training starts from, for its lineage."""

    model: str
    adapter: str | None
    reference: str


def start_of(spec: DPOLoopSpec, policy: Policy, job_spec: dict[str, Any]) -> Start:
    """The starting model, adapter and DPO reference of a round's job spec, in words."""
    model, base = job_spec["model"], f"base model {spec.training.model.name}"
    pvc = model.get("pvc")
    weights = pvc_url(PvcLocation.model_validate(pvc)) if policy.trained is not None and pvc is not None \
        and PvcLocation.model_validate(pvc) == policy.trained else base
    adapter = pvc_url(PvcLocation.model_validate(model["adapter"])) if model.get("adapter") else None
    reference = base if job_spec.get("referenceModel") else policy.describe(spec)
    return Start(model=weights, adapter=adapter, reference=reference)


def training_job(body: Any, spec: DPOLoopSpec, round_number: int, policy: Policy,
                 deploy: dict[str, Any]) -> dict[str, Any]:
    """The round's DPOTrainingJob: the round's collection, from the current policy, promoted through the gate into
    the serving deployment."""
    round_names = names(body["metadata"]["name"], round_number)
    template = api(spec.training)
    dataset = {"collectionRef": {"name": round_names.collection}, **template.pop("dataset", {})}
    result: dict[str, Any] = {
        **template, "model": starting_model(spec, policy), "dataset": dataset,
        "deployOnCompletion": {**deploy, "promotion": {"evaluation": api(spec.evaluation),
                                                       "replaces": {"name": spec.serving.name}}}}
    reference = reference_model(spec, policy)
    if reference is not None:
        result["referenceModel"] = reference
    return {"apiVersion": API_VERSION, "kind": training_api.KIND.kind,
            "metadata": _metadata(body, round_names.training_job, round_number, "training"),
            "spec": _checked(training_api.DPOTrainingJobSpec, result, "spec.training")}
