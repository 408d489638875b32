"""The workflow plugin interface: an agent episode that asks for candidates at each decision point.

A workflow is built by a factory ``factory(config: dict) -> Workflow``, named in the spec either as a
built-in (``tictactoe``), an import path (``package.module:factory``), or an entry point in the group
``dpo_operator.workflows``.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

from dpo_operator.api.exits import NotFound
from dpo_operator.collect.events import CandidateEvent, Message

Sampler = Callable[[list[Message]], Awaitable[list[str | None]]]
"""Returns the candidate responses (as many as the spec asks for) for one decision point; ``None`` for a
choice without text (the candidate checks reject it)."""


@dataclass(frozen=True)
class Example:
    example_id: str
    payload: Any


class Workflow(Protocol):
    def examples(self, count: int, seed: int) -> list[Example]:
        """The dataset examples (episode starting points) of one run."""
        ...

    async def episode(self, example: Example, sample: Sampler, seed: int) -> list[CandidateEvent]:
        """Play one episode; return every scored candidate of every decision point."""
        ...


BUILTIN = {"tictactoe": "dpo_operator.collect.tictactoe:TicTacToeWorkflow"}


class WorkflowNotFound(NotFound, ValueError):
    """No built-in, entry point or importable factory has the name (exit code 5: no retry can help)."""


def _import(path: str) -> Callable[..., Workflow]:
    module_name, _, attribute = path.partition(":")
    if not attribute:
        raise WorkflowNotFound(f"workflow {path!r} is neither built-in ({', '.join(BUILTIN)}) nor 'module:factory'")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise WorkflowNotFound(f"cannot load workflow {path!r}: {exc}") from None


def workflow_factory(name: str) -> Callable[..., Workflow]:
    """The factory a workflow name stands for (checked before anything is asked of the LLM endpoint)."""
    if name in BUILTIN:
        return _import(BUILTIN[name])
    plugins = {ep.name: ep for ep in entry_points(group="dpo_operator.workflows")}
    if name in plugins:
        return plugins[name].load()
    if ":" not in name:
        known = sorted({*BUILTIN, *plugins})
        raise WorkflowNotFound(f"workflow {name!r} not found: it is neither built-in nor an installed plugin "
                               f"(known: {', '.join(known)}) nor 'module:factory'; check workflow.name")
    return _import(name)


def load_workflow(name: str, config: dict[str, Any] | None) -> Workflow:
    return workflow_factory(name)(config or {})
