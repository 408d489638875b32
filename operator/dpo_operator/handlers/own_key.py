"""Remote clean-up with the user's Secret as it is now, telling a missing Secret or a refused key apart.

Deleting or cancelling remote work prefers the user's current key (a rotated one); when that Secret is gone or its
key refused (401/403) the caller falls back to the credentials captured at submission
(:mod:`dpo_operator.kube.captured`). Any other remote error is not a refusal and propagates (the deletion retries)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from dpo_operator.kube.secrets import SecretMissing
from dpo_operator.nemo.http import NemoError

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
