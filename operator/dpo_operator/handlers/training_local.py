"""DPOTrainingJob, ``local`` backend: our trainer in GPU pods (an Indexed Job + headless Service for several nodes).

The output PVC (and the dataset's, or the pods download it from a Hub-compatible repo) is mounted; progress and the result come back through the Job and the pod's
termination message.
"""

from __future__ import annotations

from typing import Any

from dpo_operator.api.common import Phase
from dpo_operator.api.reasons import Reason
from dpo_operator.api.results import TrainingResult, first_valid
from dpo_operator.api.training import (
    DPOTrainingJobSpec,
    DPOTrainingJobStatus,
    TrainingProgress,
)
from dpo_operator.handlers.training_datacheck import CONDITION, run_check
from dpo_operator.handlers.training_shared import (
    deploy_if_requested,
    resolve_dataset,
)
from dpo_operator.kube import client
from dpo_operator.kube.jobs import (
    ensure_job,
    failure,
    get_job,
    job_state,
    pod_problem,
    pod_results,
    set_suspended,
    spec_applied,
    to_dict,
)
from dpo_operator.kube.objects import none_if_missing, read_or_create
from dpo_operator.kube.status import Outcome
from dpo_operator.render.training import (  # noqa: F401  (_command, MASTER_PORT: API)
    MASTER_PORT,
    SPEC_ENV,
    _command,
    headless_service,
    job_manifest,
    job_name,
)
from dpo_operator.runtime.controller import RUNTIME
from dpo_operator.runtime.errors import InvalidSpec


def ensure_service(namespace: str, manifest: dict[str, Any]) -> None:
    core = client.core()
    read_or_create(
        lambda: none_if_missing(lambda: to_dict(core.read_namespaced_service(manifest["metadata"]["name"], namespace))),
        lambda: to_dict(core.create_namespaced_service(namespace, manifest)), manifest)


def validate(spec: DPOTrainingJobSpec) -> None:
    """What the schema cannot say about the local backend."""
    local = spec.local
    if local is None or local.output is None:
        raise InvalidSpec("local.output is required for the local backend: the PVC directory the trained model goes to")
    ranks = local.num_nodes * max(1, local.gpus_per_node)
    if spec.hyperparameters.batch_size < ranks:
        raise InvalidSpec(f"hyperparameters.batchSize ({spec.hyperparameters.batch_size}) is smaller than the number of "
                          f"training processes ({ranks} = local.numNodes x local.gpusPerNode): each needs at least one "
                          "pair of every batch; raise batchSize or use fewer GPUs")
    if local.precision == "fp16" and local.strategy == "fsdp":
        raise InvalidSpec("local.precision fp16 is not supported with local.strategy fsdp (no sharded loss scaling): "
                          "use precision bf16")


def decide(body: Any, spec: DPOTrainingJobSpec) -> Outcome:
    """The trainer Job (and headless Service) to have, and the outcome their state implies."""
    validate(spec)
    assert spec.local is not None and spec.local.output is not None
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    location = resolve_dataset(body, spec)
    if isinstance(location, Outcome):
        return location
    checked = None
    # once the training Job exists the check has passed (its Job may be gone: ttlSecondsAfterFinished)
    if spec.dataset.check.enabled and get_job(namespace, job_name(name)) is None:
        card = f"pvc://{spec.local.output.claim_name}/" + "/".join(
            p for p in (spec.local.output.path.strip("/"), name, "data-check") if p)
        checked = run_check(body, spec, location, card)
        if isinstance(checked, Outcome):
            return checked
    jname = job_name(name)
    if spec.local.num_nodes > 1:
        ensure_service(namespace, headless_service(body, jname))
    job = ensure_job(namespace, job_manifest(body, spec, location, RUNTIME.config))
    job = set_suspended(namespace, job, spec.suspend)
    applied = spec_applied(job, SPEC_ENV, spec.to_api(), mutable=("suspend", "deployOnCompletion"))
    state = job_state(job)
    fields = DPOTrainingJobStatus(job_name=jname, dataset_location=location.describe())
    outcome = _outcome(namespace, name, spec, state, fields, applied, body)
    if checked is not None:
        fields.data_check = checked.summary
        outcome.conditions[CONDITION] = checked.condition
    return outcome


def _outcome(namespace: str, name: str, spec: DPOTrainingJobSpec, state: Any, fields: DPOTrainingJobStatus,
             applied: Any, body: Any) -> Outcome:
    """The outcome the training Job's state implies."""
    assert spec.local is not None and spec.local.output is not None
    jname = job_name(name)
    if state.phase == Phase.SUCCEEDED.value:
        result = first_valid(TrainingResult, pod_results(namespace, jname))
        if result is None:  # never Succeeded without a result: a deployment would serve nothing
            fields.failure_reason = Reason.ResultUnavailable
            return Outcome(Phase.FAILED.value, Reason.ResultUnavailable,
                           f"job {jname} completed but no pod of it left a readable result "
                           "(termination message); the trained model cannot be trusted", fields, applied)
        relative = "/".join(p for p in (spec.local.output.path.strip("/"), name, "final") if p)
        fields.output_model = f"pvc://{spec.local.output.claim_name}/{relative}"
        fields.progress = TrainingProgress(percentage_done=100.0, steps_completed=result.steps,
                                           epochs_completed=spec.hyperparameters.epochs,
                                           train_loss=result.train_loss, val_loss=result.val_loss,
                                           resumed_from_step=result.resumed_from_step)
        deploy_if_requested(body, spec, fields)
        return Outcome(state.phase, Reason.Trained, "training completed", fields, applied)
    if state.phase == Phase.FAILED.value:
        explained = failure(namespace, jname, state)
        fields.failure_reason = explained.reason
        return Outcome(state.phase, explained.reason, explained.message, fields, applied)
    if state.phase in (Phase.PENDING.value, Phase.RUNNING.value):
        state = pod_problem(namespace, jname) or state
    return Outcome(state.phase, state.reason, state.message, fields, applied)
