"""Operator-wide kopf settings, start-up (the one configuration load, the metrics endpoint), liveness and shutdown."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from dpo_operator.api import GROUP
from dpo_operator.config import OperatorConfig
from dpo_operator.kube import client, redact
from dpo_operator.kube.diffbase import DigestDiffBaseStorage
from dpo_operator.runtime import metrics
from dpo_operator.runtime.controller import RUNTIME

log = logging.getLogger(__name__)
_servers: list[Any] = []  # the metrics endpoint while the operator runs


class QuietWatchSuccesses(logging.Filter):
    """Drops kopf's "Handler '...' succeeded." for event-watching handlers (kopf marks those records
    ``k8s_skip``: never posted as Kubernetes events) unless kopf.objects logs at DEBUG. Our watch handlers only
    enqueue, so the line said nothing, once per watch event of every Job, pod and resource (10,000 lines for
    2,000 DPOCollections, each a write from kopf's event loop); a failing handler still logs, as do the
    creation, update and deletion handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not getattr(record, "k8s_skip", False):
            return True
        if not isinstance(record.msg, str) or not record.msg.endswith(" succeeded."):
            return True
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_watch_successes() -> None:
    """Install :class:`QuietWatchSuccesses` on kopf's per-object logger (idempotent)."""
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, QuietWatchSuccesses) for f in objects.filters):
        objects.addFilter(QuietWatchSuccesses())


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Handler progress lives in annotations, so our status schema stays strict and free of kopf's fields.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    # a digest for a large spec: the full one would overflow the 256 KiB of annotations (kube/diffbase.py)
    settings.persistence.diffbase_storage = DigestDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.reconnect_backoff = 1.0
    # kopf's handlers only enqueue (and the deletion handlers cancel remote work): the runtime's lanes do the rest
    settings.queueing.worker_limit = None
    # a per-object worker (its task, queue and the last event's body) lives this long after the object's last event:
    # kopf's 5 s kept ~5x as many alive at once while thousands of objects change (the operator's peak RSS)
    settings.queueing.idle_timeout = 1.0
    settings.execution.max_workers = 16
    config = OperatorConfig.from_env()
    RUNTIME.configure(config)
    metrics.RUNTIME_COLLECTOR.forget_phases()
    client.load(request_timeout=config.kube_request_timeout)
    redact.install_log_redaction()
    quiet_watch_successes()
    if config.metrics_port:
        _servers.append(metrics.serve(config.metrics_port))
        log.info("Prometheus metrics on port %d at /metrics", config.metrics_port)


@kopf.on.probe(id="progress")
def progress(**_: Any) -> float:
    """Liveness: unhealthy (HTTP 500) when due work has waited longer than ``stalled_after_seconds`` without any
    reconcile finishing (every worker blocked); otherwise how long the oldest due work has waited."""
    stalled = RUNTIME.seconds_without_progress()
    if stalled > RUNTIME.config.stalled_after_seconds:
        raise kopf.PermanentError(f"no reconcile finished for {stalled:.0f}s while work was due")
    return round(stalled, 1)


@kopf.on.cleanup()
def stop_requeues(**_: Any) -> None:
    """Nothing queued by a stopped operator runs (on start, resume handlers enqueue every object again); the
    metrics endpoint closes."""
    RUNTIME.reset()
    while _servers:
        server = _servers.pop()
        server.shutdown()
        server.server_close()
