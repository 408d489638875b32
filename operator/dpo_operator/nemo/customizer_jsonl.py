"""Any dataset the trainer accepts (``train.sources``: files, formats, splits) as the JSONL files NeMo Customizer
reads: ``training/training_file.jsonl`` and ``validation/validation_file.jsonl`` with ``prompt`` (text or chat
messages), ``chosen_response`` and ``rejected_response`` (text). Conversational responses become the text of their
messages; HelpSteer3 ties stay dropped. The Customizer requires a validation file: without validation rows the
last training row is reused (as a collection does)."""

from __future__ import annotations

from typing import Any

from dpo_operator.collect.dataset import DatasetFiles
from dpo_operator.nemo.preference_jsonl import jsonl_files
from dpo_operator.train.formats import response_text
from dpo_operator.train.sources import Splits


def customizer_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": row["prompt"], "chosen_response": response_text(row["chosen_response"]),
            "rejected_response": response_text(row["rejected_response"])}


def customizer_files(splits: Splits, metrics: bytes = b"{}") -> DatasetFiles:
    return jsonl_files(splits, customizer_row, metrics)
