"""What a person and the operator see of a collection while it runs.

- a log line when each phase starts and ends (waiting for endpoint, collecting, writing dataset);
- per finished run, NAT's line (``Run 1: Collected 50 trajectories, 120 DPO pairs, avg reward: 0.4523``, logged by
  :func:`dpo_operator.collect.nat_outputs.run_entry`);
- while episodes finish, a readable line and a ``dpo-progress`` line (:mod:`dpo_operator.api.progress`) at most
  every ``interval_seconds``, and a progress line at every phase change and finished run.

The ETA is the remaining episodes at the mean episode rate since collecting started (NAT workflows, whose episodes
run inside NAT's evaluation runner: the remaining runs at the mean run time).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from dpo_operator.api.progress import CollectionReport, eta_text

log = logging.getLogger(__name__)


class CollectorProgress:
    def __init__(self, runs_total: int | None, examples_per_run: int | None, interval_seconds: float = 5.0,
                 out: TextIO | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval, self.out, self.clock = interval_seconds, out, clock
        self.report = CollectionReport(phase="starting", runs_total=runs_total)
        self.examples_per_run(examples_per_run)
        self._rewards = 0.0
        self._started: float | None = None
        self._last_emit: float | None = None

    def examples_per_run(self, count: int | None) -> None:
        """The episodes of one run, once the workflow knows them (None: counted by runs only)."""
        runs = self.report.runs_total
        self.report.examples_total = count * runs if count is not None and runs is not None else None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = self.clock()
        self.report.phase = name
        if name == "collecting":
            self._started = started
        log.info("phase %s: started", name)
        self.emit(force=True)
        yield
        log.info("phase %s: done in %.1f s", name, self.clock() - started)

    def episode_done(self) -> None:
        self.report.examples_done += 1
        self.report.eta_seconds = self._eta()
        if self.emit():
            r = self.report
            log.info("examples %d/%s (%s), %d pairs so far, ETA %s", r.examples_done, r.examples_total,
                     _percent(r.examples_done, r.examples_total), r.pairs, eta_text(r.eta_seconds) or "unknown")

    def run_done(self, candidates: int, rewards: list[float]) -> None:
        r = self.report
        r.runs_completed += 1
        r.candidates += candidates
        r.pairs += len(rewards)
        self._rewards += sum(rewards)
        r.average_reward = round(self._rewards / r.pairs, 6) if r.pairs else None
        r.eta_seconds = self._eta()
        self.emit(force=True)

    def finished(self) -> None:
        self.report.phase, self.report.eta_seconds = "done", 0.0
        self.emit(force=True)

    def _eta(self) -> float | None:
        r = self.report
        if self._started is None:
            return None
        elapsed = self.clock() - self._started
        if r.examples_total is not None and r.examples_done:
            return round(elapsed / r.examples_done * max(0, r.examples_total - r.examples_done), 1)
        if r.runs_total is not None and r.runs_completed:
            return round(elapsed / r.runs_completed * max(0, r.runs_total - r.runs_completed), 1)
        return None

    def emit(self, force: bool = False) -> bool:
        """The operator's line, at most every ``interval`` seconds unless ``force``; whether it went out."""
        now = self.clock()
        if not force and self._last_emit is not None and now - self._last_emit < self.interval:
            return False
        self._last_emit = now
        self.report.time = time.time()
        print(self.report.line(), file=self.out or sys.stdout, flush=True)
        return True


def _percent(done: int, total: int | None) -> str:
    return f"{100.0 * done / total:.1f}%" if total else "?%"
