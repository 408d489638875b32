"""Mutating admission webhooks, emulated: functions a test registers play a webhook (for example Kueue's, which
suspends a Job labelled with a queue name when it is created). Each gets (group, kind, object) of every object
being created, after defaulting and before validation, and may change the object in place."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Mutator = Callable[[str, str, dict[str, Any]], None]
MUTATORS: list[Mutator] = []


@contextmanager
def mutating(mutator: Mutator) -> Iterator[None]:
    """Call ``mutator`` on every create while the block runs."""
    MUTATORS.append(mutator)
    try:
        yield
    finally:
        MUTATORS.remove(mutator)


def mutate(group: str, kind: str, obj: dict[str, Any]) -> None:
    for mutator in list(MUTATORS):
        mutator(group, kind, obj)
