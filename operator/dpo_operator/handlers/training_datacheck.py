"""DPOTrainingJob: the data check before training (a CPU-only Job, ``render.training.check_job_manifest``).

Until it has passed no training Job exists, so no GPU is requested; a dataset that fails the spec's thresholds
fails the resource with ``DataCheckFailed`` (the figures in the message); warnings go to the ``DataChecked``
condition and a Warning event; the short figures to ``status.dataCheck``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpo_operator.api.common import Phase, StorageLocation
from dpo_operator.api.reasons import Reason
from dpo_operator.api.results import DataCheckResult, read_result
from dpo_operator.api.training import KIND, DataCheckSummary, DPOTrainingJobSpec, DPOTrainingJobStatus
from dpo_operator.kube import events
from dpo_operator.kube.jobs import ensure_job, failure, job_state, pod_problem, pod_results, retrying
from dpo_operator.kube.queueing import apply as apply_suspend
from dpo_operator.kube.status import Outcome
from dpo_operator.render.training import check_job_manifest, check_job_name
from dpo_operator.runtime.controller import RUNTIME

CONDITION = "DataChecked"


@dataclass
class Checked:
    """The check passed: what training's outcome carries along."""

    summary: DataCheckSummary
    condition: tuple[bool, str, str]


def summary(result: DataCheckResult, card: str | None) -> DataCheckSummary:
    return DataCheckSummary(passed=result.passed, format=result.format, pairs=result.pairs.get("training"),
                            validation_pairs=result.pairs.get("validation"), rows_rejected=result.rows_rejected,
                            ties_dropped=result.ties_dropped, warnings=len(result.warnings), data_card=card,
                            training_file_sha256=result.training_sha256)


def run_check(body: Any, spec: DPOTrainingJobSpec, location: StorageLocation, card: str | None) -> Checked | Outcome:
    """The check's state: an Outcome while it runs or when it failed, ``Checked`` once it passed."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    jname = check_job_name(name)
    queued = apply_suspend(namespace, ensure_job(namespace, check_job_manifest(body, spec, location, RUNTIME.config)),
                           spec.suspend)
    job = queued.job
    state = queued.state or job_state(job)
    fields = DPOTrainingJobStatus(job_name=jname, dataset_location=location.describe())
    if state.phase == Phase.FAILED.value:
        explained = failure(namespace, jname, state)  # the precise cause (e.g. NotFound: a model path typo)
        fields.failure_reason = explained.reason
        return Outcome(Phase.FAILED.value, explained.reason,
                       f"the data check could not run: {explained.message}", fields,
                       conditions={CONDITION: (False, Reason.DataCheckFailed, explained.message)})
    if state.phase != Phase.SUCCEEDED.value:
        if state.phase in (Phase.PENDING.value, Phase.RUNNING.value):
            problem = pod_problem(namespace, jname) or retrying(namespace, jname, job, state)
            if problem is not state:
                return Outcome(problem.phase, problem.reason, problem.message, fields)
            return Outcome(state.phase, Reason.CheckingData, f"checking the dataset in job {jname} (CPU only) "
                           "before requesting GPUs", fields)
        return Outcome(state.phase, state.reason, state.message, fields)
    result, why = read_result(DataCheckResult, pod_results(namespace, jname))
    if result is None:
        fields.failure_reason = Reason.ResultUnavailable
        return Outcome(Phase.FAILED.value, Reason.ResultUnavailable,
                       f"data check job {jname} completed but {why}", fields)
    fields.data_check = summary(result, card)
    if not result.passed:
        fields.failure_reason = Reason.DataCheckFailed
        message = "the dataset failed the data check: " + "; ".join(result.failures)
        return Outcome(Phase.FAILED.value, Reason.DataCheckFailed, message, fields,
                       conditions={CONDITION: (False, Reason.DataCheckFailed, message)})
    return Checked(fields.data_check, checked_condition(body, result))


def checked_condition(body: Any, result: DataCheckResult) -> tuple[bool, str, str]:
    """The ``DataChecked`` condition of a passed check; its warnings also become a Warning event (once: when the
    status does not hold the check's figures yet)."""
    if not result.warnings:
        return (True, Reason.DataCheckPassed, f"{result.pairs.get('training', 0)} training pairs passed the data check")
    message = "; ".join(result.warnings)
    if (((body.get("status") or {}).get("dataCheck") or {}).get("passed")) is None:
        events.record(KIND, body, "Warning", Reason.DataCheckWarnings, message, action="DataCheck")
    return (True, Reason.DataCheckWarnings, message)
