"""The one reconcile loop every kind goes through (a workqueue, as in controller-runtime).

Every event source — kopf's create/update/resume handlers, child Job/Pod/Deployment events, a finished
dependency, a requeue — only *enqueues* ``(kind, namespace, name, uid)``. The runtime then:

1. coalesces: a key already waiting is not queued twice; one that is being reconciled is run once more after;
2. runs it in the kind's *lane* (a bounded pool of worker threads per lane, and at most ``per_namespace`` of them
   busy with one namespace), so slow remote calls of one kind or tenant cannot hold the others' work;
3. takes the object's lock (:data:`LOCKS`, by uid; the deletion handlers take it too) and reads the object fresh;
4. calls the kind's decision function, which returns a :class:`Result` (an :class:`Outcome` for status, when to
   look again, how long to hold further reconciles: pacing);
5. turns a failure into an outcome (:mod:`runtime.errors`): transient ones and unexpected ones are retried with
   exponential backoff, permanent ones end in phase Failed;
6. writes status once, and schedules the next look (the result's ``requeue_after``, else the kind's
   ``next_check`` of the new status).

Each reconcile is counted and timed (:mod:`runtime.metrics`); the queue is read by the metrics endpoint.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from kubernetes.client.exceptions import ApiException

from dpo_operator.api import KindInfo
from dpo_operator.api.common import Phase
from dpo_operator.api.reasons import Reason
from dpo_operator.config import OperatorConfig
from dpo_operator.kube import custom_objects
from dpo_operator.kube import objects as kube_objects
from dpo_operator.kube.locks import LOCKS
from dpo_operator.kube.pods import WorkloadNotAllowed
from dpo_operator.kube.redact import remote_body
from dpo_operator.kube.secrets import SecretMissing
from dpo_operator.kube.status import TERMINAL_PHASES, Outcome, write_status
from dpo_operator.nemo.http import NemoError
from dpo_operator.runtime import metrics
from dpo_operator.runtime.errors import (
    InvalidSpec,
    PermanentFailure,
    api_message,
    describe_failure,
    is_transient,
)

log = logging.getLogger(__name__)


@dataclass
class Result:
    """What one reconcile decided. ``outcome`` None: status stays as it is."""

    outcome: Outcome | None = None
    requeue_after: float | None = None  # None: the kind's next_check of the new status decides
    hold_for: float | None = None  # pacing: no reconcile of this object sooner than this (events wait)


@dataclass(frozen=True)
class Controller:
    """One kind's entry in the runtime: its decision function and how often it is looked at."""

    kind: KindInfo
    decide: Callable[[dict[str, Any]], Result]
    next_check: Callable[[dict[str, Any]], float | None]
    done_condition: str = "Succeeded"
    lane: Callable[[dict[str, Any]], str] = field(default=lambda body: "default")
    # pacing: seconds from the start of one reconcile before the next may run (events wait); None: no pacing
    pace: Callable[[dict[str, Any]], float | None] = field(default=lambda body: None)


class Key(NamedTuple):
    kind: str
    namespace: str
    name: str
    uid: str


def backoff_delay(retry: int, cap: float) -> float:
    return min(cap, 2.0 ** min(retry, 10))


class Runtime:
    """Scheduling, per-object serialisation, backoff, pacing and the single status write."""

    def __init__(self, config: OperatorConfig | None = None) -> None:
        self.config = config or OperatorConfig()  # the operator's start-up replaces it (configure)
        self._controllers: dict[str, Controller] = {}
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, Key]] = []
        self._due: dict[Key, float] = {}  # when each waiting key is due
        self._lane_of: dict[Key, str] = {}
        self._ready: dict[str, list[Key]] = defaultdict(list)
        self._running: set[Key] = set()
        self._again: dict[Key, float] = {}  # enqueued while running: when to run once more
        self._busy: Counter[tuple[str, str]] = Counter()  # (lane, namespace) -> workers on it
        self._held_until: dict[Key, float] = {}
        self._failures: dict[Key, int] = {}
        self._order = itertools.count()
        self._epoch = 0
        self._threads: list[threading.Thread] = []
        self._progress = time.monotonic()  # the last time a reconcile finished (liveness)
        self._started: dict[Key, float] = {}
        self._seen: set[Key] = set()  # reconciled at least once

    # ----------------------------------------------------------------------------------------- set-up

    def register(self, controller: Controller) -> None:
        self._controllers[controller.kind.kind] = controller

    def configure(self, config: OperatorConfig) -> None:
        """The configuration loaded at start-up (pool sizes, backoff, pacing); threads start on first use."""
        self.config = config

    def reset(self) -> None:
        """Forget everything queued (the operator stops; on start, resume handlers enqueue every object again)."""
        with self._cv:
            self._epoch += 1
            self._heap.clear()
            self._due.clear()
            self._ready.clear()
            self._again.clear()
            self._held_until.clear()
            self._failures.clear()
            self._seen.clear()
            self._cv.notify_all()

    # ----------------------------------------------------------------------------------------- event sources

    def enqueue(self, kind: KindInfo, body: Any, delay: float = 0.0) -> None:
        """Look at ``body``'s object in ``delay`` seconds (sooner if it is already due sooner). A body without a
        spec (an owner reference's name and uid) keeps the lane its object was last given."""
        meta = body["metadata"]
        controller = self._controllers[kind.kind]
        key = Key(kind.kind, meta["namespace"], meta["name"], meta["uid"])
        with self._cv:
            if "spec" in body or key not in self._lane_of:
                self._lane_of[key] = controller.lane(body)
            self._schedule(key, delay)
            self._start_threads()

    def forget(self, kind: KindInfo, body: Any) -> None:
        """Drop what is scheduled for an object that is being deleted."""
        meta = body["metadata"]
        key = Key(kind.kind, meta["namespace"], meta["name"], meta["uid"])
        with self._cv:
            self._drop(key)

    def scheduled_in(self, kind: str, uid: str) -> float | None:
        """Seconds until the object is looked at again (None: nothing scheduled)."""
        with self._cv:
            times = [at for key, at in [*self._due.items(), *self._again.items()] if key.kind == kind and key.uid == uid]
        return None if not times else max(0.0, min(times) - time.monotonic())

    def queue_depth(self) -> dict[str, tuple[int, int, int]]:
        """Per lane: objects due and not yet running, objects scheduled for later, reconciles running now."""
        with self._cv:
            now = time.monotonic()
            depth: dict[str, list[int]] = {lane: [0, 0, 0] for lane in self.config.lanes}
            for key, at in self._due.items():
                lane = self._lane_of.get(key, "default")
                depth.setdefault(lane if lane in depth else "default", [0, 0, 0])[0 if at <= now else 1] += 1
            for key in self._running:
                lane = self._lane_of.get(key, "default")
                depth.setdefault(lane if lane in depth else "default", [0, 0, 0])[2] += 1
            return {lane: (due, later, busy) for lane, (due, later, busy) in depth.items()}

    def seconds_without_progress(self) -> float:
        """0 while nothing is overdue; else how long overdue work has waited without any reconcile finishing."""
        with self._cv:
            now = time.monotonic()
            waiting = [at for at in self._due.values() if at < now] + list(self._started.values())
            return 0.0 if not waiting else max(0.0, now - max(self._progress, min(waiting)))

    # ----------------------------------------------------------------------------------------- the queue

    def _schedule(self, key: Key, delay: float) -> None:
        at = max(time.monotonic() + max(0.0, delay), self._held_until.get(key, 0.0))
        if key in self._running:
            if key not in self._again or at < self._again[key]:
                self._again[key] = at
            return
        if key in self._due and self._due[key] <= at:
            return
        self._due[key] = at
        heapq.heappush(self._heap, (at, next(self._order), key))
        self._cv.notify_all()

    def _drop(self, key: Key) -> None:
        self._due.pop(key, None)
        self._again.pop(key, None)
        self._held_until.pop(key, None)
        self._failures.pop(key, None)
        self._lane_of.pop(key, None)
        self._seen.discard(key)
        metrics.record_phase(key.kind, key.uid, None)
        for ready in self._ready.values():
            if key in ready:
                ready.remove(key)

    def _start_threads(self) -> None:
        if self._threads and all(t.is_alive() for t in self._threads):
            return
        self._threads = [threading.Thread(target=self._dispatch, name="dpo-dispatch", daemon=True)]
        for lane, size in self.config.lanes.items():
            self._threads += [threading.Thread(target=self._work, args=(lane,), name=f"dpo-{lane}-{i}", daemon=True)
                              for i in range(size)]
        for thread in self._threads:
            thread.start()

    def _dispatch(self) -> None:
        """Moves due keys to their lane's ready list."""
        while True:
            with self._cv:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cv.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                at, _, key = heapq.heappop(self._heap)
                if self._due.get(key) != at:
                    continue  # superseded by a sooner time, or dropped
                lane = self._lane_of.get(key, "default")
                ready = self._ready[lane if lane in self.config.lanes else "default"]
                # an object never reconciled goes first: a new resource is not queued behind every requeue
                ready.append(key) if key in self._seen else ready.insert(0, key)
                self._cv.notify_all()

    def _take(self, lane: str) -> Key | None:
        cap = max(1, (self.config.lanes[lane] + 1) // 2)  # one namespace never takes the whole lane
        for i, key in enumerate(self._ready[lane]):
            if key not in self._running and self._busy[(lane, key.namespace)] < cap:
                del self._ready[lane][i]
                return key
        return None

    def _work(self, lane: str) -> None:
        while True:
            with self._cv:
                while (key := self._take(lane)) is None:
                    self._cv.wait()
                self._due.pop(key, None)
                self._running.add(key)
                self._seen.add(key)
                self._started[key] = time.monotonic()
                self._busy[(lane, key.namespace)] += 1
                epoch = self._epoch
            try:
                self._reconcile(key, epoch)
            except Exception:  # noqa: BLE001  (the loop outlives any one object; _reconcile already retries)
                log.exception("reconciling %s failed outside the decision function", key)
                self._finish(key, epoch, 1.0)
            finally:
                with self._cv:
                    self._running.discard(key)
                    self._started.pop(key, None)
                    self._busy[(lane, key.namespace)] -= 1
                    self._progress = time.monotonic()
                    again = self._again.pop(key, None)
                    if again is not None and epoch == self._epoch:
                        self._schedule(key, again - time.monotonic())
                    self._cv.notify_all()

    def _finish(self, key: Key, epoch: int, delay: float | None, hold_for: float | None = None) -> None:
        with self._cv:
            if epoch != self._epoch:
                return
            if hold_for is not None:
                self._held_until[key] = time.monotonic() + hold_for
            if delay is not None:
                self._schedule(key, delay)

    # ----------------------------------------------------------------------------------------- one reconcile

    def _reconcile(self, key: Key, epoch: int) -> None:
        started = time.monotonic()
        try:
            self._reconcile_locked(key, epoch)
        finally:
            metrics.RECONCILE_SECONDS.labels(key.kind).observe(time.monotonic() - started)

    def _reconcile_locked(self, key: Key, epoch: int) -> None:
        controller = self._controllers[key.kind]
        with LOCKS[key.uid]:
            fresh = custom_objects.read(controller.kind, key.namespace, key.name)
            if fresh is None or fresh["metadata"].get("uid") != key.uid or fresh["metadata"].get("deletionTimestamp"):
                with self._cv:
                    self._drop(key)
                LOCKS.pop(key.uid, None) if fresh is None else None
                return
            retry = self._failures.get(key, 0)
            pace = controller.pace(fresh)
            if pace is not None:
                with self._cv:
                    self._held_until[key] = time.monotonic() + pace
            metrics.RECONCILES.labels(key.kind).inc()
            result, failed = self._decide(controller, fresh, retry)
            with self._cv:
                if failed:
                    self._failures[key] = retry + 1
                else:
                    self._failures.pop(key, None)
            status = fresh.get("status") or {}
            if result.outcome is not None:
                try:
                    status = write_status(controller.kind, fresh, result.outcome, controller.done_condition)
                except ApiException as exc:
                    if exc.status == 409:  # the object changed since it was read: decide again on a fresh copy
                        if result.outcome.phase in TERMINAL_PHASES:
                            # a final outcome (InvalidSpec, Failed, ...) is written again at once, not after the
                            # kind's pacing: it asks nothing more of a remote service once it is recorded
                            with self._cv:
                                self._held_until.pop(key, None)
                        self._finish(key, epoch, self.config.conflict_retry_seconds)
                        return
                    if exc.status == 404:
                        return
                    log.warning("writing the status of %s failed (%s %s); retrying", key, exc.status, exc.reason)
                    self._failures[key] = retry + 1
                    self._finish(key, epoch, backoff_delay(retry, self.config.max_backoff_seconds))
                    return
            metrics.record_phase(key.kind, key.uid, status.get("phase"))
        delay = result.requeue_after
        if delay is None:
            delay = controller.next_check({**fresh, "status": status})
        self._finish(key, epoch, delay, result.hold_for)

    def _decide(self, controller: Controller, body: dict[str, Any], retry: int) -> tuple[Result, bool]:
        """The kind's decision, with failures turned into outcomes: (result, whether it failed transiently)."""
        config = self.config
        backoff = backoff_delay(retry, config.max_backoff_seconds)
        kind = controller.kind.kind
        name = f"{kind} {body['metadata']['namespace']}/{body['metadata']['name']}"
        try:
            return controller.decide(body), False
        except SecretMissing as exc:  # absent, or not opted in: wait for it (the message says what to do)
            metrics.RECONCILE_ERRORS.labels(kind, "waiting").inc()
            if ((body.get("status") or {}).get("reason")) != exc.reason:  # said once; the condition says the rest
                log.info("%s waits: %s", name, exc)
            return Result(Outcome(Phase.PENDING.value, exc.reason, f"{exc}; {exc.hint}"),
                          requeue_after=min(config.secret_retry_seconds, backoff)), True
        except kube_objects.NameConflict as exc:  # a stranger (or an earlier incarnation's child) holds the name:
            # wait for it to go (its deletion enqueues this object at once; a stranger without our labels, at the
            # next retry)
            metrics.RECONCILE_ERRORS.labels(kind, "waiting").inc()
            delay = min(config.secret_retry_seconds, backoff)
            return Result(Outcome(Phase.PENDING.value, exc.reason, f"{exc}; retrying until it is gone"),
                          requeue_after=delay), True
        except (WorkloadNotAllowed, InvalidSpec, PermanentFailure) as exc:
            metrics.RECONCILE_ERRORS.labels(kind, "permanent").inc()
            return self._failed(Reason.InvalidSpec if isinstance(exc, InvalidSpec) else exc.reason, str(exc)), False
        except Exception as exc:
            if isinstance(exc, NemoError) and not exc.transient:
                metrics.RECONCILE_ERRORS.labels(kind, "permanent").inc()
                return self._failed(Reason.RemoteApiError, f"a NeMo service refused a request: {remote_body(str(exc))}"), False
            if isinstance(exc, ApiException) and not is_transient(exc):
                metrics.RECONCILE_ERRORS.labels(kind, "permanent").inc()
                return self._failed(Reason.ApiError, f"the Kubernetes API refused a request ({exc.status}): "
                                                f"{api_message(exc)}"), False
            if is_transient(exc):
                metrics.RECONCILE_ERRORS.labels(kind, "transient").inc()
                detail = describe_failure(exc)
                # a conflict is routine (another writer was first): no warning, and never the HTTP headers
                level = logging.INFO if isinstance(exc, ApiException) and exc.status == 409 else logging.WARNING
                log.log(level, "transient failure reconciling %s (retry %d in %.0fs): %s", name, retry, backoff, detail)
            else:  # a defect, or a remote answer we could not read: never dropped
                metrics.RECONCILE_ERRORS.labels(kind, "unexpected").inc()
                detail = f"{type(exc).__name__}: {describe_failure(exc)}"
                log.exception("unexpected failure reconciling %s (retry %d in %.0fs)", name, retry, backoff)
            return Result(self._retrying(body, retry, backoff, detail), requeue_after=backoff), True

    @staticmethod
    def _failed(reason: str, message: str) -> Result:
        return Result(Outcome(Phase.FAILED.value, reason, message))

    @staticmethod
    def _retrying(body: Any, retry: int, delay: float, detail: str) -> Outcome | None:
        """Before anything runs (no phase yet, or Pending), say in status what keeps failing and how often; a
        resource that already runs keeps its phase (its own status tells its progress)."""
        if ((body.get("status") or {}).get("phase")) not in (None, Phase.PENDING.value):
            return None
        return Outcome(Phase.PENDING.value, Reason.Retrying, f"attempt {retry + 1} failed, retrying in {delay:.0f}s: {detail}")


RUNTIME = Runtime()
"""The operator's one runtime (kinds register their controller when their module is imported)."""
metrics.read_queue_from(RUNTIME.queue_depth)
