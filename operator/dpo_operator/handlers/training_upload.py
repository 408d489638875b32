"""The dataset upload Job of the customizer backend (v1: into NeMo Datastore; v2: into a platform fileset): create
it, follow it, and read what its pod vouched for (the files' location and the data check's verdict)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dpo_operator.api.common import Phase, StorageLocation
from dpo_operator.api.reasons import Reason
from dpo_operator.api.results import UploadResult, read_result
from dpo_operator.api.training import DPOTrainingJobStatus
from dpo_operator.handlers.training_datacheck import CONDITION, checked_condition, summary
from dpo_operator.kube.jobs import ensure_job, failure_message, job_state, pod_results
from dpo_operator.kube.status import Outcome
from dpo_operator.runtime.errors import PermanentFailure


@dataclass
class Uploaded:
    files_url: str
    checked: tuple[bool, str, str] | None  # the DataChecked condition, when the check ran in the upload pod


def follow_upload(body: Any, location: StorageLocation, manifest: dict[str, Any], fields: DPOTrainingJobStatus,
                  where: str) -> Outcome | Uploaded:
    """The upload Job of ``manifest`` (created when missing): an Outcome while it runs or when the data check
    failed, what it uploaded once it succeeded (``where``: the destination in words, for messages)."""
    namespace = body["metadata"]["namespace"]
    upload = ensure_job(namespace, manifest)
    state = job_state(upload)
    fields.job_name = upload["metadata"]["name"]
    if state.phase == Phase.FAILED.value:
        raise PermanentFailure(Reason.DatasetUploadFailed, f"uploading the dataset to {where} failed: "
                               + failure_message(namespace, upload["metadata"]["name"], state))
    if state.phase != Phase.SUCCEEDED.value:
        return Outcome(Phase.PENDING.value, Reason.UploadingDataset, f"copying {location.describe()} to {where}",
                       fields)
    uploaded, why = read_result(UploadResult, pod_results(namespace, upload["metadata"]["name"]))
    if uploaded is None:  # never register a dataset no pod vouched for
        raise PermanentFailure(Reason.ResultUnavailable, f"upload job {fields.job_name} completed but {why}; "
                               f"the dataset in {where} cannot be trusted")
    checked = None
    if uploaded.data_check is not None:
        fields.data_check = summary(uploaded.data_check, uploaded.data_check.data_card)
        verdict = uploaded.data_check
        if not verdict.passed:
            fields.failure_reason = Reason.DataCheckFailed
            message = "the dataset failed the data check: " + "; ".join(verdict.failures)
            return Outcome(Phase.FAILED.value, Reason.DataCheckFailed, message, fields,
                           conditions={CONDITION: (False, Reason.DataCheckFailed, message)})
        checked = checked_condition(body, verdict)
    if uploaded.files_url is None:
        raise PermanentFailure(Reason.ResultUnavailable, f"upload job {fields.job_name} reported no files URL")
    return Uploaded(uploaded.files_url, checked)
