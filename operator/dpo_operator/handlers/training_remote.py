"""How both remote DPOTrainingJob backends (NeMo Customizer v1, NeMo platform v2) read a polled job's status.

Each backend asks its own service and words its own job (``job``: "Customizer job <id>", "NeMo platform job
<workspace>/<name>"); what the answer means for the resource is decided here, once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from dpo_operator.api.common import Phase
from dpo_operator.api.reasons import Reason
from dpo_operator.api.training import CustomizerBackend, DPOTrainingJobSpec, DPOTrainingJobStatus, TrainingProgress
from dpo_operator.kube.conditions import elapsed_since_start, now
from dpo_operator.kube.jobs import digest_applied, spec_digest
from dpo_operator.kube.status import Outcome
from dpo_operator.nemo.customizer import RemoteStatus
from dpo_operator.nemo.http import NemoError
from dpo_operator.runtime.controller import RUNTIME, Result
from dpo_operator.runtime.errors import PermanentFailure

# spec fields read on every poll (so applied to a running remote job); any other change is not applied to it
APPLIED_WHILE_RUNNING = ("suspend", "deployOnCompletion", "job.activeDeadlineSeconds", "customizer.pollIntervalSeconds",
                         "customizer.maxConsecutivePollFailures", "customizer.apiKeySecretRef")

Condition = tuple[bool, str, str]


def submitted_digest(spec: DPOTrainingJobSpec) -> dict[str, str]:
    """The digest of the fields a running job follows, recorded at submission (status.submittedSpec)."""
    return spec_digest(spec.to_api(), APPLIED_WHILE_RUNNING)


class Polled(NamedTuple):
    """A job's status as read, the ``Applied`` condition and the status fields the poll gives."""

    remote: RemoteStatus
    applied: Condition
    fields: DPOTrainingJobStatus


def poll(read: Callable[[], RemoteStatus], status: dict[str, Any], spec: DPOTrainingJobSpec, job: str,
         unpaused: str) -> Polled | Result:
    """Read the job's status (``read``); when that fails, the Result of :func:`poll_failed`."""
    assert spec.customizer is not None
    try:
        remote = read()
    except NemoError as exc:
        return poll_failed(exc, status, spec.customizer, job)
    return Polled(remote, applied_condition(status, spec, job, unpaused), polled_fields(status, remote.progress))


def poll_failed(exc: NemoError, status: dict[str, Any], backend: CustomizerBackend, job: str) -> Result:
    """A status poll that failed: the job is gone (404), or ``maxConsecutivePollFailures`` in a row fail the
    resource; else the phase stands and the next poll waits longer (exponential backoff, capped)."""
    if exc.status == 404:
        raise PermanentFailure(Reason.RemoteJobMissing, f"{job} no longer exists") from None
    failures = int(status.get("consecutivePollFailures") or 0) + 1
    if failures >= backend.max_consecutive_poll_failures:
        raise PermanentFailure(Reason.PollFailed, f"{failures} consecutive status polls of {job} "
                               f"failed; last error: {exc}") from None
    delay = min(RUNTIME.config.max_poll_backoff_seconds, backend.poll_interval_seconds * 2 ** failures)
    phase = status.get("phase") or Phase.PENDING.value
    return Result(Outcome(phase, Reason.PollFailing, f"polling {job} failed "
                          f"({failures} in a row, next try in {delay:.0f}s): {exc}",
                          DPOTrainingJobStatus(consecutive_poll_failures=failures)), hold_for=delay)


def applied_condition(status: dict[str, Any], spec: DPOTrainingJobSpec, job: str, unpaused: str) -> Condition:
    """The ``Applied`` condition: whether the running job follows the current spec. ``spec.suspend`` is refused
    clearly (``unpaused`` says why the job keeps running) rather than cancelling work a person may only want
    paused."""
    if spec.suspend:
        return (False, Reason.SuspendNotSupported, f"spec.suspend is true, but {job} was submitted already and "
                f"{unpaused}: it keeps running. Set suspend back to false, or delete the DPOTrainingJob to cancel "
                "the job")
    return digest_applied(status.get("submittedSpec"), submitted_digest(spec), job)


def polled_fields(status: dict[str, Any], progress: dict[str, Any]) -> DPOTrainingJobStatus:
    """The status fields of a successful poll: the progress reported (null or missing values keep the last known
    ones), and the failure count reset."""
    merged = {**(status.get("progress") or {}), **progress}
    return DPOTrainingJobStatus(progress=TrainingProgress.model_validate(merged) if merged else None,
                                consecutive_poll_failures=None)


def not_succeeded(remote_phase: str, message: str, fields: DPOTrainingJobStatus, applied: Condition,
                  status: dict[str, Any], spec: DPOTrainingJobSpec, job: str, cancel: Callable[[], object]) -> Result:
    """The outcome of a job that has not succeeded: failed or cancelled as its service says, else still queued or
    running, unless ``job.activeDeadlineSeconds`` has passed since submission: then ``cancel`` cancels it and the
    resource fails (checked only while the job still runs: a finished one stands)."""
    if remote_phase == Phase.FAILED.value:
        fields.failure_reason = Reason.CustomizerJobFailed
        return Result(Outcome(Phase.FAILED.value, Reason.CustomizerJobFailed, message, fields, applied))
    if remote_phase == Phase.CANCELLED.value:
        fields.failure_reason = Reason.CustomizerJobCancelled
        return Result(Outcome(Phase.CANCELLED.value, Reason.CustomizerJobCancelled, message, fields, applied))
    deadline = spec.job.active_deadline_seconds
    elapsed = elapsed_since_start(status.get("submitTime"))
    if elapsed is None:  # not a timestamp, or in the future (edited by hand): the clock starts again, never stops
        fields.submit_time, elapsed = now(), 0.0
    if deadline is not None and elapsed > deadline:
        cancel()
        raise PermanentFailure(Reason.DeadlineExceeded, f"{job} ran longer than "
                               f"job.activeDeadlineSeconds ({deadline}s) and was cancelled")
    reason = Reason.Training if remote_phase == Phase.RUNNING.value else "Queued"
    return Result(Outcome(remote_phase, reason, message, fields, applied))
