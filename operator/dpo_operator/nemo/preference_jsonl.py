"""Preference rows as JSONL files, in whichever row shape a NeMo service reads (``convert`` gives one row's shape).

Both NeMo generations need a validation file: without validation rows the last training row is reused (as a
collection does)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from dpo_operator.collect.dataset import DatasetFiles
from dpo_operator.train.sources import Splits

Convert = Callable[[dict[str, Any]], dict[str, Any]]


def _lines(rows: Any, convert: Convert) -> Iterator[bytes]:
    for index in range(len(rows)):
        yield json.dumps(convert(rows.row(index)), ensure_ascii=False).encode() + b"\n"


def jsonl_files(splits: Splits, convert: Convert, metrics: bytes = b"{}") -> DatasetFiles:
    """The training and validation JSONL files (``metrics`` rides along as ``metrics.json``)."""
    training = b"".join(_lines(splits.training, convert))
    if splits.validation is not None:
        validation = b"".join(_lines(splits.validation, convert))
    else:
        validation = training[training.rstrip(b"\n").rfind(b"\n") + 1:]
    return DatasetFiles(training, validation, metrics)
