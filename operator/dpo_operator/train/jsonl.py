"""A JSONL preference file, indexed in one pass (byte offset, size and line number of each row: 16 bytes a row)
and read, parsed and validated a row at a time: host memory does not grow with the file, and every problem names
the file and line."""

from __future__ import annotations

import json
from array import array
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dpo_operator.train.formats import Normaliser, Row, RowError, nemo

# a row's bound: ~500k tokens of text, far beyond any context a DPO pair is trained on; a larger line is a broken
# file (a missing newline, a pasted blob), refused at once instead of being tokenised for minutes
MAX_ROW_BYTES = 2 * 1024 * 1024


class PreferenceFile:
    """A JSONL file's rows by index; ``row`` gives them in our format (``normalise``: ours, as written)."""

    def __init__(self, path: Path, normalise: Normaliser = nemo) -> None:
        self.path = path
        self.normalise = normalise
        self._offsets = array("q")
        self._sizes = array("i")
        self._lines = array("i")
        with open(path, "rb") as handle:
            offset = 0
            number = 0
            while line := handle.readline(MAX_ROW_BYTES + 1):  # never more than one row's bound in memory
                number += 1
                if len(line.rstrip(b"\r\n")) > MAX_ROW_BYTES:
                    raise RowError(f"{path}:{number}: row is larger than {MAX_ROW_BYTES // 2**20} MiB "
                                   "(the limit of a preference row)")
                if line.strip():
                    self._offsets.append(offset)
                    self._sizes.append(len(line))
                    self._lines.append(number)
                offset += len(line)
        if not self._offsets:
            raise ValueError(f"{path} holds no preference rows")
        self._handle = open(path, "rb")  # noqa: SIM115  (kept open: rows are read on demand)

    def __len__(self) -> int:
        return len(self._offsets)

    def sizes(self) -> np.ndarray:
        """Each row's size in bytes: a length proxy for grouping that needs no tokenisation pass."""
        return np.frombuffer(self._sizes, dtype=np.int32)

    def where(self, index: int) -> str:
        """``file:line`` of row ``index``, for messages."""
        return f"{self.path}:{self._lines[index]}"

    def raw(self, index: int) -> Mapping[str, Any]:
        """Row ``index`` as stored (a JSON object)."""
        self._handle.seek(self._offsets[index])
        try:
            row = json.loads(self._handle.readline())
        except ValueError as exc:  # bad JSON, or bytes that are not UTF-8
            raise RowError(f"{self.where(index)}: not a JSON object ({exc})") from None
        if not isinstance(row, dict):
            raise RowError(f"{self.where(index)}: a row must be a JSON object, not {type(row).__name__}")
        return row

    def row(self, index: int) -> Row:
        try:
            row = self.normalise(self.raw(index))
        except RowError:
            raise
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise RowError(f"{self.where(index)}: {exc}") from None
        if row is None:
            raise RowError(f"{self.where(index)}: a tie (no preference)")
        return row

    def columns(self) -> list[str]:
        """The keys of the first row that parses (the format is detected from them)."""
        for index in range(min(len(self), 16)):
            try:
                return list(self.raw(index))
            except RowError:
                continue
        return []

    def values(self, column: str) -> np.ndarray:
        """One column of every row (a pass over the file; rows without it read as NaN)."""
        out = np.empty(len(self), dtype=np.float64)
        for index in range(len(self)):
            value = self.raw(index).get(column)
            out[index] = value if isinstance(value, (int, float)) and not isinstance(value, bool) else np.nan
        return out

    def close(self) -> None:
        self._handle.close()
