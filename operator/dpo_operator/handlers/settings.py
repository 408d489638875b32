"""Operator-wide kopf settings and startup."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from dpo_operator.api import GROUP
from dpo_operator.kube import client, redact
from dpo_operator.kube.requeue import SCHEDULER


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Handler progress lives in annotations, so our status schema stays strict and free of kopf's fields.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.reconnect_backoff = 1.0
    # one asyncio task per busy object (cheap); blocking handler calls are bounded by max_workers threads
    settings.queueing.worker_limit = None
    settings.execution.max_workers = 16
    client.load()
    redact.install_log_redaction()


@kopf.on.cleanup()
def stop_requeues(**_: Any) -> None:
    """Nothing scheduled by a stopped operator runs (on start, resume handlers schedule every object again)."""
    SCHEDULER.reset()
