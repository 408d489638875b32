"""Remote clean-up with the user's Secret as it is now, telling a missing Secret or a refused key apart.

Deleting or cancelling remote work prefers the user's current key (a rotated one); when that Secret is gone or its
key refused (401/403) the caller falls back to the credentials captured at submission
(:mod:`dpo_operator.kube.captured`). Any other remote error is not a refusal and propagates (the deletion retries)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from dpo_operator.api.reasons import Reason
from dpo_operator.kube.secrets import SecretMissing
from dpo_operator.nemo.http import NemoError
from dpo_operator.runtime.errors import PermanentFailure

log = logging.getLogger(__name__)
T = TypeVar("T")
Refusal = SecretMissing | NemoError


def with_own_key(action: Callable[[], T]) -> T | Refusal:
    """``action``'s answer, or why the user's key could not do it: the Secret missing, or a 401/403."""
    try:
        return action()
    except SecretMissing as exc:
        return exc
    except NemoError as exc:
        if exc.status not in (401, 403):
            raise
        return exc


def before_cancelling_without_key(job_id: str | None, job: str, spec_valid: bool, refused: Exception | None) -> str | None:
    """With neither the user's key nor captured credentials: "no remote job had been created" when none was
    (credentials are captured before any job is created); an InvalidSpec failure when the spec is not valid (where
    ``job`` runs is unknown); the key's refusal raised again; else None, after a warning: cancel without an API key
    (the job was never submitted with one)."""
    if job_id is None:
        return "no remote job had been created"
    if not spec_valid:
        raise PermanentFailure(Reason.InvalidSpec, f"{job} cannot be cancelled: the spec is not valid (so where it "
                               "runs is unknown) and no credentials were captured; fix the spec")
    if isinstance(refused, NemoError):
        raise refused
    log.warning("%s; cancelling without an API key", refused)
    return None
