"""Any dataset the trainer accepts as the NeMo platform's DPO rows: ``training.jsonl`` and ``validation.jsonl`` at
the root of one fileset, each line ``{"prompt", "chosen", "rejected"}`` (NeMo RL's binary preference format, per
the platform's dataset-formats reference: the prompt is text or chat messages, the responses text).

Conversational responses become the text of their messages; HelpSteer3 ties stay dropped. The platform's DPO
needs both files: without validation rows the last training row is reused (as a collection does)."""

from __future__ import annotations

from typing import Any

from dpo_operator.collect.dataset import DatasetFiles
from dpo_operator.nemo.preference_jsonl import jsonl_files
from dpo_operator.train.formats import response_text
from dpo_operator.train.sources import Splits

TRAINING = "training.jsonl"
VALIDATION = "validation.jsonl"


def platform_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": row["prompt"], "chosen": response_text(row["chosen_response"]),
            "rejected": response_text(row["rejected_response"])}


def platform_files(splits: Splits, metrics: bytes = b"{}") -> DatasetFiles:
    """The two JSONL files (``metrics`` rides along as ``metrics.json``; ``extra`` files go beside them)."""
    return jsonl_files(splits, platform_row, metrics)


def named_files(files: DatasetFiles) -> list[tuple[str, bytes]]:
    """The fileset's files by path: the two JSONL files at the root, then the others (data card, metrics)."""
    return [(TRAINING, files.training), (VALIDATION, files.validation), *files.extra, ("metrics.json", files.metrics)]
