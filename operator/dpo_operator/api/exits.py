"""The exit-code contract between a workload pod and the operator, in one place.

A pod exits 0 on success, 1 for a failure that may recover (the Job retries it, up to ``backoffLimit``), and one of
:data:`UNRECOVERABLE` for a failure no retry can fix: the Job's ``podFailurePolicy`` fails the Job at once on those
(``FailJob``), and the operator names the cause by the code (:data:`REASONS`). The pod's termination message says
the rest (the error, in words a person can act on).

- 3 ``BAD_INPUT``: an invalid spec, a missing or empty dataset, a bad row, a malformed input file, a path leaving
  its volume (any ``ValueError``, ``FileNotFoundError`` or ``NotADirectoryError`` the workload raises);
- 4 ``ENDPOINT_MISCONFIGURED``: the LLM endpoint answers but serves other models, refuses the API key, or its URL
  never answered (the name does not resolve; the port refused every connection);
- 5 ``NOT_FOUND``: what the spec names does not exist (a model path or repository, a workflow).
"""

from __future__ import annotations

from enum import IntEnum

from dpo_operator.api.reasons import Reason


class ExitCode(IntEnum):
    OK = 0
    MAY_RECOVER = 1
    BAD_INPUT = 3
    ENDPOINT_MISCONFIGURED = 4
    NOT_FOUND = 5


UNRECOVERABLE = (ExitCode.BAD_INPUT, ExitCode.ENDPOINT_MISCONFIGURED, ExitCode.NOT_FOUND)
REASONS: dict[int, Reason] = {ExitCode.BAD_INPUT: Reason.WorkloadConfigError,
                              ExitCode.ENDPOINT_MISCONFIGURED: Reason.EndpointMisconfigured,
                              ExitCode.NOT_FOUND: Reason.NotFound}


class Unrecoverable(Exception):
    """A workload failure no retry can fix; ``exit_code`` says which kind."""

    exit_code: ExitCode = ExitCode.BAD_INPUT


class EndpointMisconfigured(Unrecoverable):
    """The LLM endpoint is not the one the spec means (other models, a refused key, a URL that never answered)."""

    exit_code = ExitCode.ENDPOINT_MISCONFIGURED


class NotFound(Unrecoverable):
    """A model, repository or workflow the spec names does not exist."""

    exit_code = ExitCode.NOT_FOUND


def exception_chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes and contexts, and the members of exception groups (breadth first, bounded)."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo and len(seen) < 50:
        current = todo.pop(0)
        if any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        if isinstance(current, BaseExceptionGroup):
            todo += list(current.exceptions)
    return seen


def _repository_missing(exc: BaseException) -> bool:
    try:
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
    except ImportError:  # the operator image has no huggingface_hub errors to meet
        return False
    return isinstance(exc, (RepositoryNotFoundError, RevisionNotFoundError))


def exit_code(exc: BaseException) -> int:
    """The code a workload exits with after ``exc`` (see the module's docstring)."""
    chain = exception_chain(exc)
    for found in chain:
        if isinstance(found, Unrecoverable):
            return int(found.exit_code)
    if any(_repository_missing(found) for found in chain):
        return int(ExitCode.NOT_FOUND)
    if isinstance(exc, (ValueError, FileNotFoundError, NotADirectoryError)):
        return int(ExitCode.BAD_INPUT)
    return int(ExitCode.MAY_RECOVER)
