"""DPOTrainingJob, ``customizer`` backend on NVIDIA's NeMo platform (v2): workspaces, filesets and the ``rl``
customization backend (:mod:`dpo_operator.nemo.platform.customization`).

Before submission (each step idempotent, so any reconcile may redo it):
0. what the platform's DPO cannot train as asked is an InvalidSpec (LoRA: it trains full weights only; TRL loss
   types; ...);
1. the dataset is found (a DPOCollection's output or an explicit location);
2. an upload Job (``<name>-upload``) converts it to ``{prompt, chosen, rejected}`` rows and writes
   ``training.jsonl`` / ``validation.jsonl`` into fileset ``customizer.datasetName`` (default ``<resource
   namespace>-<resource name>``) of ``customizer.workspace``: the pod mounts the PVC, the operator never does, and
   the same content is not written twice;
3. the job is created under a name derived from the resource (``dpo-<name>-<uid>``), or found under it after an
   operator restart; ``output.name`` (``customizer.outputModel``, default the resource name) names the model
   entity the job registers.

Then the job is polled through the Jobs service (``pollIntervalSeconds``; failures back off, and
``maxConsecutivePollFailures`` in a row fail the resource); its progress goes into status.progress; a failed job's
newest log lines go into the message; ``job.activeDeadlineSeconds`` cancels it; deleting the resource cancels it.
status.remoteJobId is ``<workspace>/<job name>`` and status.outputModel ``<workspace>/<model entity>``, which
a ModelDeployment on the platform serves.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from dpo_operator.api.common import Phase
from dpo_operator.api.reasons import Reason
from dpo_operator.api.training import KIND, CustomizerBackend, DPOTrainingJobSpec, DPOTrainingJobStatus
from dpo_operator.handlers import training_promotion, training_remote
from dpo_operator.handlers.training_datacheck import CONDITION
from dpo_operator.handlers.training_shared import resolve_dataset
from dpo_operator.handlers.training_upload import follow_upload
from dpo_operator.handlers.own_key import Refusal, before_cancelling_without_key, with_own_key
from dpo_operator.kube.captured import capture, read_captured
from dpo_operator.kube.conditions import now
from dpo_operator.kube.secrets import read_secret_key
from dpo_operator.kube.status import Outcome
from dpo_operator.nemo.platform import customization as remote
from dpo_operator.nemo.platform.client import PlatformClient
from dpo_operator.render.upload import platform_upload_manifest
from dpo_operator.runtime.controller import RUNTIME, Result
from dpo_operator.runtime.errors import InvalidSpec, PermanentFailure

log = logging.getLogger(__name__)
VERSION = "v2"
FILESET_NAME = re.compile(r"^[a-z](?!.*--)[a-z0-9\-@.+_]{1,62}(?<!-)$")  # the files service's rule


def check_spec(spec: DPOTrainingJobSpec) -> None:
    """What the platform would refuse or train differently is an InvalidSpec before anything is sent."""
    backend = spec.customizer
    assert backend is not None
    problems = remote.refused(spec.hyperparameters)
    name = backend.dataset_name
    if name is not None and not FILESET_NAME.match(name):
        problems.append(f"spec.customizer.datasetName {name!r} is not a valid fileset name on the NeMo platform (a "
                        "lowercase letter first, 2-63 lowercase letters, digits, '-', '.', '@', '+' or '_', no '--', "
                        "not ending in '-')")
    if backend.output_model is not None:
        workspace, _, model = backend.output_model.rpartition("/")
        if (workspace or backend.workspace) != backend.workspace or not model:
            problems.append(f"spec.customizer.outputModel {backend.output_model!r}: the platform registers the model "
                            f"in the job's workspace; use {backend.workspace}/<name> or just <name>")
    if problems:
        raise InvalidSpec("; ".join(problems))


def fileset_name(body: Any, backend: CustomizerBackend) -> str:
    """``customizer.datasetName``, else ``<namespace>-<name>`` fitted to the files service's name rule."""
    if backend.dataset_name:
        return backend.dataset_name
    name = re.sub(r"-{2,}", "-", f"{body['metadata']['namespace']}-{body['metadata']['name']}".lower())
    name = re.sub(r"[^a-z0-9\-@.+_]", "-", name)
    name = name if name[:1].isalpha() else f"ds-{name}"
    return name[:63].rstrip("-")


def output_name(body: Any, backend: CustomizerBackend) -> str:
    return (backend.output_model or body["metadata"]["name"]).rpartition("/")[2]


def client_for(namespace: str, backend: CustomizerBackend) -> PlatformClient:
    assert backend.platform_url is not None
    key = read_secret_key(namespace, backend.api_key_secret_ref, backend.platform_url)
    return PlatformClient(backend.platform_url, backend.workspace, key, deadline=RUNTIME.config.remote_call_deadline)


def backend_name(backend: CustomizerBackend) -> str:
    return str(getattr(backend.platform_backend, "value", backend.platform_backend))


def remote_ref(workspace: str, job: str) -> str:
    return f"{workspace}/{job}"


def split_ref(ref: str) -> tuple[str, str]:
    workspace, _, job = ref.partition("/")
    return workspace, job


# --------------------------------------------------------------------------- submission

def submit(body: Any, spec: DPOTrainingJobSpec) -> Outcome:
    backend = spec.customizer
    assert backend is not None
    meta = body["metadata"]
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    if spec.suspend:
        return Outcome(Phase.SUSPENDED.value, Reason.Suspended, "submission to the NeMo platform is held while "
                       "spec.suspend is true")
    location = resolve_dataset(body, spec)
    if isinstance(location, Outcome):
        return location
    client = client_for(namespace, backend)  # the Secret is checked before the upload pod is given it
    fields = DPOTrainingJobStatus(customizer_api_version=VERSION)
    fileset = fileset_name(body, backend)
    followed = follow_upload(body, location, platform_upload_manifest(body, spec, location, fileset, RUNTIME.config),
                             fields, f"NeMo platform fileset {backend.workspace}/{fileset}")
    if isinstance(followed, Outcome):
        return followed
    job_name = remote.job_name(namespace, name, uid)
    job = remote.get_job(client, backend_name(backend), job_name)
    if job is None:
        # what the job could be cancelled with, should the Secret be gone by then (never in status)
        capture(KIND.kind, body, client.base_url, client.api_key)
        job = remote.create_job(client, backend_name(backend), remote.job_body(
            spec.model.name, followed.files_url, spec.hyperparameters, output_name(body, backend), job_name, uid,
            f"DPOTrainingJob {namespace}/{name}"))
        log.info("DPOTrainingJob %s/%s: created platform job %s/%s", namespace, name, backend.workspace, job_name)
    ref = remote_ref(backend.workspace, job_name)
    fields.remote_job_id, fields.dataset_location = ref, followed.files_url
    fields.output_model = remote.output_model(client, job) or f"{backend.workspace}/{output_name(body, backend)}"
    fields.submit_time, fields.submitted_spec = now(), training_remote.submitted_digest(spec)
    return Outcome(Phase.PENDING.value, Reason.Submitted, f"NeMo platform job {ref} created", fields,
                   (True, Reason.Applied, f"NeMo platform job {ref} runs the current spec"),
                   conditions={CONDITION: followed.checked} if followed.checked is not None else {})


# --------------------------------------------------------------------------- polling

def poll(body: Any, spec: DPOTrainingJobSpec) -> Result:
    backend = spec.customizer
    assert backend is not None
    status = body.get("status") or {}
    ref = status["remoteJobId"]
    _, job_name = split_ref(ref)
    client = client_for(body["metadata"]["namespace"], backend)
    polled = training_remote.poll(lambda: remote.job_status(client, job_name), status, spec,
                                  f"NeMo platform job {ref}", "is not paused by the operator")
    if isinstance(polled, Result):
        return polled
    remote_status, applied, fields = polled
    if remote_status.phase == Phase.SUCCEEDED.value:
        job = remote.get_job(client, backend_name(backend), job_name) or {}
        model = remote.output_model(client, job) or status.get("outputModel")
        if not model:
            raise PermanentFailure(Reason.NoOutputModel, f"NeMo platform job {ref} completed without an output "
                                   "model, so there is no model to deploy")
        fields.output_model = model
        return training_promotion.finish(body, spec, fields, remote_status.message, applied)
    message = remote_status.message
    if remote_status.phase == Phase.FAILED.value:
        tail = remote.log_tail(client, job_name)
        message = (message + (f"; last log lines: {' | '.join(tail[-5:])}" if tail else ""))[:2000]
    return training_remote.not_succeeded(remote_status.phase, message, fields, applied, status, spec,
                                         f"NeMo platform job {ref}", lambda: remote.cancel_job(client, job_name))


def decide(body: Any, spec: DPOTrainingJobSpec) -> Result:
    """Submit or poll (errors are handled by the customizer backend's ``decide``, which dispatched here)."""
    check_spec(spec)
    if (body.get("status") or {}).get("remoteJobId"):
        return poll(body, spec)
    return Result(submit(body, spec))


# --------------------------------------------------------------------------- cancellation

def cancel_remote(body: Any, spec: DPOTrainingJobSpec | None) -> str:
    """Cancel the resource's platform job (by status.remoteJobId, else by its derived name: a create whose answer
    was lost); answers what happened. The key is the user's Secret as it is now; when that is gone or refused, the
    key captured at submission, sent only to the URL it was captured for."""
    meta = body["metadata"]
    status = body.get("status") or {}
    backend = spec.customizer if spec is not None else None
    ref = status.get("remoteJobId")
    if ref is None and backend is not None:
        ref = remote_ref(backend.workspace, remote.job_name(meta["namespace"], meta["name"], meta["uid"]))
    refused: Exception | None = None
    if backend is not None and ref is not None:
        cancelled = with_own_key(lambda: _cancel(client_for(meta["namespace"], backend), ref))
        if not isinstance(cancelled, Refusal):
            return cancelled
        refused = cancelled
    captured = read_captured(meta["namespace"], meta["name"], meta["uid"])
    if captured is not None and ref is not None:
        log.info("cancelling with the credentials captured at submission (%s)", refused or "no valid spec")
        workspace, _ = split_ref(ref)
        return _cancel(PlatformClient(captured.url, workspace, captured.api_key,
                                      deadline=RUNTIME.config.remote_call_deadline), ref)
    if (answer := before_cancelling_without_key(status.get("remoteJobId"), f"NeMo platform job {ref}", backend is not None,
                                         refused)) is not None:
        return answer
    assert backend is not None and backend.platform_url is not None and ref is not None
    return _cancel(PlatformClient(backend.platform_url, backend.workspace,
                                  deadline=RUNTIME.config.remote_call_deadline), ref)


def _cancel(client: PlatformClient, ref: str) -> str:
    workspace, job = split_ref(ref)
    client.workspace = workspace
    return f"cancelled NeMo platform job {ref}" if remote.cancel_job(client, job) \
        else f"NeMo platform job {ref} had nothing left to cancel"
