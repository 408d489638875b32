"""NeMo Entity Store, Datastore and Customizer calls for one DPO training run (v1 APIs).

The sequence (see the NeMo Agent Toolkit customizer plugin, without its defects): namespaces in the Entity
Store and the Datastore (existing ones are fine), the dataset registered in the Entity Store as
``hf://datasets/{namespace}/{name}``, then ``POST /v1/customization/jobs`` with an ``output_model`` (without one
the Customizer creates no model entity); the job is polled through ``GET .../{id}/status``, re-read with
``GET .../{id}`` on completion for its output model, and cancelled with ``POST .../{id}/cancel``. Jobs carry the
custom resource's uid in their description so that a job created just before an operator crash is found again
instead of duplicated. Shapes follow NVIDIA's ``nemo-microservices`` SDK (1.5.0) types.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dpo_operator.api.training import CUSTOMIZER_MODULES, CUSTOMIZER_MODULES_HINT, CUSTOMIZER_TARGET_MODULE
from dpo_operator.nemo import datastore_hub
from dpo_operator.nemo.http import NemoApi, NemoError

PAGE_SIZE = 100
MAX_PAGES = 50


def ensure_entity_namespace(entity: NemoApi, namespace: str) -> None:
    entity.request("POST", "/v1/namespaces", json={"id": namespace, "description": "created by dpo-operator"}, ok=(409,))


def ensure_datastore_namespace(datastore: NemoApi, namespace: str) -> None:
    datastore_hub.ensure_namespace(datastore, namespace)


class DatasetConflict(Exception):
    """The dataset name is taken in the Entity Store by an entry that points at other files."""


def datastore_files_url(repo_id: str, revision: str = "main") -> str:
    """A Datastore dataset as the Entity Store registers it: ``hf://datasets/{repo}``, with ``@{revision}`` (the
    ``hf://`` form the SDK documents for a revision) unless it is ``main``, the branch the Customizer reads."""
    return f"hf://datasets/{repo_id}" + (f"@{revision}" if revision and revision != "main" else "")


def register_dataset(entity: NemoApi, namespace: str, name: str, files_url: str, description: str) -> None:
    """Register (or find registered) ``namespace/name``; an existing entry must point at the same files."""
    body = {"name": name, "namespace": namespace, "files_url": files_url, "description": description}
    try:
        entity.request("POST", "/v1/datasets", json=body)
    except NemoError as exc:
        if exc.status != 409:
            raise
        existing = entity.request("GET", f"/v1/datasets/{namespace}/{name}") or {}
        if existing.get("files_url") != files_url:
            raise DatasetConflict(f"dataset {namespace}/{name} already exists in the Entity Store and points at "
                                  f"{existing.get('files_url')!r}, not {files_url!r}; set customizer.datasetName "
                                  "to another name or delete the old entry") from None


def config_path(config: str) -> str:
    """``GET`` path of a customization config named as a job names it (``namespace/name@version``; no namespace:
    ``default``)."""
    namespace, name = config.split("/", 1) if "/" in config else ("default", config)
    return f"/v1/customization/configs/{namespace}/{name}"


def offered_options(customizer: NemoApi, config: str) -> list[tuple[str, str]] | None:
    """The (training type, finetuning type) pairs the config's ``training_options`` offer; None: no such config."""
    try:
        answer = customizer.request("GET", config_path(config))
    except NemoError as exc:
        if exc.status == 404:
            return None
        raise
    options = (answer or {}).get("training_options") if isinstance(answer, dict) else None
    return [(str(o.get("training_type")), str(o.get("finetuning_type")))
            for o in options or [] if isinstance(o, dict)]


def refused_option(config: str, offered: list[tuple[str, str]] | None, training_type: str,
                   finetuning_type: str) -> str | None:
    """Why the Customizer would refuse a job of this pair on ``config`` (for an InvalidSpec), or None."""
    if offered is None:
        return (f"spec.model.name {config!r} names no customization config in NeMo Customizer (GET "
                f"{config_path(config)} answered 404); use a config it has (GET /v1/customization/configs lists them)")
    if (training_type, finetuning_type) in offered:
        return None
    listed = ", ".join(f"trainingType {t} with finetuningType {f}" for t, f in offered) or "nothing"
    return (f"spec.hyperparameters: NeMo Customizer config {config!r} does not offer trainingType {training_type} "
            f"with finetuningType {finetuning_type}; its training_options offer {listed}. Set "
            "hyperparameters.finetuningType to one it offers, or name another config in spec.model.name")


def owner_tag(uid: str) -> str:
    return f"dpo-operator uid={uid}"


def job_body(config: str, namespace: str, dataset: str, hyperparameters: dict[str, Any], output_model: str,
             uid: str, description: str) -> dict[str, Any]:
    """A ``JobCreateParams`` body; ``output_model`` is always sent (without it no model entity is created)."""
    return {
        "config": config,
        "dataset": {"name": dataset, "namespace": namespace},
        "hyperparameters": hyperparameters,
        "output_model": output_model,
        "namespace": namespace,
        "description": f"{description} ({owner_tag(uid)})",
    }


# What the v1 API's Hyperparameters cannot express. Listed in the README as local-only.
OPTIMIZERS = {"constant": "adamw_with_flat_lr", "cosine": "adamw_with_cosine_annealing"}


def refused_hyperparameters(hp: Any) -> str | None:
    """What the v1 API's ``DpoParameters`` cannot express at all (an InvalidSpec, not a FieldsNotHonoured note):
    the Customizer trains NeMo RL's loss only, so a TRL loss type other than plain ``sigmoid`` would train a different
    objective than the spec asks for. (``labelSmoothing`` and ``discopopTau`` need a loss type, so they are covered.)"""
    types = [str(getattr(t, "value", t)) for t in hp.dpo.loss_type or []]
    if not types or (types == ["sigmoid"] and (hp.dpo.loss_weights or [1.0]) == [1.0]):
        return None  # unset, or TRL's sigmoid alone: the Customizer's own DPO loss
    return (f"spec.hyperparameters.dpo.lossType {types} is not supported by the customizer backend: NeMo Customizer's "
            "DPO trains only the sigmoid loss with refPolicyKlPenalty, preferenceLossWeight, sftLossWeight and their "
            "averaging options; remove dpo.lossType (and dpo.lossWeights) or use backend: local")


def refused_target_modules(modules: list[str] | None) -> str | None:
    """Local (PEFT) module names the Customizer does not know, with the Megatron names to use instead."""
    wrong = [m for m in modules or [] if not re.match(CUSTOMIZER_TARGET_MODULE, m)]
    if not wrong:
        return None
    mapped = list(dict.fromkeys(CUSTOMIZER_MODULES.get(m.rsplit(".", 1)[-1], "?") for m in modules or []
                                if m in wrong))
    suggestion = f"; for {wrong} use {mapped}" if "?" not in mapped else ""
    return f"spec.hyperparameters.lora.targetModules {wrong} are not NeMo Customizer modules: " \
        f"{CUSTOMIZER_MODULES_HINT}{suggestion}"


def customizer_hyperparameters(hp: Any) -> tuple[dict[str, Any], list[str]]:
    """Our Hyperparameters in the Customizer's snake_case shape, and what it cannot honour (in words).

    Only values other than the defaults are reported as not honoured: the API server fills defaults into every
    stored spec, and a default is not a request.
    """
    out: dict[str, Any] = {
        "training_type": hp.training_type, "finetuning_type": hp.finetuning_type, "epochs": hp.epochs,
        "batch_size": hp.batch_size, "learning_rate": hp.learning_rate, "seed": hp.seed,
        "weight_decay": hp.weight_decay, "warmup_steps": hp.warmup_steps,
    }
    unsupported: list[str] = []
    defaults = type(hp).model_fields
    if hp.max_seq_length != defaults["max_seq_length"].default:
        unsupported.append(f"maxSeqLength ({hp.max_seq_length}) is set by the Customizer config, not per job")
    if hp.warmup_ratio > 0 and hp.warmup_steps == 0:
        unsupported.append(f"warmupRatio ({hp.warmup_ratio}) has no Customizer equivalent; set warmupSteps")
    if hp.validate_every_steps is not None:
        unsupported.append(f"validateEverySteps ({hp.validate_every_steps}) has no Customizer equivalent; the "
                           "Customizer validates on its own schedule")
    scheduler = str(getattr(hp.lr_scheduler, "value", hp.lr_scheduler))
    if scheduler in OPTIMIZERS:
        out["optimizer"] = OPTIMIZERS[scheduler]
        if scheduler == "cosine":
            unsupported.append("lrScheduler cosine decays to the Customizer's min_learning_rate "
                               "(0.1 x learningRate), not to 0")
    else:
        unsupported.append(f"lrScheduler {scheduler} has no Customizer equivalent (flat or cosine annealing only); "
                           "the Customizer's default schedule is used")
    if hp.training_type == "dpo":
        out["dpo"] = {"ref_policy_kl_penalty": hp.dpo.ref_policy_kl_penalty,
                      "preference_loss_weight": hp.dpo.preference_loss_weight,
                      "preference_average_log_probs": hp.dpo.preference_average_log_probs,
                      "sft_loss_weight": hp.dpo.sft_loss_weight,
                      "sft_average_log_probs": hp.dpo.effective_sft_average_log_probs,
                      "max_grad_norm": hp.max_grad_norm}
    if hp.finetuning_type == "lora":
        out["lora"] = {"adapter_dim": hp.lora.rank, "alpha": hp.lora.alpha, "adapter_dropout": hp.lora.dropout}
        if hp.lora.target_modules:
            out["lora"]["target_modules"] = list(hp.lora.target_modules)
    return out, unsupported


def iter_jobs(customizer: NemoApi, namespace: str | None = None) -> Iterator[dict[str, Any]]:
    """Every customization job (of ``namespace``), page after page until an empty page, as the SDK pages."""
    params: dict[str, Any] = {"page_size": PAGE_SIZE}
    if namespace:
        params["filter[namespace]"] = namespace
    for page in range(1, MAX_PAGES + 1):
        answer = customizer.request("GET", "/v1/customization/jobs", params={**params, "page": page}) or {}
        items = answer.get("data") or []
        if not items:
            return
        yield from items


def find_job(customizer: NemoApi, uid: str, namespace: str | None = None) -> dict[str, Any] | None:
    tag = owner_tag(uid)
    return next((job for job in iter_jobs(customizer, namespace) if tag in (job.get("description") or "")), None)


def get_job(customizer: NemoApi, job_id: str) -> dict[str, Any]:
    return customizer.request("GET", f"/v1/customization/jobs/{job_id}") or {}


def create_job(customizer: NemoApi, body: dict[str, Any]) -> dict[str, Any]:
    job = customizer.request("POST", "/v1/customization/jobs", json=body)
    if not isinstance(job, dict) or not job.get("id"):
        raise NemoError(200, f"POST /v1/customization/jobs answered without a job id: {str(job)[:200]}", transient=False)
    return job


def cancel_job(customizer: NemoApi, job_id: str) -> bool:
    """Ask the Customizer to cancel; False when there is nothing left to cancel (gone or already finished)."""
    try:
        customizer.request("POST", f"/v1/customization/jobs/{job_id}/cancel")
    except NemoError as exc:
        if exc.status in (400, 404, 409):
            return False
        raise
    return True


# --------------------------------------------------------------------------- status

PHASES = {"created": "Pending", "pending": "Pending", "running": "Running", "cancelling": "Running",
          "completed": "Succeeded", "ready": "Succeeded", "failed": "Failed",
          "cancelled": "Cancelled", "canceled": "Cancelled"}


def _number(value: Any) -> float | None:
    """A finite number, else None (a boolean, a string, NaN/Infinity, an integer too large for a float)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _integer(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _latest(series: Any) -> float | None:
    """The value of the highest step in a ``[{step, value, timestamp}]`` metric series."""
    points = [p for p in series or [] if isinstance(p, dict) and _number(p.get("value")) is not None]
    if not points:
        return None
    return _number(max(points, key=lambda p: _integer(p.get("step")) or 0)["value"])


@dataclass(frozen=True)
class RemoteStatus:
    raw_status: str
    phase: str
    progress: dict[str, Any]
    message: str

    @classmethod
    def parse(cls, answer: dict[str, Any]) -> "RemoteStatus":
        """Every field may be missing or null (the reference plugin crashes on a null percentage_done).

        Top-level ``train_loss``/``val_loss`` belong to the best checkpoint (null until one exists); the live
        series is ``metrics.metrics.train_loss[]``/``val_loss[]``. Progress shows the live values while the job
        runs and the best checkpoint's once it has finished (the live ones where it reports none).
        """
        raw = str(answer.get("status") or "unknown").lower()
        phase = PHASES.get(raw, "Running")  # unknown states count as still running, as the Customizer SDK does
        series = ((answer.get("metrics") or {}).get("metrics") or {}) if isinstance(answer.get("metrics"), dict) else {}
        live = {"trainLoss": _latest(series.get("train_loss")), "valLoss": _latest(series.get("val_loss"))}
        accuracy = {"trainAccuracy": _latest(series.get("train_accuracy")),
                    "valAccuracy": _latest(series.get("val_accuracy"))}
        best = {"trainLoss": _number(answer.get("train_loss")), "valLoss": _number(answer.get("val_loss"))}
        losses = {k: best[k] if best[k] is not None else live[k] for k in live} if phase == "Succeeded" else live
        progress = {
            "percentageDone": _number(answer.get("percentage_done")),
            "epochsCompleted": _integer(answer.get("epochs_completed")),
            "stepsCompleted": _integer(answer.get("steps_completed")),
            **losses,
            **accuracy,
        }
        logs = [entry for entry in (answer.get("status_logs") or []) if isinstance(entry, dict)]
        detail = next((str(e.get("detail") or e.get("message")) for e in reversed(logs)
                       if e.get("detail") or e.get("message")), "")
        message = f"Customizer job {raw}" + (f": {detail}" if detail else "")
        return cls(raw, phase, {k: v for k, v in progress.items() if v is not None}, message)


def job_warnings(job: dict[str, Any]) -> list[str]:
    """The job's ``warnings`` (the Customizer's notes on a job it accepted, e.g. a value it adjusted), in words."""
    found = []
    for warning in job.get("warnings") or []:
        if isinstance(warning, dict) and (warning.get("message") or warning.get("explanation")):
            found.append(": ".join(str(warning[k]) for k in ("message", "explanation") if warning.get(k)))
    return found


def job_status(customizer: NemoApi, job_id: str) -> RemoteStatus:
    """The job's status; an answer that is not a JSON object is a failed poll (counted, retried, and after
    ``maxConsecutivePollFailures`` in a row the resource fails), never a crash."""
    return RemoteStatus.parse(status_object(customizer.request("GET", f"/v1/customization/jobs/{job_id}/status"),
                                            f"GET /v1/customization/jobs/{job_id}/status"))


def status_object(answer: Any, what: str) -> dict[str, Any]:
    """A status answer as a JSON object (no body: an empty one); anything else is a transient NemoError, so a
    failed poll that is counted and retried (``what`` names the request)."""
    if answer is None:
        return {}
    if not isinstance(answer, dict):
        raise NemoError(200, f"{what} answered {type(answer).__name__}, not a JSON object: {str(answer)[:200]}",
                        transient=True)
    return answer
