"""Figures about preference rows: what was read and rejected (by line or row number), empty fields, identical pairs,
prompts that already end with the chosen response, exact and near duplicates, token lengths with the model's
tokenizer (or words without one), the share cut at ``maxSeqLength`` and the chosen-vs-rejected length bias.

One pass over the rows; memory per row is a few integers (lengths and 8-byte hashes), never the text.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dpo_operator.train.formats import RowError, prompt_text, response_text

MAX_LISTED = 10  # rejected rows named in messages and the card
PERCENTILES = (50, 90, 99)
_SPACE = re.compile(r"\s+")
_TRAILING = re.compile(r"[\s.!?,;:]+$")

# (prompt, chosen, rejected) token counts of a row in our format
Lengths = Callable[[dict[str, Any]], tuple[int, int, int]]


def word_lengths(row: dict[str, Any]) -> tuple[int, int, int]:
    """Whitespace words: the fallback when the model's tokenizer is not at hand."""
    return (len(prompt_text(row["prompt"]).split()), len(response_text(row["chosen_response"]).split()),
            len(response_text(row["rejected_response"]).split()))


def tokenizer_lengths(tokenizer: Any) -> Lengths:
    from dpo_operator.train.templates import row_ids

    def lengths(row: dict[str, Any]) -> tuple[int, int, int]:
        prompt, chosen, rejected = row_ids(tokenizer, row)
        return len(prompt), len(chosen), len(rejected)

    return lengths


def _digest(*parts: str) -> int:
    return int.from_bytes(hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest(), "little")


def _near(text: str) -> str:
    """Lower case, spacing collapsed, closing punctuation dropped: what does not change a pair's meaning (inner
    punctuation may: a board drawn with dots and dashes)."""
    return _TRAILING.sub("", _SPACE.sub(" ", text.lower()).strip())


@dataclass
class Figures:
    """What the check measured on one split."""

    rows_read: int = 0
    rejected: list[str] = field(default_factory=list)  # the first MAX_LISTED, "where: problem"
    rows_rejected: int = 0
    ties_dropped: int = 0
    pairs: int = 0
    empty: int = 0
    identical: int = 0
    prompt_ends_with_chosen: int = 0
    prompt_ends_with_chosen_rows: list[str] = field(default_factory=list)
    duplicates: int = 0
    near_duplicates: int = 0
    length_unit: str = "tokens"
    max_seq_length: int = 0
    truncated: int = 0
    prompt_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    chosen_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    rejected_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))

    def share(self, count: int) -> float:
        return count / self.pairs if self.pairs else 0.0

    @property
    def length_ratio(self) -> float | None:
        """Mean chosen length / mean rejected length (None without pairs or with empty rejected responses)."""
        rejected = float(self.rejected_lengths.mean()) if len(self.rejected_lengths) else 0.0
        return float(self.chosen_lengths.mean()) / rejected if rejected > 0 else None

    @property
    def length_bias(self) -> float | None:
        """How far the ratio is from 1, either way (2.0: one side is twice as long on average)."""
        ratio = self.length_ratio
        return None if not ratio else max(ratio, 1.0 / ratio)

    def percentiles(self) -> dict[str, dict[str, int]]:
        total = self.prompt_lengths + np.maximum(self.chosen_lengths, self.rejected_lengths)
        out = {}
        for name, values in (("prompt", self.prompt_lengths), ("chosen", self.chosen_lengths),
                             ("rejected", self.rejected_lengths), ("total", total)):
            if len(values):
                out[name] = {**{f"p{p}": int(np.percentile(values, p)) for p in PERCENTILES}, "max": int(values.max())}
        return out

    def summary(self) -> dict[str, Any]:
        """The figures as JSON (the data card's body)."""
        bias = self.length_ratio
        return {"rowsRead": self.rows_read, "rowsRejected": self.rows_rejected, "rejectedRows": self.rejected,
                "tiesDropped": self.ties_dropped, "pairs": self.pairs, "empty": self.empty, "identical": self.identical,
                "promptEndsWithChosen": self.prompt_ends_with_chosen,
                "promptEndsWithChosenRows": self.prompt_ends_with_chosen_rows,
                "duplicates": self.duplicates, "nearDuplicates": self.near_duplicates, "lengthUnit": self.length_unit,
                "maxSeqLength": self.max_seq_length, "truncated": self.truncated,
                "truncatedShare": round(self.share(self.truncated), 4), "lengthPercentiles": self.percentiles(),
                "chosenToRejectedLengthRatio": round(bias, 4) if bias is not None else None}


def _ends_with(prompt: str, chosen: str) -> bool:
    answer = chosen.strip()
    return bool(answer) and prompt.rstrip().endswith(answer)


def measure(rows: Any, lengths: Lengths, max_seq_length: int, unit: str = "tokens", root: str = "") -> Figures:
    """One pass over ``rows`` (``sources.PreferenceRows`` or ``jsonl.PreferenceFile``); rows are named relative to
    the directory ``root``."""

    def where(index: int) -> str:
        return str(rows.where(index)).removeprefix(root)

    figures = Figures(length_unit=unit, max_seq_length=max_seq_length, ties_dropped=getattr(rows, "dropped", 0))
    count = len(rows)
    figures.rows_read = count + figures.ties_dropped
    prompt_len = np.zeros(count, dtype=np.int32)
    chosen_len = np.zeros(count, dtype=np.int32)
    rejected_len = np.zeros(count, dtype=np.int32)
    exact = np.zeros(count, dtype=np.uint64)
    near = np.zeros(count, dtype=np.uint64)
    good = np.zeros(count, dtype=bool)
    for index in range(count):
        try:
            row = rows.row(index)
            sizes = lengths(row)
        except RowError as exc:
            _reject(figures, str(exc).removeprefix(root))
            continue
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # e.g. a chat template refusing the row
            _reject(figures, f"{where(index)}: cannot tokenise the row: {type(exc).__name__}: {exc}")
            continue
        good[index] = True
        prompt = prompt_text(row["prompt"])
        chosen, rejected = response_text(row["chosen_response"]), response_text(row["rejected_response"])
        key = json.dumps(row["prompt"], sort_keys=True) if not isinstance(row["prompt"], str) else row["prompt"]
        exact[index] = _digest(key, chosen, rejected)
        near[index] = _digest(_near(prompt), _near(chosen), _near(rejected))
        if not prompt.strip() or not chosen.strip() or not rejected.strip():
            figures.empty += 1
        if chosen.strip() == rejected.strip():
            figures.identical += 1
        if _ends_with(prompt, chosen):
            figures.prompt_ends_with_chosen += 1
            if len(figures.prompt_ends_with_chosen_rows) < MAX_LISTED:
                figures.prompt_ends_with_chosen_rows.append(where(index))
        prompt_len[index], chosen_len[index], rejected_len[index] = sizes
    figures.pairs = int(good.sum())
    figures.duplicates = figures.pairs - len(np.unique(exact[good]))
    figures.near_duplicates = figures.pairs - len(np.unique(near[good]))
    figures.prompt_lengths, figures.chosen_lengths, figures.rejected_lengths = \
        prompt_len[good], chosen_len[good], rejected_len[good]
    longest = np.maximum(figures.chosen_lengths, figures.rejected_lengths)
    if max_seq_length > 0:  # 0: no training length to cut at (a collection's check)
        figures.truncated = int(((figures.prompt_lengths + longest > max_seq_length) |
                                 (longest > max(1, max_seq_length // 2))).sum())
    return figures


def _reject(figures: Figures, problem: str) -> None:
    figures.rows_rejected += 1
    if len(figures.rejected) < MAX_LISTED:
        figures.rejected.append(problem)
