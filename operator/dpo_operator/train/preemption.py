"""SIGTERM (Kueue preempting or suspending the Job, eviction, a node drain) ends training with a checkpoint.

The handler only raises a flag. After each optimizer step every rank adds its flag to a one-element all-reduce, and
reads the sum one step late (the GPU is never left idle waiting for it): all ranks see the same sum, so they stop
after the same step, save one complete checkpoint together, and exit with :data:`EXIT_CODE`. The grace period
the operator gives training pods (``template.terminationGracePeriodSeconds``, 300 s by default) covers a step and
a save; torchrun passes the signal on and waits as long (``--shutdown-timeout``).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

import torch

from dpo_operator.train.distributed import Environment

log = logging.getLogger(__name__)

EXIT_CODE = 128 + signal.SIGTERM  # what a process ended by SIGTERM reports


class Preempted(Exception):
    """Training stopped on SIGTERM after saving the checkpoint of ``step``."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped on SIGTERM after step {step}; its checkpoint is saved and training resumes "
                         "from it when the pod runs again")
        self.step = step


class StopOnSigterm:
    """A SIGTERM flag, agreed on by every rank (see the module's docstring). A context manager: the previous handler
    is restored on exit."""

    def __init__(self, env: Environment, device: torch.device) -> None:
        self.env, self.device = env, device
        self.requested = False
        self._pending: torch.Tensor | None = None
        self._previous: Any = None

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if not self.requested:
            log.warning("received signal %d: stopping after the current step with a checkpoint", signum)
        self.requested = True

    def __enter__(self) -> "StopOnSigterm":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def agreed(self) -> bool:
        """Called once after every step on every rank: whether all stop now (some rank was signalled a step ago)."""
        flag = torch.tensor([1.0 if self.requested else 0.0], device=self.device)
        self.env.all_sum(flag)
        previous, self._pending = self._pending, flag
        return previous is not None and bool(previous.item() > 0)
