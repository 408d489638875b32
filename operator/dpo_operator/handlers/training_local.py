"""DPOTrainingJob, ``local`` backend: our trainer in GPU pods (an Indexed Job + headless Service for several nodes).

The output PVC (and the dataset's, or the pods download it from a Hub-compatible repo) is mounted; progress and the result come back through the Job and the pod's
termination message.
"""

from __future__ import annotations

from typing import Any

from dpo_operator.api.common import Phase
from dpo_operator.api.reasons import Reason
from dpo_operator.api.progress import TrainingReport
from dpo_operator.api.results import TrainingResult, read_result
from dpo_operator.api.training import (
    DPOTrainingJobSpec,
    DPOTrainingJobStatus,
    TrainingProgress,
)
from dpo_operator.handlers import training_promotion
from dpo_operator.handlers.training_datacheck import CONDITION, run_check
from dpo_operator.handlers.live_progress import (
    final_training_progress,
    recorded,
    training_progress,
    training_summary,
    validation_checks,
)
from dpo_operator.handlers.training_lineage import check_adapter_lineage
from dpo_operator.handlers.training_shared import resolve_dataset
from dpo_operator.kube import client, progress
from dpo_operator.kube.jobs import (
    ensure_job,
    failure,
    job_state,
    pod_problem,
    get_job,
    pod_results,
    retrying,
    spec_applied,
    to_dict,
)
from dpo_operator.kube.nodes import GPU_RESOURCE, most_gpus_per_node
from dpo_operator.kube.queueing import apply as apply_suspend
from dpo_operator.kube.objects import none_if_missing, read_or_create
from dpo_operator.kube.status import Outcome
from dpo_operator.render.training import (  # noqa: F401  (_command, MASTER_PORT: API)
    MASTER_PORT,
    SPEC_ENV,
    _command,
    headless_service,
    job_manifest,
    job_name,
    spec_for_pod,
)
from dpo_operator.runtime.controller import RUNTIME, Result
from dpo_operator.runtime.errors import InvalidSpec, PermanentFailure


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


def check_gpus_fit(spec: DPOTrainingJobSpec) -> None:
    """A pod asking for more GPUs than any node offers would stay Pending for ever: fail before creating it."""
    assert spec.local is not None
    wanted = spec.local.gpus_per_node
    most = most_gpus_per_node() if wanted > 0 else None
    if most is not None and wanted > most:
        raise PermanentFailure(Reason.InsufficientGPUs, (
            f"local.gpusPerNode is {wanted}, but no node offers more than {most} GPUs ({GPU_RESOURCE} allocatable): "
            f"lower local.gpusPerNode to at most {most} (and raise local.numNodes for as many GPUs in all)"))


def decide(body: Any, spec: DPOTrainingJobSpec) -> Outcome | Result:
    """The data check, then the trainer Job (and headless Service) to have, and the outcome their state implies."""
    validate(spec)
    assert spec.local is not None and spec.local.output is not None
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    location = resolve_dataset(body, spec)
    if isinstance(location, Outcome):
        return location
    jname = job_name(name)
    checked = None
    if get_job(namespace, jname) is None:
        if (body.get("status") or {}).get("jobName") == jname:
            return Outcome(Phase.FAILED.value, Reason.JobMissing,
                           f"job {jname} was deleted before it finished (by a person, or removed while the operator "
                           "was down); training is not started again on its own: delete and re-create the "
                           "DPOTrainingJob to train again", DPOTrainingJobStatus(failure_reason=Reason.JobMissing))
        check_gpus_fit(spec)
        check_adapter_lineage(namespace, spec)  # an adapter a job here wrote: its LoRA shape is known now
        # the data check in a CPU-only pod before any GPU is asked for (once the training Job exists it has passed;
        # its own Job may be gone: ttlSecondsAfterFinished)
        if spec.dataset.check.enabled:
            card = f"pvc://{spec.local.output.claim_name}/" + "/".join(
                p for p in (spec.local.output.path.strip("/"), name, "data-check") if p)
            checked = run_check(body, spec, location, card)
            if isinstance(checked, Outcome):
                return checked
    decided = _train(body, spec, location)
    outcome = decided.outcome if isinstance(decided, Result) else decided
    if checked is not None and outcome is not None:
        if isinstance(outcome.fields, DPOTrainingJobStatus):
            outcome.fields.data_check = checked.summary
        outcome.conditions[CONDITION] = checked.condition
    return decided


def _train(body: Any, spec: DPOTrainingJobSpec, location: Any) -> Outcome | Result:
    """The trainer Job (and headless Service) to have, and the outcome their state implies."""
    assert spec.local is not None and spec.local.output is not None
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    jname = job_name(name)
    if spec.local.num_nodes > 1:
        ensure_service(namespace, headless_service(body, jname))
    if spec.queue_name and spec.suspend and get_job(namespace, jname) is None:
        return Outcome(Phase.SUSPENDED.value, Reason.Suspended, (  # Kueue would admit a Job created suspended
            f"suspended; the job is submitted to LocalQueue {spec.queue_name} when spec.suspend is false"),
            DPOTrainingJobStatus(dataset_location=location.describe()))
    queued = apply_suspend(namespace, ensure_job(namespace, job_manifest(body, spec, location, RUNTIME.config)),
                           spec.suspend)
    job = queued.job
    applied = spec_applied(job, SPEC_ENV, spec_for_pod(spec), mutable=("suspend", "deployOnCompletion"))
    state = queued.state or job_state(job)
    fields = DPOTrainingJobStatus(job_name=jname, dataset_location=location.describe(), queue=queued.queue)
    if state.phase in (Phase.SUCCEEDED.value, Phase.FAILED.value):
        progress.done(body)
    if state.phase == Phase.SUCCEEDED.value:
        result, why = read_result(TrainingResult, pod_results(namespace, jname))
        if result is None:  # never Succeeded without a result: a deployment would serve nothing
            fields.failure_reason = Reason.ResultUnavailable
            return Outcome(Phase.FAILED.value, Reason.ResultUnavailable,
                           f"job {jname} completed but {why}; the trained model cannot be trusted", fields, applied)
        relative = "/".join(p for p in (spec.local.output.path.strip("/"), name, "final") if p)
        fields.output_model = f"pvc://{spec.local.output.claim_name}/{relative}"
        fields.progress = final_training_progress(result, spec.hyperparameters.epochs, recorded(body, TrainingProgress))
        fields.validation = validation_checks(result)
        return training_promotion.finish(body, spec, fields, "training completed", applied)
    if state.phase == Phase.FAILED.value:
        explained = failure(namespace, jname, state)
        fields.failure_reason = explained.reason
        return Outcome(state.phase, explained.reason, explained.message, fields, applied)
    if state.phase in (Phase.PENDING.value, Phase.RUNNING.value):
        state = pod_problem(namespace, jname) or retrying(namespace, jname, job, state)
    message = state.message
    if state.phase == Phase.RUNNING.value:
        report = progress.poll(body, jname, TrainingReport, RUNTIME.config.progress_interval_seconds)
        current = training_progress(report) if report else recorded(body, TrainingProgress)
        if report:
            fields.progress = current
        if current is not None:
            message = f"{message}; {training_summary(current)}"
    return Outcome(state.phase, state.reason, message, fields, applied)
