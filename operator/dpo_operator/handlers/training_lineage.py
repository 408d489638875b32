"""DPOTrainingJob, ``model.adapter``: what the operator can know of a starting adapter before any pod runs.

The operator reads no volume, but when a DPOTrainingJob of the same namespace wrote the adapter (its
``status.outputModel`` is the adapter's location, as when a DPOLoop's round continues the previous round's), that
job's spec says the adapter's rank, alpha and target modules; a ``hyperparameters.lora`` that sets them otherwise is
refused at once (InvalidSpec) instead of failing in the pods. What cannot be known this way is checked by the data
check and the trainer (``train/adapters.py``) before any weight is read.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from dpo_operator.api.common import Phase, PvcLocation
from dpo_operator.api.training import KIND, DPOTrainingJobSpec, FinetuningType
from dpo_operator.kube import custom_objects
from dpo_operator.runtime.errors import InvalidSpec
from dpo_operator.train.adapters import lora_contradictions

MAX_GENERATIONS = 16  # adapters continued from adapters: how far back a chain of jobs is followed


def location_url(location: PvcLocation) -> str:
    """As ``status.outputModel`` names a directory: ``pvc://claim/some/path``."""
    return f"pvc://{location.claim_name}/{location.path.strip('/')}".rstrip("/")


def _writer(jobs: list[dict[str, Any]], location: PvcLocation) -> DPOTrainingJobSpec | None:
    """The spec of the succeeded LoRA job whose output is ``location`` (None: no such job, or not readable)."""
    url = location_url(location)
    for job in jobs:
        status = job.get("status") or {}
        if status.get("phase") != Phase.SUCCEEDED.value or (status.get("outputModel") or "").rstrip("/") != url:
            continue
        try:
            spec = DPOTrainingJobSpec.model_validate(job.get("spec") or {})
        except ValidationError:
            return None
        return spec if spec.hyperparameters.finetuning_type == FinetuningType.LORA.value else None
    return None


def known_adapter_config(jobs: list[dict[str, Any]], location: PvcLocation) -> tuple[dict[str, Any], str] | None:
    """The adapter config keys (``r``, ``lora_alpha``, ``target_modules``) of the adapter at ``location`` as the
    job that wrote it sets them, and that job's name; a field the job left to its own starting adapter is followed
    up the chain; None where no job of ``jobs`` wrote it. A value not known is None (all-linear targets: the
    module names depend on the model)."""
    names = {location_url(location): None}
    config: dict[str, Any] = {"r": None, "lora_alpha": None, "target_modules": None}
    writer_name = None
    current = location
    for _ in range(MAX_GENERATIONS):
        spec = _writer(jobs, current)
        if spec is None:
            break
        if writer_name is None:
            writer_name = next(j["metadata"]["name"] for j in jobs
                               if (j.get("status") or {}).get("outputModel", "").rstrip("/") == location_url(current))
        lora, continued = spec.hyperparameters.lora, spec.model.adapter
        for field, key in (("rank", "r"), ("alpha", "lora_alpha"), ("target_modules", "target_modules")):
            if config[key] is None and (field in lora.model_fields_set or continued is None):
                config[key] = getattr(lora, field)
        if continued is None or location_url(continued) in names:
            break
        names[location_url(continued)] = None
        current = continued
    return (config, writer_name) if writer_name is not None else None


def check_adapter_lineage(namespace: str, spec: DPOTrainingJobSpec) -> None:
    """InvalidSpec when hyperparameters.lora contradicts a starting adapter a job of this namespace wrote."""
    if spec.model.adapter is None:
        return
    known = known_adapter_config(custom_objects.list_in(KIND, namespace), spec.model.adapter)
    if known is None:
        return
    config, writer = known
    where = f"DPOTrainingJob {writer}'s output, {location_url(spec.model.adapter)}"
    if problems := lora_contradictions(config, spec.hyperparameters.lora, where):
        raise InvalidSpec("; ".join(problems))
