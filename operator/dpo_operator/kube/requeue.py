"""Requeue-after scheduling: "look at this object again in N seconds", instead of kopf timers.

kopf timers tick forever and put a finalizer on every object they match, so deletes hang while the operator is
down. Here a reconcile says when the next change is expected (a poll interval, a readiness check, a periodic
resync) and the object is looked at again then, once. Calls run in a small pool of their own, so slow remote
polls and probes never occupy the workers that serve other objects' events. Stopping the operator drops what is
scheduled (a new epoch); on start, kopf's resume handlers schedule every object again.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, workers: int = 4) -> None:
        self._workers = workers
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, Hashable, int, Callable[[], None]]] = []
        self._due: dict[Hashable, float] = {}
        self._order = itertools.count()
        self._epoch = 0
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    def after(self, key: Hashable, delay: float, fn: Callable[[], None]) -> None:
        """Call ``fn`` in ``delay`` seconds, unless ``key`` is already due sooner."""
        at = time.monotonic() + max(0.0, delay)
        with self._cv:
            if key in self._due and self._due[key] <= at:
                return
            self._due[key] = at
            heapq.heappush(self._heap, (at, next(self._order), key, self._epoch, fn))
            if self._thread is None or not self._thread.is_alive():
                self._pool = self._pool or ThreadPoolExecutor(self._workers, thread_name_prefix="dpo-requeue")
                self._thread = threading.Thread(target=self._loop, name="dpo-requeue", daemon=True)
                self._thread.start()
            self._cv.notify()

    def due(self, key: Hashable) -> float | None:
        """Seconds until ``key`` is looked at again (None: not scheduled)."""
        with self._cv:
            at = self._due.get(key)
        return None if at is None else max(0.0, at - time.monotonic())

    def reset(self) -> None:
        """Forget everything scheduled (the operator stops)."""
        with self._cv:
            self._epoch += 1
            self._heap.clear()
            self._due.clear()
            self._cv.notify()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cv.wait(None if not self._heap else self._heap[0][0] - time.monotonic())
                at, _, key, epoch, fn = heapq.heappop(self._heap)
                if epoch != self._epoch or self._due.get(key) != at:
                    continue  # superseded by a sooner call, or scheduled before a reset
                del self._due[key]
                pool = self._pool
            assert pool is not None
            pool.submit(self._call, key, epoch, fn)

    def _call(self, key: Hashable, epoch: int, fn: Callable[[], None]) -> None:
        if epoch != self._epoch:
            return
        try:
            fn()
        except Exception:  # noqa: BLE001  (one object's failure never stops the scheduler)
            log.exception("requeued reconcile of %s failed", key)


SCHEDULER = Scheduler()
