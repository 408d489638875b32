"""The operator's Prometheus metrics (``prometheus-client``), served on ``metrics_port`` at ``/metrics``.

- ``dpo_operator_reconciles_total{kind}``, ``dpo_operator_reconcile_errors_total{kind,error}`` and
  ``dpo_operator_reconcile_duration_seconds{kind}``: every run of a kind's decision function (error: ``transient``,
  ``unexpected``, ``permanent``, ``waiting`` for a Secret);
- ``dpo_operator_queue_depth{lane}`` (due, not yet running), ``dpo_operator_queue_scheduled{lane}`` (waiting for a
  later time) and ``dpo_operator_reconciles_in_progress{lane}``, read from the runtime at scrape time;
- ``dpo_operator_resources{kind,phase}``: the objects this operator reconciled, by the phase it last wrote;
- ``dpo_operator_remote_calls_total{service,outcome}`` and ``dpo_operator_remote_call_duration_seconds{service}``:
  calls to NeMo services and NIM readiness probes (outcome: ``ok``, ``error`` for a refusal, ``transient`` for
  408/429/5xx, ``timeout``, ``network``; for a probe also ``not_ready``).

Everything lives in one registry of its own (:data:`REGISTRY`), so nothing of the client's process defaults leaks in
and a second operator in the same process (the tests) reads the same numbers.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter("dpo_operator_reconciles", "Runs of a kind's decision function.", ["kind"], registry=REGISTRY)
RECONCILE_ERRORS = Counter("dpo_operator_reconcile_errors", "Reconciles that failed, by kind of failure.",
                           ["kind", "error"], registry=REGISTRY)
RECONCILE_SECONDS = Histogram("dpo_operator_reconcile_duration_seconds",
                              "One reconcile: the object's lock, the fresh read, the decision and the status write.", ["kind"],
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
                              registry=REGISTRY)
REMOTE_CALLS = Counter("dpo_operator_remote_calls", "Calls to remote services, by outcome.", ["service", "outcome"],
                       registry=REGISTRY)
REMOTE_SECONDS = Histogram("dpo_operator_remote_call_duration_seconds", "Duration of calls to remote services.",
                           ["service"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=REGISTRY)

QueueReader = Callable[[], dict[str, tuple[int, int, int]]]


class _RuntimeCollector(Collector):
    """Queue depth and resources per phase, read when scraped (nothing to keep in step between scrapes)."""

    def __init__(self) -> None:
        self.queue: QueueReader = dict
        self._lock = threading.Lock()
        self._phases: dict[tuple[str, str], str] = {}  # (kind, uid) -> the phase last written

    def phase(self, kind: str, uid: str, phase: str | None) -> None:
        with self._lock:
            if phase is None:
                self._phases.pop((kind, uid), None)
            else:
                self._phases[(kind, uid)] = phase

    def forget_phases(self) -> None:
        """A new operator run counts the resources it reconciles itself (one process may run the operator again)."""
        with self._lock:
            self._phases.clear()

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("dpo_operator_queue_depth", "Objects due for a reconcile and not yet running.",
                                  labels=["lane"])
        scheduled = GaugeMetricFamily("dpo_operator_queue_scheduled", "Objects scheduled for a later reconcile.",
                                      labels=["lane"])
        running = GaugeMetricFamily("dpo_operator_reconciles_in_progress", "Reconciles running now.", labels=["lane"])
        for lane, (due, later, busy) in sorted(self.queue().items()):
            depth.add_metric([lane], due)
            scheduled.add_metric([lane], later)
            running.add_metric([lane], busy)
        resources = GaugeMetricFamily("dpo_operator_resources", "Resources by kind and the phase last written.",
                                      labels=["kind", "phase"])
        with self._lock:
            counts = Tally((kind, phase) for (kind, _), phase in self._phases.items())
        for (kind, phase), count in sorted(counts.items()):
            resources.add_metric([kind, phase], count)
        yield from (depth, scheduled, running, resources)


RUNTIME_COLLECTOR = _RuntimeCollector()
REGISTRY.register(RUNTIME_COLLECTOR)


def read_queue_from(reader: QueueReader) -> None:
    """Where the queue gauges come from: ``reader()`` answers ``{lane: (due, scheduled, running)}``."""
    RUNTIME_COLLECTOR.queue = reader


def record_phase(kind: str, uid: str, phase: str | None) -> None:
    """The phase an object now has (None: it is gone)."""
    RUNTIME_COLLECTOR.phase(kind, uid, phase)


def remote_call(service: str, outcome: str, seconds: float) -> None:
    REMOTE_CALLS.labels(service, outcome).inc()
    REMOTE_SECONDS.labels(service).observe(seconds)


def serve(port: int, address: str = "0.0.0.0") -> WSGIServer:  # noqa: S104  (a pod's port; the chart's Service)
    """Serve ``/metrics`` on ``port`` in a daemon thread; the caller shuts the server down."""
    server, _ = start_http_server(port, address, registry=REGISTRY)
    return server
