"""Live progress of a running workload: the newest ``dpo-progress`` line in its pods' logs.

The operator reads only the last ``TAIL_LINES`` lines (at most ``LIMIT_BYTES``) of each running pod of the Job,
and at most once per ``progressIntervalSeconds`` per resource (:class:`Throttle`), so a resource costs the API server
one small ``pods/log`` read per interval whatever its event rate. A pod whose log cannot be read (not started yet,
no ``pods/log`` permission) gives no progress, never an error: the status keeps the last figures it had.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from typing import Any, TypeVar

from kubernetes.client import ApiException

from dpo_operator.api.progress import ProgressReport, newest
from dpo_operator.kube import client
from dpo_operator.kube.jobs import job_pods

log = logging.getLogger(__name__)
ReportT = TypeVar("ReportT", bound=ProgressReport)
TAIL_LINES = 100  # the workloads print a progress line at least every few seconds and few other lines
LIMIT_BYTES = 64 * 1024


class Throttle:
    """At most one read per ``interval`` seconds per key (a resource's uid)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, key: str, interval: float, clock: float | None = None) -> bool:
        now = time.monotonic() if clock is None else clock
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < interval:
                return False
            self._last[key] = now
            return True

    def forget(self, key: str) -> None:
        with self._lock:
            self._last.pop(key, None)


THROTTLE = Throttle()


def read_log_tail(namespace: str, pod: dict[str, Any]) -> str | None:
    containers = (pod.get("spec") or {}).get("containers") or []
    try:
        return str(client.core().read_namespaced_pod_log(
            pod["metadata"]["name"], namespace, container=containers[0]["name"] if containers else None,
            tail_lines=TAIL_LINES, limit_bytes=LIMIT_BYTES))
    except ApiException as exc:
        log.debug("no log of pod %s/%s yet (%s): no progress from it", namespace, pod["metadata"]["name"], exc.status)
        return None


def newest_report(namespace: str, job_name: str, model: type[ReportT]) -> ReportT | None:
    """The newest progress line among the Job's running pods (under torchrun, rank 0's pod writes them)."""
    best: ReportT | None = None
    for pod in job_pods(namespace, job_name):
        if (pod.get("status") or {}).get("phase") != "Running":
            continue
        text = read_log_tail(namespace, pod)
        report = newest(model, text) if text else None
        if report is not None and (best is None or report.time > best.time):
            best = report
    return best


def poll(body: Any, job_name: str, model: type[ReportT], interval: float) -> ReportT | None:
    """A fresh report when this resource's interval has passed and a running pod printed one; else None (the
    status keeps what it had)."""
    if not THROTTLE.due(body["metadata"]["uid"], interval):
        return None
    return newest_report(body["metadata"]["namespace"], job_name, model)


def done(body: Any) -> None:
    """The workload ended: its throttle entry goes."""
    THROTTLE.forget(body["metadata"]["uid"])


def reported_at(report: ProgressReport) -> str:
    return datetime.datetime.fromtimestamp(report.time, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
