"""What both remote training backends share (:mod:`dpo_operator.handlers.training_remote`,
:mod:`dpo_operator.handlers.own_key`), without a cluster: each backend's wording goes through unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from dpo_operator.api.reasons import Reason
from dpo_operator.api.training import DPOTrainingJobSpec, DPOTrainingJobStatus
from dpo_operator.handlers import training_remote
from dpo_operator.handlers.own_key import before_cancelling_without_key, with_own_key
from dpo_operator.kube.secrets import SecretMissing
from dpo_operator.nemo.customizer import RemoteStatus
from dpo_operator.nemo.http import NemoError
from dpo_operator.runtime.controller import RUNTIME, Result
from dpo_operator.runtime.errors import PermanentFailure

JOB = "NeMo platform job team-a/dpo-x-1"


def _spec(suspend: bool = False, deadline: int | None = None) -> DPOTrainingJobSpec:
    return DPOTrainingJobSpec.model_validate({
        "backend": "customizer", "suspend": suspend,
        "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/ds"}}},
        "model": {"name": "default/llama"},
        "hyperparameters": {"finetuningType": "all_weights"},
        "customizer": {"apiVersion": "v2", "platformUrl": "http://platform", "workspace": "team-a",
                       "apiKeySecretRef": {"name": "platform", "key": "api-key"}, "pollIntervalSeconds": 5,
                       "maxConsecutivePollFailures": 3},
        "job": {"activeDeadlineSeconds": deadline} if deadline else {},
    })


def test_a_missing_job_fails_the_resource_naming_it() -> None:
    spec = _spec()
    assert spec.customizer is not None
    with pytest.raises(PermanentFailure) as caught:
        training_remote.poll_failed(NemoError(404, "not found", False), {}, spec.customizer, JOB)
    assert caught.value.reason == Reason.RemoteJobMissing and str(caught.value) == f"{JOB} no longer exists"


def test_poll_failures_back_off_then_fail_the_resource() -> None:
    backend = _spec().customizer
    assert backend is not None
    result = training_remote.poll_failed(NemoError(502, "bad gateway", True), {"phase": "Running"}, backend, JOB)
    assert result.hold_for == min(RUNTIME.config.max_poll_backoff_seconds, 10.0)
    assert result.outcome is not None and result.outcome.phase == "Running"
    assert result.outcome.reason == Reason.PollFailing and result.outcome.message.startswith(f"polling {JOB} failed (1 in")
    assert isinstance(result.outcome.fields, DPOTrainingJobStatus)
    assert result.outcome.fields.consecutive_poll_failures == 1
    with pytest.raises(PermanentFailure) as caught:
        training_remote.poll_failed(NemoError(503, "down", True), {"consecutivePollFailures": 2}, backend, JOB)
    assert caught.value.reason == Reason.PollFailed
    assert str(caught.value).startswith(f"3 consecutive status polls of {JOB} failed")


def test_suspend_is_refused_in_the_backends_words() -> None:
    status: dict[str, Any] = {"submittedSpec": training_remote.submitted_digest(_spec())}
    assert training_remote.applied_condition(status, _spec(), JOB, "x")[0] is True
    ok, reason, message = training_remote.applied_condition(status, _spec(suspend=True), JOB,
                                                            "is not paused by the operator")
    assert (ok, reason) == (False, Reason.SuspendNotSupported)
    assert message == (f"spec.suspend is true, but {JOB} was submitted already and is not paused by the operator: it "
                       "keeps running. Set suspend back to false, or delete the DPOTrainingJob to cancel the job")


def test_progress_keeps_the_last_known_values() -> None:
    fields = training_remote.polled_fields({"progress": {"trainLoss": 0.7, "percentageDone": 10.0}},
                                           {"percentageDone": 20.0})
    assert fields.progress is not None and (fields.progress.train_loss, fields.progress.percentage_done) == (0.7, 20.0)


def test_a_job_past_its_deadline_is_cancelled_and_fails_the_resource() -> None:
    cancelled: list[bool] = []
    with pytest.raises(PermanentFailure) as caught:
        training_remote.not_succeeded("Running", "active", DPOTrainingJobStatus(), (True, "Applied", ""),
                                      {"submitTime": "2020-01-01T00:00:00Z"}, _spec(deadline=60), JOB,
                                      lambda: cancelled.append(True))
    assert cancelled == [True] and caught.value.reason == Reason.DeadlineExceeded
    assert str(caught.value) == f"{JOB} ran longer than job.activeDeadlineSeconds (60s) and was cancelled"
    running = training_remote.not_succeeded("Pending", "created", DPOTrainingJobStatus(), (True, "Applied", ""),
                                            {"submitTime": "2020-01-01T00:00:00Z"}, _spec(), JOB, lambda: None)
    assert running.outcome is not None and (running.outcome.phase, running.outcome.reason) == ("Pending", "Queued")


def test_only_a_missing_secret_or_a_refused_key_is_a_refusal() -> None:
    def fails(exc: Exception) -> str:
        raise exc

    assert with_own_key(lambda: "done") == "done"
    missing = SecretMissing("Secret ns/platform does not exist")
    assert with_own_key(lambda: fails(missing)) is missing
    refused = NemoError(403, "forbidden", False)
    assert with_own_key(lambda: fails(refused)) is refused
    with pytest.raises(NemoError):
        with_own_key(lambda: fails(NemoError(500, "boom", True)))


def test_a_poll_reads_the_status_or_answers_the_failure() -> None:
    def unreachable() -> RemoteStatus:
        raise NemoError(502, "bad gateway", True)

    failed = training_remote.poll(unreachable, {}, _spec(), JOB, "x")
    assert isinstance(failed, Result) and failed.outcome is not None and failed.outcome.reason == Reason.PollFailing
    read = RemoteStatus.parse({"status": "running", "percentage_done": 40.0})
    polled = training_remote.poll(lambda: read, {"progress": {"trainLoss": 0.5}}, _spec(), JOB, "x")
    assert isinstance(polled, training_remote.Polled) and polled.remote is read and polled.applied[0] is True
    assert polled.fields.progress is not None and (polled.fields.progress.train_loss, polled.fields.progress.percentage_done) == (0.5, 40.0)


def test_without_any_key_only_a_job_never_submitted_with_one_is_cancelled_keyless() -> None:
    assert before_cancelling_without_key(None, JOB, False, None) == "no remote job had been created"
    with pytest.raises(PermanentFailure) as caught:
        before_cancelling_without_key("dpo-x-1", JOB, False, None)
    assert caught.value.reason == Reason.InvalidSpec and str(caught.value).startswith(f"{JOB} cannot be cancelled")
    refused = NemoError(401, "unauthorized", False)
    with pytest.raises(NemoError) as raised:
        before_cancelling_without_key("dpo-x-1", JOB, True, refused)
    assert raised.value is refused
    assert before_cancelling_without_key("dpo-x-1", JOB, True, SecretMissing("Secret ns/platform does not exist")) is None
