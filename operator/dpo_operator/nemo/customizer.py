"""NeMo Entity Store, Datastore and Customizer calls for one DPO training run (v1 APIs).

The sequence (see the NeMo Agent Toolkit customizer plugin, without its defects): namespaces in the Entity
Store and the Datastore (existing ones are fine), the dataset registered in the Entity Store as
``hf://datasets/{namespace}/{name}``, then ``POST /v1/customization/jobs``; the job is polled through
``GET .../{id}/status`` and cancelled with ``POST .../{id}/cancel``. Jobs carry the custom resource's uid in
their description so that a job created just before an operator crash is found again instead of duplicated.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dpo_operator.nemo.http import NemoApi, NemoError

PAGE_SIZE = 100
MAX_PAGES = 50


def ensure_entity_namespace(entity: NemoApi, namespace: str) -> None:
    entity.request("POST", "/v1/namespaces", json={"id": namespace, "description": "created by dpo-operator"}, ok=(409,))


def ensure_datastore_namespace(datastore: NemoApi, namespace: str) -> None:
    # the Datastore answers 409 or 422 when the namespace exists
    datastore.request("POST", "/v1/datastore/namespaces", data={"namespace": namespace}, ok=(409, 422))


def register_dataset(entity: NemoApi, namespace: str, name: str, files_url: str, description: str) -> None:
    entity.request("POST", "/v1/datasets", ok=(409,), json={
        "name": name, "namespace": namespace, "files_url": files_url, "description": description})


def owner_tag(uid: str) -> str:
    return f"dpo-operator uid={uid}"


def job_body(config: str, namespace: str, dataset: str, hyperparameters: dict[str, Any], output_model: str | None,
             uid: str, description: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "config": config,
        "dataset": {"name": dataset, "namespace": namespace},
        "hyperparameters": hyperparameters,
        "description": f"{description} ({owner_tag(uid)})",
    }
    if output_model:
        body["output_model"] = output_model
    return body


def customizer_hyperparameters(hp: Any) -> dict[str, Any]:
    """Our Hyperparameters model in the Customizer's snake_case shape (only what the v1 API knows)."""
    out: dict[str, Any] = {
        "training_type": hp.training_type, "finetuning_type": hp.finetuning_type, "epochs": hp.epochs,
        "batch_size": hp.batch_size, "learning_rate": hp.learning_rate,
    }
    if hp.training_type == "dpo":
        out["dpo"] = {"ref_policy_kl_penalty": hp.dpo.ref_policy_kl_penalty,
                      "preference_loss_weight": hp.dpo.preference_loss_weight,
                      "preference_average_log_probs": hp.dpo.preference_average_log_probs,
                      "sft_loss_weight": hp.dpo.sft_loss_weight}
    if hp.finetuning_type == "lora":
        out["lora"] = {"adapter_dim": hp.lora.rank, "alpha": hp.lora.alpha, "adapter_dropout": hp.lora.dropout}
    return out


def iter_jobs(customizer: NemoApi) -> Iterator[dict[str, Any]]:
    """Every customization job, following pagination to the end (not only the first page)."""
    for page in range(1, MAX_PAGES + 1):
        answer = customizer.request("GET", "/v1/customization/jobs", params={"page": page, "page_size": PAGE_SIZE}) or {}
        items = answer.get("data") or []
        yield from items
        total_pages = (answer.get("pagination") or {}).get("total_pages")
        if not items or (total_pages is not None and page >= total_pages) or len(items) < PAGE_SIZE:
            return


def find_job(customizer: NemoApi, uid: str) -> dict[str, Any] | None:
    tag = owner_tag(uid)
    return next((job for job in iter_jobs(customizer) if tag in (job.get("description") or "")), None)


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
          "completed": "Succeeded", "ready": "Succeeded", "failed": "Failed", "error": "Failed",
          "cancelled": "Cancelled", "canceled": "Cancelled"}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _integer(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


@dataclass(frozen=True)
class RemoteStatus:
    raw_status: str
    phase: str
    progress: dict[str, Any]
    message: str

    @classmethod
    def parse(cls, answer: dict[str, Any]) -> "RemoteStatus":
        """Every field may be missing or null (the reference plugin crashes on a null percentage_done)."""
        raw = str(answer.get("status") or "unknown").lower()
        phase = PHASES.get(raw, "Running")  # unknown states count as still running, as the Customizer SDK does
        progress = {
            "percentageDone": _number(answer.get("percentage_done")),
            "epochsCompleted": _integer(answer.get("epochs_completed")),
            "stepsCompleted": _integer(answer.get("steps_completed")),
            "trainLoss": _number(answer.get("train_loss")),
            "valLoss": _number(answer.get("val_loss")),
        }
        logs = [entry for entry in (answer.get("status_logs") or []) if isinstance(entry, dict)]
        detail = next((str(e.get("detail") or e.get("message")) for e in reversed(logs)
                       if e.get("detail") or e.get("message")), "")
        message = f"Customizer job {raw}" + (f": {detail}" if detail else "")
        return cls(raw, phase, {k: v for k, v in progress.items() if v is not None}, message)


def job_status(customizer: NemoApi, job_id: str) -> RemoteStatus:
    return RemoteStatus.parse(customizer.request("GET", f"/v1/customization/jobs/{job_id}/status") or {})
