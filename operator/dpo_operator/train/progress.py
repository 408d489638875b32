"""What a person and the operator see of a training run while it runs (rank 0 only).

- a log line when each phase starts and ends (loading model, reference pass, training, validating, saving);
- a log line every ``log_every_steps`` steps: step/total, loss and its smoothed value, tokens/s, ETA;
- a ``dpo-progress`` line on stdout (:mod:`dpo_operator.api.progress`) at every phase change and at most every
  ``interval_seconds`` in between, which the operator reads into ``status.progress``.

The smoothed loss is an exponential moving average with weight ``EMA_WEIGHT`` on the newest step, bias-corrected
(divided by ``1 - (1 - EMA_WEIGHT)^n``, as Adam does) so that the first values are not pulled toward 0. The ETA is
the remaining steps at the mean step time of this run so far (since training started or resumed).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from dpo_operator.api.progress import TrainingReport, eta_text

log = logging.getLogger(__name__)
EMA_WEIGHT = 0.1


class Ema:
    """Bias-corrected exponential moving average."""

    def __init__(self, weight: float = EMA_WEIGHT) -> None:
        self.weight, self._raw, self._n = weight, 0.0, 0

    def add(self, value: float) -> float:
        self._n += 1
        self._raw = (1 - self.weight) * self._raw + self.weight * value
        return self.value

    @property
    def value(self) -> float:
        return self._raw / (1 - (1 - self.weight) ** self._n) if self._n else float("nan")


class TrainerProgress:
    def __init__(self, total_steps: int | None, enabled: bool, log_every_steps: int = 10, interval_seconds: float = 5.0,
                 out: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled, self.log_every, self.interval = enabled, max(1, log_every_steps), interval_seconds
        self.out, self.clock = out, clock
        self.report = TrainingReport(phase="starting", total_steps=total_steps)
        self.loss = Ema()
        self._last_emit: float | None = None
        self._train_started: float | None = None
        self._first_step = 0

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Log the phase's start and end (with its duration) and report it at once."""
        previous, started = self.report.phase, self.clock()
        self.report.phase = name
        if self.enabled:
            log.info("phase %s: started", name)
        self.emit(force=True)
        yield
        if self.enabled:
            log.info("phase %s: done in %.1f s", name, self.clock() - started)
        self.report.phase = previous  # a nested phase (validating) returns to its parent (training)

    def finished(self) -> None:
        """The last line: everything is written (the result follows in the termination message)."""
        self.report.phase, self.report.eta_seconds = "done", 0.0
        self.emit(force=True)

    def training_from(self, step: int) -> None:
        """Training (re)starts at ``step``: the ETA counts the step time from here."""
        self._train_started, self._first_step = self.clock(), step
        self.report.step = step

    def step(self, record: dict[str, Any]) -> None:
        """A step's metrics record (``StepReports``): loss, epoch, tokens/s."""
        r = self.report
        r.step, r.epoch = int(record["step"]), round(float(record["epoch"]), 4)
        r.train_loss = round(float(record["loss"]), 6)
        r.smoothed_train_loss = round(self.loss.add(float(record["loss"])), 6)
        r.tokens_per_second = round(float(record["tokens_per_second"]), 1)
        r.eta_seconds = self._eta()
        last = r.total_steps is not None and r.step >= r.total_steps
        if self.enabled and (r.step % self.log_every == 0 or last or r.step == self._first_step + 1):
            log.info("step %d/%s (%s) epoch %.2f loss %.4f (smoothed %.4f) %.0f tokens/s ETA %s", r.step,
                     r.total_steps, _percent(r.step, r.total_steps), r.epoch, r.train_loss, r.smoothed_train_loss,
                     r.tokens_per_second, eta_text(r.eta_seconds) or "unknown")
        self.emit(force=last)

    def validation(self, metrics: dict[str, float]) -> None:
        """Validation metrics (``val/...``) just computed at the current step."""
        self.report.val_loss = round(metrics["val/loss"], 6)
        self.report.val_accuracy = round(metrics["val/rewards/accuracies"], 6)
        if self.enabled:
            log.info("validation at step %d: loss %.4f, preference accuracy %.3f, reward margin %.4f",
                     self.report.step, metrics["val/loss"], metrics["val/rewards/accuracies"],
                     metrics["val/rewards/margins"])
        self.emit(force=True)

    def _eta(self) -> float | None:
        r = self.report
        done = r.step - self._first_step
        if self._train_started is None or done <= 0 or r.total_steps is None:
            return None
        return round((self.clock() - self._train_started) / done * max(0, r.total_steps - r.step), 1)

    def emit(self, force: bool = False) -> None:
        """The operator's line, at most every ``interval`` seconds unless ``force``."""
        if not self.enabled:
            return
        now = self.clock()
        if not force and self._last_emit is not None and now - self._last_emit < self.interval:
            return
        self._last_emit = now
        self.report.time = time.time()
        print(self.report.line(), file=self.out or sys.stdout, flush=True)


def _percent(done: int, total: int | None) -> str:
    return f"{100.0 * done / total:.1f}%" if total else "?%"
