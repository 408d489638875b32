"""Kubernetes Events (events.k8s.io/v1, what kubectl reads) on the transitions that matter, so that ``kubectl describe`` tells the story.

:func:`dpo_operator.kube.status.write_status` calls :func:`record` whenever the phase or the reason changes (the
status itself is the memory, so an operator restart does not repeat events). An event's name is derived from the
object, reason and message, so a repeat (two handlers racing) bumps the existing event's ``series.count`` instead of
adding one, the way Kubernetes' own event recorder aggregates. Messages go through redaction: no secret in an event.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import re
import socket
from typing import Any

from kubernetes.client.exceptions import ApiException

from dpo_operator.api import API_VERSION, KindInfo
from dpo_operator.kube import client
from dpo_operator.kube.redact import redact

log = logging.getLogger(__name__)
COMPONENT = "dpo-operator"
REPORTING_CONTROLLER = "dpo.ai/dpo-operator"
NOTE_LIMIT = 1000  # events.k8s.io/v1 allows 1 kB
INSTANCE = os.environ.get("HOSTNAME") or socket.gethostname()


def event_name(object_name: str, uid: str, reason: str, message: str) -> str:
    digest = hashlib.sha256(f"{uid}\0{reason}\0{message}".encode()).hexdigest()[:16]
    return f"{re.sub(r'[-.]+$', '', object_name[:200])}.{digest}"


def _micro_time() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record(kind: KindInfo, body: Any, event_type: str, reason: str, message: str, action: str) -> None:
    """Record (or count again) an events.k8s.io/v1 Event about ``body``; never fails the caller."""
    meta = body["metadata"]
    namespace = meta["namespace"]
    note = redact(message, NOTE_LIMIT).encode()[:1024].decode(errors="ignore")
    name = event_name(meta["name"], meta.get("uid", ""), reason, note)
    stamp = _micro_time()
    api = client.events()
    try:
        try:
            api.create_namespaced_event(namespace, {
                "apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "regarding": {"apiVersion": body.get("apiVersion", API_VERSION), "kind": kind.kind,
                              "name": meta["name"], "namespace": namespace, "uid": meta.get("uid")},
                "type": event_type, "reason": reason, "note": note, "action": action[:128],
                "eventTime": stamp, "reportingController": REPORTING_CONTROLLER,
                "reportingInstance": INSTANCE[:128],
            })
        except ApiException as exc:
            if exc.status != 409:
                raise
            existing = client.api_client().sanitize_for_serialization(api.read_namespaced_event(name, namespace))
            count = int(((existing.get("series") or {}).get("count")) or 1) + 1
            api.patch_namespaced_event(name, namespace, {"series": {"count": count, "lastObservedTime": stamp}})
    except Exception as exc:  # events are best effort: status stays the source of truth
        detail = f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else exc  # never the HTTP headers
        log.warning("could not record event %s on %s %s/%s: %s", reason, kind.kind, namespace, meta["name"], detail)
