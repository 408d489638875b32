"""The data check as a pod runs it (``dpo-operator check-data``): read the dataset as the trainer will, measure both
splits with the model's tokenizer, judge with the spec's thresholds, write the card, answer a ``DataCheckResult``.

Rows no format fits are a failed check, reported as ``DataCheckFailed`` with the columns found; a missing or empty
file fails the pod (exit 3), as it would fail the trainer."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from dpo_operator.api.results import TERMINATION_MESSAGE_LIMIT, DataCheckResult
from dpo_operator.datacheck import card
from dpo_operator.datacheck.figures import Figures, measure, tokenizer_lengths, word_lengths
from dpo_operator.datacheck.verdict import Verdict, judge
from dpo_operator.train.formats import FormatError
from dpo_operator.train.sources import Reading, open_splits

log = logging.getLogger(__name__)
MESSAGES_KEPT = 5  # failures and warnings in the result (the card has them all)
MESSAGE_CHARS = 300


def load_tokenizer(model: str | None) -> tuple[Any, str | None]:
    """The model's tokenizer, or None and why not (then lengths are counted in words)."""
    if not model:
        return None, "no tokenizer to count with (lengths in words)"
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(model), None
    except Exception as exc:  # noqa: BLE001  (any loader failure: fall back to words, said in a warning)
        return None, f"the tokenizer of {model} could not be loaded ({type(exc).__name__}); lengths in words"


def check(directory: Path, reading: Reading, settings: Any, max_seq_length: int, model: str | None,
          card_dir: Path | None, source: dict[str, Any],
          extra: dict[str, Any] | None = None) -> tuple[DataCheckResult, list[tuple[str, bytes]]]:
    """The verdict and the card's files (written to ``card_dir`` when given; ``extra`` added to the card)."""
    try:
        splits = open_splits(directory, reading)
    except FormatError as exc:  # a missing file or an empty one is no verdict on the data: the pod fails (exit 3)
        return DataCheckResult(passed=False, pairs={}, failures=[_short(f"the dataset cannot be read: {exc}")]), []
    tokenizer, fallback = load_tokenizer(model)
    lengths, unit = (tokenizer_lengths(tokenizer), "tokens") if tokenizer is not None else (word_lengths, "words")
    root = str(directory).rstrip("/") + "/"
    figures: dict[str, Figures] = {"training": measure(splits.training, lengths, max_seq_length, unit, root)}
    verdict = judge(figures["training"], settings, "training")
    if splits.validation is not None:
        figures["validation"] = measure(splits.validation, lengths, max_seq_length, unit, root)
        validation = judge(figures["validation"], settings, "validation")
        verdict = Verdict(verdict.failures + [f"validation: {m}" for m in validation.failures if "cannot be read" in m],
                          verdict.warnings + [f"validation: {m}" for m in validation.warnings])
    if fallback:
        verdict.warnings.append(fallback)
    body = {**card.card(figures, verdict, {**source, "format": splits.training.format}), **(extra or {})}
    content = card.files(body, figures["training"])
    if card_dir is not None:
        card.write(card_dir, content)
    result = DataCheckResult(
        passed=verdict.passed, pairs={split: f.pairs for split, f in figures.items()},
        format=splits.training.format, rows_rejected=sum(f.rows_rejected for f in figures.values()),
        ties_dropped=sum(f.ties_dropped for f in figures.values()),
        failures=[_short(m) for m in verdict.failures[:MESSAGES_KEPT]],
        warnings=[_short(m) for m in body["warnings"][:MESSAGES_KEPT]],
        data_card=str(card_dir / card.CARD_FILE) if card_dir is not None else None,
        training_sha256=file_sha256(directory / reading.training))
    while len(result.to_json()) > TERMINATION_MESSAGE_LIMIT and (result.warnings or result.failures):
        (result.warnings or result.failures).pop()
    return result, content


def file_sha256(path: Path) -> str | None:
    """sha256 of a training file (the lineage's dataset digest); None for a directory (save_to_disk)."""
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _short(message: str) -> str:
    return message if len(message) <= MESSAGE_CHARS else message[: MESSAGE_CHARS - 1] + "…"
