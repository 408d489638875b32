"""A DPO job on the NeMo platform (v2): what the spec asks in the ``rl`` backend's job spec, and the job's calls.

- Submit: ``POST /apis/customization/v2/workspaces/{ws}/{backend}/jobs`` with ``{name, description, spec,
  custom_fields}``; ``spec`` is NVIDIA's ``RlJobInput`` (model entity, dataset fileset, ``training`` =
  ``DPOTraining``, ``output.name``). The job's name is derived from the resource (:func:`job_name`), so after an
  operator restart the job is found by ``GET .../{backend}/jobs/{name}`` instead of created twice.
- Follow: the Jobs service, ``GET /apis/jobs/v2/workspaces/{ws}/jobs/{name}/status`` (``created``, ``pending``,
  ``active``, ..., ``completed``, ``error``, ``cancelled``; the training task's ``status_details`` carry
  ``percentage_done``, ``step``, ``epoch``, the latest metric values and their series under ``metrics``), its
  ``logs`` (the tail goes into a failure message) and ``POST .../cancel``.
- The output: the completed job's last step registers a model entity named ``output.name`` in the job's workspace
  (full weights, its files in the fileset of the same name); status.outputModel is ``<workspace>/<name>``.

What ``DPOTraining`` (nmp/rl/schemas/job.py, nemo-platform 0.6) cannot express is refused
(:func:`refused`) rather than dropped: PEFT (full weights only), TRL loss types, a linear schedule, warmupRatio,
trainingType sft, validation every single step.
"""

from __future__ import annotations

import re
from typing import Any

from dpo_operator.api.training import V2_LORA_MESSAGE, Hyperparameters
from dpo_operator.nemo.customizer import RemoteStatus, _integer, _latest, _number, status_object
from dpo_operator.nemo.http import NemoError
from dpo_operator.nemo.platform.client import PlatformClient

SERVICE = "customization"
JOBS = "jobs"
UID_FIELD = "dpo_operator_uid"  # custom_fields key carrying the resource's uid
OPTIMIZERS = {"constant": "adamw_with_flat_lr", "cosine": "adamw_with_cosine_annealing"}
LOG_TAIL = 20  # log lines read back into a failure message


def refused(hp: Hyperparameters) -> list[str]:
    """What the platform's DPO cannot train as asked, each naming the spec field and what to do instead."""
    problems: list[str] = []
    if hp.training_type != "dpo":
        problems.append(f"spec.hyperparameters.trainingType {hp.training_type!r} is not supported on the NeMo "
                        "platform v2 customizer path (its rl backend trains DPO); use trainingType: dpo or "
                        "backend: local")
    if hp.finetuning_type != "all_weights":
        problems.append(f"spec.hyperparameters.finetuningType: {V2_LORA_MESSAGE}")
    types = [str(getattr(t, "value", t)) for t in hp.dpo.loss_type or []]
    if types and not (types == ["sigmoid"] and (hp.dpo.loss_weights or [1.0]) == [1.0]):
        problems.append(f"spec.hyperparameters.dpo.lossType {types} is not supported on the NeMo platform v2: its "
                        "DPO trains only NeMo RL's sigmoid loss with refPolicyKlPenalty, preferenceLossWeight, "
                        "sftLossWeight and their averaging options; remove dpo.lossType or use backend: local")
    scheduler = str(getattr(hp.lr_scheduler, "value", hp.lr_scheduler))
    if scheduler not in OPTIMIZERS:
        problems.append(f"spec.hyperparameters.lrScheduler {scheduler} is not supported on the NeMo platform v2 "
                        "(flat or cosine annealing only); use constant or cosine")
    if hp.warmup_ratio > 0 and hp.warmup_steps == 0:
        problems.append(f"spec.hyperparameters.warmupRatio ({hp.warmup_ratio}) is not supported on the NeMo "
                        "platform v2 (warmup is counted in steps there); set warmupSteps instead")
    if hp.validate_every_steps == 1:
        problems.append("spec.hyperparameters.validateEverySteps 1 cannot be sent to the NeMo platform v2 (its "
                        "val_check_interval reads 1.0 as a whole epoch); use 2 or more, or leave it unset")
    return problems


def training(hp: Hyperparameters) -> dict[str, Any]:
    """``DPOTraining`` from our hyperparameters: every field it has an equivalent for, always sent (the platform's
    defaults differ from ours: weight decay 0.01, beta 0.05, learning rate 1e-4, batch 32, cosine schedule)."""
    scheduler = str(getattr(hp.lr_scheduler, "value", hp.lr_scheduler))
    out: dict[str, Any] = {
        "type": "dpo", "learning_rate": hp.learning_rate, "weight_decay": hp.weight_decay,
        "warmup_steps": hp.warmup_steps, "epochs": hp.epochs, "batch_size": hp.batch_size,
        "max_seq_length": hp.max_seq_length, "seed": hp.seed, "max_grad_norm": hp.max_grad_norm,
        "optimizer_type": OPTIMIZERS.get(scheduler, OPTIMIZERS["constant"]),
        "ref_policy_kl_penalty": hp.dpo.ref_policy_kl_penalty,
        "preference_loss_weight": hp.dpo.preference_loss_weight,
        "preference_average_log_probs": hp.dpo.preference_average_log_probs,
        "sft_loss_weight": hp.dpo.sft_loss_weight,
        "sft_average_log_probs": hp.dpo.effective_sft_average_log_probs,
    }
    if scheduler == "cosine":
        out["min_learning_rate"] = 0.0  # ours decays to 0
    if hp.validate_every_steps is not None:
        out["val_check_interval"] = float(hp.validate_every_steps)  # > 1.0: a step count
    return out


def job_name(namespace: str, name: str, uid: str) -> str:
    """The platform job's name: ``dpo-<name>-<uid prefix>``, fitted to the platform's name rule (a lowercase letter
    first, 2-63 of ``[a-z0-9-@.+_]``, no ``--``, no trailing ``-``). The namespace is in the description."""
    suffix = uid.replace("-", "")[:10].lower()
    base = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9.-]", "-", name.lower()))
    return f"dpo-{base[:63 - len(suffix) - 5].strip('-.')}-{suffix}"


def job_body(spec_model: str, dataset: str, hp: Hyperparameters, output_name: str, name: str, uid: str,
             description: str) -> dict[str, Any]:
    """NVIDIA's ``CustomizationJobCreateRequest`` with an ``RlJobInput`` spec."""
    return {"name": name, "description": description,
            "spec": {"model": spec_model, "dataset": dataset, "training": training(hp),
                     "output": {"name": output_name}},
            "custom_fields": {UID_FIELD: uid}}


def get_job(client: PlatformClient, backend: str, name: str) -> dict[str, Any] | None:
    """The customization job ``name`` (None: there is none)."""
    try:
        return client.request("GET", SERVICE, backend, JOBS, name) or {}
    except NemoError as exc:
        if exc.status == 404:
            return None
        raise


def create_job(client: PlatformClient, backend: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create the job; one that exists already (a create whose answer was lost) is read back."""
    job = client.request("POST", SERVICE, backend, JOBS, json=body, ok=(409,))
    if isinstance(job, dict) and job.get("name") == body["name"]:
        return job
    found = get_job(client, backend, body["name"])
    if found is None:
        raise NemoError(200, f"creating platform job {body['name']} answered {str(job)[:200]} and the job cannot "
                        "be found", transient=True)
    return found


def output_model(client: PlatformClient, job: dict[str, Any]) -> str | None:
    """``<workspace>/<name>`` of the model entity the job registers (its spec's ``output.name``)."""
    output = (job.get("spec") or {}).get("output") or {}
    name = output.get("name") if isinstance(output, dict) else None
    return f"{job.get('workspace') or client.workspace}/{name}" if name else None


def cancel_job(client: PlatformClient, name: str) -> bool:
    """Ask the Jobs service to cancel; False when there is nothing left to cancel (gone or already finished)."""
    try:
        client.request("POST", JOBS, JOBS, name, "cancel")
    except NemoError as exc:
        if exc.status in (400, 404, 409):
            return False
        raise
    return True


def log_tail(client: PlatformClient, name: str, lines: int = LOG_TAIL) -> list[str]:
    """The job's newest log lines (best effort: a failed read answers nothing)."""
    try:
        answer = client.request("GET", JOBS, JOBS, name, "logs", params={"tail": lines}) or {}
    except NemoError:
        return []
    return [str(entry.get("message", "")).rstrip() for entry in answer.get("data") or [] if isinstance(entry, dict)]


# --------------------------------------------------------------------------- status

PHASES = {"created": "Pending", "pending": "Pending", "active": "Running", "cancelling": "Running",
          "paused": "Running", "pausing": "Running", "resuming": "Running", "completed": "Succeeded",
          "error": "Failed", "cancelled": "Cancelled"}


def _scalar(details: dict[str, Any], series: dict[str, Any], key: str) -> float | None:
    """A metric's latest value: the series' highest step, else the scalar the report restates."""
    latest = _latest(series.get(key)) if isinstance(series.get(key), list) else None
    return latest if latest is not None else _number(details.get(key))


class PlatformStatus(RemoteStatus):
    """A platform job's status, in the same fields as a Customizer job's (read from the Jobs service's answer)."""

    @classmethod
    def parse(cls, answer: dict[str, Any]) -> "PlatformStatus":
        """Any field may be missing or null; an unknown status counts as still running."""
        raw = str(answer.get("status") or "unknown").lower()
        phase = PHASES.get(raw, "Running")
        details = answer.get("status_details") if isinstance(answer.get("status_details"), dict) else {}
        series = details.get("metrics") if isinstance(details.get("metrics"), dict) else {}
        progress = {
            "phase": details.get("phase") if isinstance(details.get("phase"), str) else None,
            "percentageDone": _number(details.get("percentage_done")),
            "stepsCompleted": _integer(details.get("step")),
            "epoch": _number(details.get("epoch")),
            "trainLoss": _scalar(details, series, "train_loss"),
            "valLoss": _scalar(details, series, "val_loss"),
            "trainAccuracy": _scalar(details, series, "train_accuracy"),
            "valAccuracy": _scalar(details, series, "val_accuracy"),
        }
        errors = answer.get("error_details") if isinstance(answer.get("error_details"), dict) else {}
        detail = errors.get("message") or errors.get("detail") or details.get("message") or ""
        message = f"platform job {raw}" + (f": {detail}" if detail else "")
        return cls(raw, phase, {k: v for k, v in progress.items() if v is not None}, message)


def job_status(client: PlatformClient, name: str) -> PlatformStatus:
    """The job's status; an answer that is not a JSON object is a failed poll (counted and retried)."""
    return PlatformStatus.parse(status_object(client.request("GET", JOBS, JOBS, name, "status"),
                                              f"GET status of platform job {name}"))
