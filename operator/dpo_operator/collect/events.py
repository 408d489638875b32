"""Candidate events: one scored candidate response at one decision point of one episode."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

Message = dict[str, str]
Prompt = str | list[Message]


class CandidateEvent(NamedTuple):  # a tuple: cheap to build by the million
    example_id: str
    turn_id: str
    turn_index: int
    candidate_index: int
    input: Prompt
    output: str
    score: float


class BadEvent(ValueError):
    """An event that cannot take part in pair building."""


def event_from_dict(raw: dict[str, Any]) -> CandidateEvent:
    """Parse an event from a workflow plugin or a JSONL file; rejects what could silently skew pairs."""
    missing = [k for k in ("example_id", "turn_id", "output", "score") if raw.get(k) is None]
    if missing:
        raise BadEvent(f"candidate event lacks {', '.join(missing)}")
    try:
        score = float(raw["score"])
    except (TypeError, ValueError):
        raise BadEvent(f"score {raw['score']!r} is not a number") from None
    if not math.isfinite(score):
        raise BadEvent(f"score {score} is not finite")
    prompt = raw.get("input", "")
    if not isinstance(prompt, (str, list)):
        raise BadEvent("input must be a string or a list of chat messages")
    return CandidateEvent(
        example_id=str(raw["example_id"]),
        turn_id=str(raw["turn_id"]),
        turn_index=int(raw.get("turn_index") or 0),
        candidate_index=int(raw.get("candidate_index") or 0),
        input=prompt,
        output=str(raw["output"]),
        score=score,
    )
