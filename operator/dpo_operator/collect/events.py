"""Candidate events: one scored candidate response at one decision point of one episode.

Every candidate is checked before it takes part in pair building, whatever produced it (a workflow plugin, a
NAT workflow's ``TTC_END`` steps, an offline file): :func:`check_candidate` either returns a clean event or the
reason it was rejected, so that one bad candidate is counted and reported instead of failing the collection or
writing ``null`` into the dataset.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from typing import Any, NamedTuple

Message = dict[str, Any]
Prompt = str | list[Message]

# Why a candidate was rejected: the keys of ``invalidCandidates`` in metrics.json.
NON_NUMERIC_SCORE = "nonNumericScore"
NON_FINITE_SCORE = "nonFiniteScore"
MISSING_SCORE = "missingScore"
MISSING_TURN = "missingTurnId"
MISSING_EXAMPLE = "missingExampleId"
NULL_OUTPUT = "nullOutput"
EMPTY_OUTPUT = "emptyOutput"
MALFORMED_PROMPT = "malformedPrompt"
PROMPT_WITHOUT_TEXT = "promptWithoutText"
BAD_INDEX = "nonIntegerIndex"


class CandidateEvent(NamedTuple):  # a tuple: cheap to build by the million
    example_id: str
    turn_id: str
    turn_index: int
    candidate_index: int
    input: Prompt
    output: str
    score: float


class RunOutput(NamedTuple):
    """One collection run's checked candidates, and (NAT, with ``finetuning.reward_function``) the average score
    of that evaluator over the run's examples."""

    events: list[CandidateEvent]
    evaluator_reward: tuple[str, float] | None = None  # (evaluator name, average score)


def message_text(message: Message) -> str | None:
    """The text of a chat message: its string ``content``, or the text parts of a multi-part content list.

    ``None`` when the message has no text (a tool-call message with ``content: null``, or no ``content``).
    """
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "".join(parts) if parts else None
    return None


def _output_text(output: Any) -> str | None:
    if output is None:
        return None
    if isinstance(output, str):
        return output
    if isinstance(output, (dict, list)):  # a structured answer (e.g. a tool call): keep it, as JSON
        return json.dumps(output, ensure_ascii=False, sort_keys=True)
    return str(output)


def _check_prompt(prompt: Any, full_history: bool) -> tuple[Prompt | None, str | None]:
    if prompt is None:
        return "", None
    if isinstance(prompt, str):
        return prompt, None
    if not isinstance(prompt, list) or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in prompt):
        return None, MALFORMED_PROMPT
    if not full_history and (not prompt or message_text(prompt[-1]) is None):
        return None, PROMPT_WITHOUT_TEXT  # the dataset's prompt would be the last message's (missing) text
    return prompt, None  # tool-call messages (content: null) are kept as they are in the full history


def check_candidate(example_id: Any, turn_id: Any, output: Any, score: Any, *, prompt: Any = "", turn_index: Any = 0,
                    candidate_index: Any = 0, full_history: bool = True) -> CandidateEvent | str:
    """A clean :class:`CandidateEvent`, or the reason (one of this module's constants) why there is none."""
    if example_id is None:
        return MISSING_EXAMPLE
    if turn_id is None:
        return MISSING_TURN
    if score is None:
        return MISSING_SCORE
    if isinstance(score, bool):
        return NON_NUMERIC_SCORE
    try:
        value = float(score)
    except (TypeError, ValueError):
        return NON_NUMERIC_SCORE
    if not math.isfinite(value):
        return NON_FINITE_SCORE
    text = _output_text(output)
    if text is None:
        return NULL_OUTPUT
    if not text.strip():
        return EMPTY_OUTPUT
    checked_prompt, problem = _check_prompt(prompt, full_history)
    if problem is not None:
        return problem
    try:
        turn, candidate = int(turn_index or 0), int(candidate_index or 0)
    except (TypeError, ValueError):
        return BAD_INDEX
    return CandidateEvent(str(example_id), str(turn_id), turn, candidate, checked_prompt, text, value)


class CandidateCheck:
    """Checks candidates and counts the rejected ones by reason."""

    def __init__(self, full_history: bool) -> None:
        self.full_history = full_history
        self.rejected: Counter[str] = Counter()

    def event(self, event: CandidateEvent) -> CandidateEvent | None:
        checked = check_candidate(event.example_id, event.turn_id, event.output, event.score, prompt=event.input,
                                  turn_index=event.turn_index, candidate_index=event.candidate_index,
                                  full_history=self.full_history)
        return self._keep(checked)

    def raw(self, raw: dict[str, Any]) -> CandidateEvent | None:
        checked = check_candidate(raw.get("example_id"), raw.get("turn_id"), raw.get("output"), raw.get("score"),
                                  prompt=raw.get("input", ""), turn_index=raw.get("turn_index"),
                                  candidate_index=raw.get("candidate_index"), full_history=self.full_history)
        return self._keep(checked)

    def events(self, events: Iterable[CandidateEvent]) -> list[CandidateEvent]:
        return [e for e in map(self.event, events) if e is not None]

    def _keep(self, checked: CandidateEvent | str) -> CandidateEvent | None:
        if isinstance(checked, str):
            self.rejected[checked] += 1
            return None
        return checked
