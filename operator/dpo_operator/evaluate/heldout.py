"""Which examples an evaluation plays: the pool drawn with the evaluation's seed, minus the training examples.

Training examples are identified by content (a built-in or plugin workflow's example payload; a NAT dataset entry),
never by position: the same position in another seed's pool is another example. What was excluded, and how, is
described in words for the status.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from dpo_operator.api.evaluation import DPOEvaluationSpec

T = TypeVar("T")
TRAINING_EXAMPLES_ENV = "DPO_EVALUATION_TRAINING_EXAMPLES"
MAX_RANGES_SHOWN = 5  # the description reaches the status through a 4 KiB termination message


@dataclass(frozen=True)
class TrainingExamples:
    """What the referenced DPOCollection played (the operator reads its spec and passes this to the pod)."""

    collection: str
    workflow: dict[str, Any]  # the collection's spec.workflow, as stored
    seed: int

    @classmethod
    def from_json(cls, text: str | None) -> "TrainingExamples | None":
        if not text:
            return None
        raw = json.loads(text)
        return cls(collection=raw["collection"], workflow=raw["workflow"], seed=int(raw["seed"]))

    def to_json(self) -> str:
        return json.dumps({"collection": self.collection, "workflow": self.workflow, "seed": self.seed},
                          sort_keys=True)


@dataclass(frozen=True)
class Selection(Generic[T]):
    examples: list[T]
    pool: int
    excluded: int
    description: str


def content_key(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, default=str)


def select(spec: DPOEvaluationSpec, pool: Sequence[T], payload: Callable[[T], Any],
           training: set[str] | None, training_source: str | None) -> Selection[T]:
    """The pool minus ``spec.heldOut``'s index ranges and the examples whose content is in ``training``, capped at
    ``spec.maxExamples``."""
    held_out = spec.held_out
    ranges = (held_out.exclude_indices if held_out else None) or []
    by_index = {i for r in ranges for i in range(r.start, min(r.end, len(pool)))}
    by_content = {i for i, example in enumerate(pool)
                  if i not in by_index and training and content_key(payload(example)) in training}
    kept = [example for i, example in enumerate(pool) if i not in by_index and i not in by_content]
    if spec.max_examples is not None:
        kept = kept[:spec.max_examples]
    parts = []
    if ranges:
        shown = ", ".join(f"[{r.start}, {r.end})" for r in ranges[:MAX_RANGES_SHOWN])
        shown += f" and {len(ranges) - MAX_RANGES_SHOWN} more ranges" if len(ranges) > MAX_RANGES_SHOWN else ""
        parts.append(f"{len(by_index)} by index ({shown})")
    if training_source is not None:
        parts.append(f"{len(by_content)} that {training_source} (compared by content)")
    excluded = len(by_index) + len(by_content)
    described = f"excluded {'; '.join(parts)}" if parts else "nothing excluded (no spec.heldOut)"
    cap = f"; capped at maxExamples {spec.max_examples}" if spec.max_examples is not None else ""
    return Selection(kept, len(pool), excluded,
                     f"pool of {len(pool)} examples (seed {spec.seed}); {described}; evaluated {len(kept)}"
                     + cap)
