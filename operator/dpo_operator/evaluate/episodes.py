"""One side of an evaluation of a built-in or plugin workflow: every example's episode against one endpoint.

Each decision point gets one response (no test-time compute), requested with a seed derived from spec.seed and the
prompt, so both sides are asked with the same seeds. An episode's score is the mean of its decision points' scores
(the workflow's own scorer); an episode without a finite score is a failure, counted by reason, never a crash.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from dpo_operator.collect.llm import ChatClient, LLMError
from dpo_operator.collect.runner import decision_seed
from dpo_operator.collect.workflow import Example, Workflow

ENDPOINT_ERROR = "endpointError"
ENDPOINT_UNAVAILABLE = "endpointUnavailable"
NON_FINITE_SCORE = "nonFiniteScore"
NO_DECISION_POINTS = "noDecisionPoints"
EPISODE_ERROR = "episodeError"


@dataclass
class SideScores:
    """Per-example scores of one side (``None``: no score), and why some have none."""

    scores: list[float | None]
    failures: Counter[str] = field(default_factory=Counter)
    invalid_answers: int = 0
    first_error: str | None = None
    details: list[dict[str, Any]] = field(default_factory=list)  # per example: decisions, answers, error

    def fail(self, reason: str, error: str) -> None:
        self.failures[reason] += 1
        if self.first_error is None:
            self.first_error = error[:300]


def _invalid(workflow: Workflow, text: str | None, score: float) -> bool:
    """An unparsable or illegal answer: no text, or the score the workflow gives such answers."""
    floor = getattr(workflow, "invalid_answer_score", None)
    return not (text or "").strip() or (floor is not None and score <= floor)


async def play_side(workflow: Workflow, examples: list[Example], chat: ChatClient, seed: int,
                    max_concurrent: int | None) -> SideScores:
    """Every example's episode against ``chat``'s endpoint; the scores in example order."""
    side = SideScores(scores=[None] * len(examples))
    side.details = [{"id": e.example_id} for e in examples]
    try:
        await chat.wait_until_serving()
    except LLMError as exc:
        for _ in examples:
            side.fail(ENDPOINT_UNAVAILABLE, str(exc))
        for detail in side.details:
            detail["error"] = ENDPOINT_UNAVAILABLE
        return side
    slots = asyncio.Semaphore(max_concurrent or len(examples) or 1)

    async def sample(messages: list[dict[str, Any]]) -> list[str | None]:
        return [await chat.complete(messages, decision_seed(seed, 0, messages))]

    async def episode(index: int, example: Example) -> None:
        detail = side.details[index]
        async with slots:
            try:
                events = await workflow.episode(example, sample, seed)
            except (LLMError, OSError) as exc:
                side.fail(ENDPOINT_ERROR, f"{type(exc).__name__}: {exc}")
                detail["error"] = ENDPOINT_ERROR
                return
            except Exception as exc:  # noqa: BLE001  (a plugin's bug fails its episode, not the evaluation)
                side.fail(EPISODE_ERROR, f"{type(exc).__name__}: {exc}")
                detail["error"] = EPISODE_ERROR
                return
        scores = [_finite(e.score) for e in events]
        detail["answers"] = [e.output for e in events]
        detail["decisionScores"] = [e.score if s is not None else None for e, s in zip(events, scores, strict=True)]
        if not events:
            side.fail(NO_DECISION_POINTS, f"example {example.example_id}: the episode had no decision point")
            detail["error"] = NO_DECISION_POINTS
            return
        if any(s is None for s in scores):
            side.fail(NON_FINITE_SCORE, f"example {example.example_id}: the workflow scored an answer "
                                        f"{[e.score for e in events]}")
            detail["error"] = NON_FINITE_SCORE
            return
        side.invalid_answers += sum(_invalid(workflow, e.output, float(e.score)) for e in events)
        side.scores[index] = sum(s for s in scores if s is not None) / len(scores)

    await asyncio.gather(*(episode(i, e) for i, e in enumerate(examples)))
    return side


def _finite(score: Any) -> float | None:
    try:
        value = float(score)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and not isinstance(score, bool) else None
