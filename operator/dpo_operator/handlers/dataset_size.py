"""A dataset too small for the batch size trains a step or two and "succeeds" without learning anything: say so
(a ``SmallDataset`` condition and a Warning event) before the trainer starts, where the collection's pair count
is known (``dataset.collectionRef``)."""

from __future__ import annotations

from typing import Any

from dpo_operator.api import collection as collection_api
from dpo_operator.api.reasons import Reason
from dpo_operator.api.training import KIND, DPOTrainingJobSpec
from dpo_operator.kube import custom_objects, events

CONDITION = "SmallDataset"
MIN_STEPS_PER_EPOCH = 5  # fewer optimizer steps than this in an epoch: a handful, not training


def training_pairs(namespace: str, spec: DPOTrainingJobSpec) -> int | None:
    """The referenced collection's training pair count; None when the dataset is given by location (unknown)."""
    ref = spec.dataset.collection_ref
    collection = custom_objects.read(collection_api.KIND, namespace, ref.name) if ref is not None else None
    pairs = ((collection or {}).get("status") or {}).get("pairs") or {}
    return pairs.get("training") if isinstance(pairs.get("training"), int) else None


def small_dataset(pairs: int, batch_size: int, accumulation: int) -> str | None:
    """Why ``pairs`` training pairs are too few for the batch size, or None."""
    steps = -(-(-(-pairs // batch_size)) // accumulation)  # ceil(ceil(pairs / batch) / accumulation)
    if batch_size > pairs:
        return (f"hyperparameters.batchSize ({batch_size}) is larger than the dataset ({pairs} training pairs): every "
                f"epoch is {steps} optimizer step(s); lower batchSize or collect more pairs")
    if steps < MIN_STEPS_PER_EPOCH:
        return (f"an epoch is only {steps} optimizer step(s) ({pairs} training pairs / batchSize {batch_size}"
                + (f" / gradientAccumulationSteps {accumulation}" if accumulation > 1 else "")
                + f"; fewer than {MIN_STEPS_PER_EPOCH}): lower batchSize or collect more pairs")
    return None


def dataset_condition(body: Any, spec: DPOTrainingJobSpec, accumulation: int) -> dict[str, tuple[bool, str, str]]:
    """The SmallDataset condition (empty where the size is unknown); a Warning event the first time it is True."""
    pairs = training_pairs(body["metadata"]["namespace"], spec)
    if pairs is None:
        return {}
    problem = small_dataset(pairs, spec.hyperparameters.batch_size, accumulation)
    if problem is None:
        return {CONDITION: (False, Reason.DatasetLargeEnough, f"{pairs} training pairs")}
    shown = next((c for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") == CONDITION), {})
    if shown.get("status") != "True":
        events.record(KIND, body, "Warning", Reason.SmallDataset, problem, action="Validate")
    return {CONDITION: (True, Reason.SmallDataset, problem)}
