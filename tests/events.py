"""Test-only: candidate events from plain dicts, with the reason a bad one is left out."""

from __future__ import annotations

from typing import Any

from dpo_operator.collect.events import BAD_INDEX, EMPTY_OUTPUT, MALFORMED_PROMPT, MISSING_EXAMPLE, MISSING_SCORE, MISSING_TURN, NON_FINITE_SCORE, NON_NUMERIC_SCORE, NULL_OUTPUT, PROMPT_WITHOUT_TEXT, CandidateEvent, check_candidate


class BadEvent(ValueError):
    """An event that cannot take part in pair building."""


_MESSAGES = {
    MISSING_EXAMPLE: "candidate event lacks example_id", MISSING_TURN: "candidate event lacks turn_id",
    MISSING_SCORE: "candidate event lacks score", NULL_OUTPUT: "candidate event lacks output",
    NON_FINITE_SCORE: "score is not finite", NON_NUMERIC_SCORE: "score is not a number",
    EMPTY_OUTPUT: "output is empty", MALFORMED_PROMPT: "input must be a string or a list of chat messages",
    PROMPT_WITHOUT_TEXT: "the last input message has no text content",
    BAD_INDEX: "turn_index or candidate_index is not an integer",
}


def event_from_dict(raw: dict[str, Any], full_history: bool = True) -> CandidateEvent:
    """Parse an event from a workflow plugin or a JSONL file; raises :class:`BadEvent` with the reason."""
    checked = check_candidate(raw.get("example_id"), raw.get("turn_id"), raw.get("output"), raw.get("score"),
                              prompt=raw.get("input", ""), turn_index=raw.get("turn_index"),
                              candidate_index=raw.get("candidate_index"), full_history=full_history)
    if isinstance(checked, str):
        raise BadEvent(f"{_MESSAGES.get(checked, checked)} ({checked}): {str(raw)[:200]}")
    return checked
