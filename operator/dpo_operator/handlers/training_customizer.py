"""DPOTrainingJob, ``customizer`` backend: train with NeMo Customizer.

Before submission (each step idempotent, so any reconcile may redo it):
0. what the Customizer refuses is an InvalidSpec (``lora.rank`` not a power of two, ``trainingType: sft``, a
   training/finetuning type pair the customization config named by ``model.name`` does not offer: its
   ``training_options`` are read first);
1. the dataset is found (a DPOCollection's output or an explicit location);
2. namespaces are ensured in the Entity Store and the Datastore (on every path, also for a dataset that is
   already in the Datastore);
3. unless the dataset already lives in this Datastore, an upload Job (``<name>-upload``) copies it there: the pod
   mounts the PVC, the operator never does;
4. the dataset is registered in the Entity Store and the customization job created, always with an output model
   (``customizer.outputModel``, default ``<customizer namespace>/<resource name>``). Spec fields the Customizer
   cannot honour are named in the ``FieldsNotHonoured`` condition. Jobs carry the resource's uid, so one created
   just before an operator restart is adopted, never duplicated.

On completion the job is re-read (``GET /v1/customization/jobs/{id}``) for its output model; a completed job
without one fails the resource (a deployment could never find its model).

The runtime's requeues drive both steps, paced to ``pollIntervalSeconds``: before submission they retry what
failed transiently, after it they poll the job's status (failures back off exponentially and
``maxConsecutivePollFailures`` in a row fail the resource), map it onto the phase and progress, enforce
``job.activeDeadlineSeconds`` from submission; deleting the resource cancels the remote job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dpo_operator.api.common import Phase, StorageLocation
from dpo_operator.api.reasons import Reason
from dpo_operator.api.training import (
    KIND,
    CustomizerApiVersion,
    CustomizerBackend,
    DPOTrainingJobSpec,
    DPOTrainingJobStatus,
)
from dpo_operator.handlers import training_platform, training_promotion, training_remote
from dpo_operator.handlers.training_shared import resolve_dataset
from dpo_operator.handlers.training_upload import follow_upload
from dpo_operator.handlers.own_key import Refusal, before_cancelling_without_key, with_own_key
from dpo_operator.kube import events
from dpo_operator.kube.captured import capture, read_captured
from dpo_operator.kube.conditions import now
from dpo_operator.kube.secrets import SecretMissing, read_secret_key
from dpo_operator.kube.redact import remote_body
from dpo_operator.kube.status import Outcome, is_terminal
from dpo_operator.nemo import customizer as nemo
from dpo_operator.nemo.datastore import hf_endpoint
from dpo_operator.nemo.http import NemoApi, NemoError
from dpo_operator.nemo.platform.client import PlatformClient
from dpo_operator.handlers.training_datacheck import CONDITION
from dpo_operator.render.upload import upload_manifest
from dpo_operator.runtime.controller import RUNTIME, Result
from dpo_operator.runtime.errors import InvalidSpec, PermanentFailure

log = logging.getLogger(__name__)
NOT_HONOURED = "FieldsNotHonoured"  # condition naming spec fields the Customizer cannot honour
WARNINGS = "CustomizerWarnings"  # condition carrying the remote job's warnings


def dataset_name(body: Any, backend: CustomizerBackend) -> str:
    return backend.dataset_name or f"{body['metadata']['namespace']}-{body['metadata']['name']}"


def output_model(body: Any, backend: CustomizerBackend) -> str:
    return backend.output_model or f"{backend.namespace}/{body['metadata']['name']}"


def check_spec(spec: DPOTrainingJobSpec) -> None:
    """What the Customizer would refuse (or train wrongly) is an InvalidSpec before anything is sent."""
    hp = spec.hyperparameters
    if hp.training_type != "dpo":
        raise InvalidSpec(f"spec.hyperparameters.trainingType {hp.training_type!r} is not supported by the customizer "
                          "backend: collections produce DPO preference pairs, not SFT data; use trainingType: dpo "
                          "or backend: local")
    rank = hp.lora.rank
    if hp.finetuning_type == "lora" and rank & (rank - 1):
        raise InvalidSpec(f"spec.hyperparameters.lora.rank {rank} must be a power of two for NeMo Customizer "
                          f"(its adapter_dim), e.g. {1 << (rank.bit_length() - 1)} or {1 << rank.bit_length()}")
    if refused := nemo.refused_hyperparameters(hp):
        raise InvalidSpec(refused)
    if hp.finetuning_type == "lora" and (refused := nemo.refused_target_modules(hp.lora.target_modules)):
        raise InvalidSpec(refused)  # also refused at admission (CEL), where the CRD is current


@contextmanager
def sessions(namespace: str, backend: CustomizerBackend) -> Iterator[tuple[NemoApi, NemoApi, NemoApi]]:
    """Entity Store and Customizer sessions with the API key, the Datastore's with the HF token (its credential)."""
    key = read_secret_key(namespace, backend.api_key_secret_ref, backend.entity_store_url,
                          *([backend.customizer_url] if backend.customizer_url else []))
    deadline = RUNTIME.config.remote_call_deadline
    entity = NemoApi(backend.entity_store_url, key, deadline=deadline, service="entity-store")
    customizer = NemoApi(backend.customizer_url, key, deadline=deadline, service="customizer") \
        if backend.customizer_url else entity
    datastore = NemoApi(backend.datastore_url, read_secret_key(namespace, backend.hf_token_secret_ref, backend.datastore_url),
                        deadline=deadline, service="datastore")
    try:
        yield entity, customizer, datastore
    finally:
        for session in {id(s): s for s in (entity, customizer, datastore)}.values():
            session.close()


def in_datastore(location: StorageLocation, backend: CustomizerBackend) -> bool:
    return location.hub is not None and location.hub.endpoint.rstrip("/") == hf_endpoint(backend.datastore_url)


# --------------------------------------------------------------------------- submission

def submit(body: Any, spec: DPOTrainingJobSpec) -> Outcome:
    backend = spec.customizer
    assert backend is not None
    namespace, name, uid = body["metadata"]["namespace"], body["metadata"]["name"], body["metadata"]["uid"]
    if spec.suspend:
        return Outcome(Phase.SUSPENDED.value, Reason.Suspended, "submission to NeMo Customizer is held while spec.suspend "
                       "is true")
    location = resolve_dataset(body, spec)
    if isinstance(location, Outcome):
        return location
    with sessions(namespace, backend) as (entity, customizer, datastore):
        hp = spec.hyperparameters  # asked before anything is uploaded: the Customizer would refuse the job
        offered = nemo.offered_options(customizer, spec.model.name)
        if refused := nemo.refused_option(spec.model.name, offered, str(hp.training_type),
                                          str(hp.finetuning_type)):
            raise InvalidSpec(refused)
        nemo.ensure_entity_namespace(entity, backend.namespace)
        nemo.ensure_datastore_namespace(datastore, backend.namespace)
        dataset = dataset_name(body, backend)
        fields = DPOTrainingJobStatus()
        checked: tuple[bool, str, str] | None = None
        if in_datastore(location, backend) and not spec.dataset.custom_reading:  # already as the Customizer reads it
            assert location.hub is not None
            files_url = nemo.datastore_files_url(location.hub.repo_id, location.hub.revision)
        else:
            repo = f"{backend.namespace}/{dataset}"
            followed = follow_upload(body, location, upload_manifest(body, spec, location, repo, RUNTIME.config),
                                     fields, f"NeMo Datastore repo {repo}")
            if isinstance(followed, Outcome):
                return followed
            files_url, checked = followed.files_url, followed.checked
        try:
            nemo.register_dataset(entity, backend.namespace, dataset, files_url,
                                  f"DPO preference pairs for {namespace}/{name}")
        except nemo.DatasetConflict as exc:
            raise PermanentFailure(Reason.DatasetConflict, str(exc)) from None
        hyperparameters, not_honoured = nemo.customizer_hyperparameters(spec.hyperparameters)
        job = nemo.find_job(customizer, uid, backend.namespace)
        if job is None:
            # what the job could be cancelled with, should the Secret be gone by then (never in status)
            capture(KIND.kind, body, customizer.base_url, customizer.api_key)
            job = nemo.create_job(customizer, nemo.job_body(
                spec.model.name, backend.namespace, dataset, hyperparameters, output_model(body, backend), uid,
                f"DPOTrainingJob {namespace}/{name}"))
            log.info("DPOTrainingJob %s/%s: created Customizer job %s", namespace, name, job["id"])
        fields.remote_job_id, fields.output_model, fields.dataset_location = job["id"], job.get("output_model"), files_url
        fields.submit_time, fields.submitted_spec = now(), training_remote.submitted_digest(spec)
        return Outcome(Phase.PENDING.value, Reason.Submitted, f"Customizer job {job['id']} created", fields,
                       (True, Reason.Applied, f"Customizer job {job['id']} runs the current spec"),
                       conditions={NOT_HONOURED: not_honoured_condition(not_honoured),
                                   WARNINGS: warnings_condition(body, job),
                                   **({CONDITION: checked} if checked is not None else {})})


def not_honoured_condition(not_honoured: list[str]) -> tuple[bool, str, str]:
    """The ``FieldsNotHonoured`` condition: True and listing them when some spec fields cannot be sent."""
    return (bool(not_honoured), Reason.UnsupportedByCustomizer if not_honoured else Reason.AllSent,
            "; ".join(not_honoured) if not_honoured else "every spec field was sent to NeMo Customizer")


def warnings_condition(body: Any, job: dict[str, Any]) -> tuple[bool, str, str]:
    """The ``CustomizerWarnings`` condition: True with the job's warnings when it has any. New warnings (not yet
    in the condition) also become a Warning event."""
    warnings = nemo.job_warnings(job)
    if not warnings:
        return (False, Reason.NoCustomizerWarnings, f"Customizer job {job.get('id')} reported no warnings")
    message = f"Customizer job {job.get('id')}: " + "; ".join(warnings)
    shown = {c.get("type"): c for c in (body.get("status") or {}).get("conditions") or []}.get(WARNINGS) or {}
    if shown.get("message") != message:
        events.record(KIND, body, "Warning", Reason.CustomizerJobWarnings, message, action="Train")
    return (True, Reason.CustomizerJobWarnings, message)


# --------------------------------------------------------------------------- polling

def poll(body: Any, spec: DPOTrainingJobSpec) -> Result:
    backend = spec.customizer
    assert backend is not None
    status = body.get("status") or {}
    job_id = status["remoteJobId"]
    with sessions(body["metadata"]["namespace"], backend) as (_, customizer, _):
        return _poll(body, spec, customizer, job_id)


def _poll(body: Any, spec: DPOTrainingJobSpec, customizer: NemoApi, job_id: str) -> Result:
    status = body.get("status") or {}
    polled = training_remote.poll(lambda: nemo.job_status(customizer, job_id), status, spec,
                                  f"Customizer job {job_id}", "NeMo Customizer cannot pause a job")
    if isinstance(polled, Result):
        return polled
    remote, applied, fields = polled
    if remote.phase == Phase.SUCCEEDED.value:
        # the model entity is named only in the job itself (the create answer may predate it): read it back
        job = nemo.get_job(customizer, job_id)
        model = job.get("output_model")
        if not model:
            raise PermanentFailure(Reason.NoOutputModel, f"Customizer job {job_id} completed without an output model, "
                                   "so there is no model to deploy; was it created without output_model?")
        # percentageDone stays as reported: early stopping ends a job below 100
        fields.output_model = model
        result = training_promotion.finish(body, spec, fields, remote.message, applied)
        if result.outcome is not None:
            result.outcome.conditions[WARNINGS] = warnings_condition(body, job)
        return result
    return training_remote.not_succeeded(remote.phase, remote.message, fields, applied, status, spec,
                                         f"Customizer job {job_id}", lambda: nemo.cancel_job(customizer, job_id))


def generation(body: Any, spec: DPOTrainingJobSpec) -> str:
    """The API generation of this resource: the one it started with (status), else what the spec says, else (auto
    with both kinds of URL) what the platform root answers."""
    decided = (body.get("status") or {}).get("customizerApiVersion")
    if decided:
        return str(decided)
    backend = spec.customizer
    assert backend is not None
    declared = backend.declared_version
    if declared is not None:
        return declared.value
    assert backend.platform_url is not None
    key = read_secret_key(body["metadata"]["namespace"], backend.api_key_secret_ref, backend.platform_url)
    return PlatformClient(backend.platform_url, backend.workspace, key,
                          deadline=RUNTIME.config.remote_call_deadline).detect()


def decide(body: Any, spec: DPOTrainingJobSpec) -> Result:
    """Submit or poll, on the API generation of :func:`generation` (v2: :mod:`training_platform`). The runtime paces
    calls to ``pollIntervalSeconds`` (:func:`pace`), longer after poll failures (``hold_for``). A failure that ends
    the resource first cancels whatever remote job carries its tag (the create may have succeeded behind an
    unreadable answer)."""
    assert spec.customizer is not None
    try:
        version = generation(body, spec)
        if version == training_platform.VERSION:
            result = training_platform.decide(body, spec)
        else:
            check_spec(spec)
            submitted = (body.get("status") or {}).get("remoteJobId")
            result = poll(body, spec) if submitted else Result(submit(body, spec))
        if result.outcome is not None and not (body.get("status") or {}).get("customizerApiVersion"):
            fields = result.outcome.fields or DPOTrainingJobStatus()
            if isinstance(fields, DPOTrainingJobStatus):
                fields.customizer_api_version = version
                result.outcome.fields = fields
        return result
    except SecretMissing as exc:
        return Result(Outcome(Phase.PENDING.value, exc.reason, f"{exc}; {exc.hint}"))
    except NemoError as exc:
        if exc.transient:
            raise
        cleanup = cancel_after_failure(body, spec)
        raise PermanentFailure(Reason.RemoteApiError,
                               f"a NeMo service refused a request: {remote_body(str(exc))}; {cleanup}") from None
    except PermanentFailure as exc:
        if exc.reason in (Reason.DeadlineExceeded, Reason.RemoteJobMissing):
            raise  # the job was cancelled already, or is gone
        raise PermanentFailure(exc.reason, f"{exc}; {cancel_after_failure(body, spec)}") from None


def cancel_after_failure(body: Any, spec: DPOTrainingJobSpec) -> str:
    """Cancel the remote job of a resource about to fail, found by its id or tag; what happened, for the message
    (a cancellation that fails now is retried when the resource is deleted: its finalizer waits for it)."""
    try:
        return cancel_remote(body, spec)
    except Exception as exc:  # noqa: BLE001  (the resource fails anyway; deletion tries again)
        return f"cancelling its Customizer job failed ({remote_body(str(exc))}); deleting the resource tries again"


def pace(body: Any) -> float | None:
    """Seconds before the next NeMo call, counted from the start of this one (None: a terminal resource)."""
    if is_terminal(body) or training_promotion.in_progress(body):
        return None  # the gate makes no NeMo calls
    return float(((body.get("spec") or {}).get("customizer") or {}).get("pollIntervalSeconds") or 30.0)


# --------------------------------------------------------------------------- deletion

FINISHED_REMOTELY = {Reason.CustomizerJobFailed.value, Reason.CustomizerJobCancelled.value}


def remote_finished(body: Any) -> bool:
    """Did the remote job itself end (completed, failed or cancelled, as the Customizer said)?"""
    status = body.get("status") or {}
    return status.get("phase") == Phase.SUCCEEDED.value or status.get("failureReason") in FINISHED_REMOTELY


def cancel_remote(body: Any, spec: DPOTrainingJobSpec | None) -> str:
    """Cancel the remote job unless the Customizer said it finished; answers what happened (for the log). Raises
    when the cancellation is not confirmed (the deletion handler retries; the finalizer stays).

    The job is the one in status, else the one carrying the resource's tag (a create whose answer was lost). The
    key is the user's Secret as it is now; when that is gone or refused (401/403), the key captured at submission,
    sent only to the URL it was captured for (:mod:`dpo_operator.kube.captured`)."""
    if remote_finished(body):
        return "the remote job had already finished"
    if (body.get("status") or {}).get("customizerApiVersion") == training_platform.VERSION or (
            spec is not None and spec.customizer is not None
            and spec.customizer.declared_version == CustomizerApiVersion.V2):
        return training_platform.cancel_remote(body, spec)
    meta = body["metadata"]
    job_id = (body.get("status") or {}).get("remoteJobId")
    backend = spec.customizer if spec is not None else None
    namespace = backend.namespace if backend is not None else None
    refused: Exception | None = None
    if backend is not None:
        def cancel_with_own_key() -> str:
            with sessions(meta["namespace"], backend) as (_, customizer, _):
                return _cancel(customizer, job_id, meta["uid"], namespace)

        cancelled = with_own_key(cancel_with_own_key)
        if not isinstance(cancelled, Refusal):
            return cancelled
        refused = cancelled
    captured = read_captured(meta["namespace"], meta["name"], meta["uid"])
    if captured is not None:
        log.info("cancelling with the credentials captured at submission (%s)", refused or "no valid spec")
        with NemoApi(captured.url, captured.api_key, deadline=RUNTIME.config.remote_call_deadline, service="customizer") as customizer:
            return _cancel(customizer, job_id, meta["uid"], namespace)
    if (answer := before_cancelling_without_key(job_id, f"Customizer job {job_id}", backend is not None, refused)) is not None:
        return answer
    assert backend is not None
    with NemoApi(backend.customizer_url or backend.entity_store_url,
                 deadline=RUNTIME.config.remote_call_deadline, service="customizer") as customizer:
        return _cancel(customizer, job_id, meta["uid"], namespace)


def _cancel(customizer: NemoApi, job_id: str | None, uid: str, namespace: str | None = None) -> str:
    if job_id is None:
        found = nemo.find_job(customizer, uid, namespace)
        job_id = found["id"] if found else None
    if job_id is None:
        return "no remote job had been created"
    return f"cancelled Customizer job {job_id}" if nemo.cancel_job(customizer, job_id) \
        else f"Customizer job {job_id} had nothing left to cancel"
