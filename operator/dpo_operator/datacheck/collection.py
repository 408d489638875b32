"""The data check on a DPOCollection's output, run by the collector once the dataset is built: the same figures and
default thresholds as before training (lengths in words: the collector has no tokenizer), plus the pairs each run
and each decision point (turn) gave. The card goes next to the data (``data-check/``); the verdict to the collection's
``DataChecked`` condition. A collection is not failed by it: each training job applies its own thresholds."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from dpo_operator.api.results import DataCheckResult
from dpo_operator.api.training import DataCheckSettings
from dpo_operator.collect.dataset import TRAIN_FILE, VALIDATION_FILE, DatasetFiles
from dpo_operator.datacheck.run import check
from dpo_operator.train.sources import Reading

CARD_DIR = "data-check"


def spread(counts: Iterable[int]) -> dict[str, float]:
    values = np.asarray(list(counts), dtype=np.float64)
    if not len(values):
        return {}
    return {"count": int(len(values)), "min": float(values.min()), "median": float(np.median(values)),
            "max": float(values.max()), "zero": int((values == 0).sum())}


def check_collection(files: DatasetFiles, pairs_per_run: list[int], turn_ids: Iterable[str],
                     location: str) -> DataCheckResult:
    """Check the collection's files; the card and histogram are added to ``files`` (written with the data)."""
    per_turn = Counter(turn_ids)
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in ((TRAIN_FILE, files.training), (VALIDATION_FILE, files.validation)):
            (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / name).write_bytes(content)
        extra: dict[str, Any] = {"collection": {"pairsPerRun": spread(pairs_per_run),
                                                "pairsPerTurn": spread(per_turn.values())}}
        result, content = check(Path(tmp), Reading(format="nemo"), DataCheckSettings(), 0, None, None,
                                {"location": location}, extra)
    files.extra = [(f"{CARD_DIR}/{name}", data) for name, data in content]
    result.data_card = f"{location.rstrip('/')}/{CARD_DIR}/datacard.json"
    result.warnings, result.failures = result.warnings[:3], result.failures[:3]
    return result
