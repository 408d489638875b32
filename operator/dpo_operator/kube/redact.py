"""Keep secret values out of everything a person can read: status, events and logs.

Every Secret value the operator reads (its own API keys, and the values of Secrets a workload references, read
when checking that they opt in) is remembered here; :func:`redact` replaces those values and bearer tokens in any
text, and bounds its length, so an error body that echoes a request (headers included) never carries a secret
further. A log-record factory applies the same to every log line, which covers kopf's own logs and the events
kopf posts from them.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections import OrderedDict
from typing import Any

MASK = "***"
MESSAGE_LIMIT = 1024      # status messages, events
REMOTE_BODY_LIMIT = 300   # what we keep of a remote service's error body
MIN_SECRET_LENGTH = 3     # shorter values would mask ordinary words
_REMEMBERED_MAX = 4096

_TOKEN = r"[A-Za-z0-9._~+/=-]{6,}"
_BEARER = re.compile(rf"(?i)(\bbearer\s+|\b(?:authorization|api[-_]?key|token|password|secret)[\"']?\s*[:=]\s*[\"']?(?:bearer\s+)?)((?!bearer\b){_TOKEN})")
_lock = threading.Lock()
_values: OrderedDict[str, None] = OrderedDict()


def remember(value: str | None) -> None:
    """Mask this value from now on (a bounded, most-recently-used set)."""
    if not value or len(value.strip()) < MIN_SECRET_LENGTH:
        return
    with _lock:
        for variant in {value, value.strip()}:
            _values[variant] = None
            _values.move_to_end(variant)
        while len(_values) > _REMEMBERED_MAX:
            _values.popitem(last=False)


def bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def redact(text: Any, limit: int | None = MESSAGE_LIMIT) -> str:
    """``text`` without remembered secret values or bearer-like tokens, at most ``limit`` characters."""
    result = str(text)
    with _lock:
        values = sorted(_values, key=len, reverse=True)
    for value in values:
        if value in result:
            result = result.replace(value, MASK)
    result = _BEARER.sub(lambda m: f"{m.group(1)}{MASK}", result)
    return bounded(result, limit) if limit is not None else result


def remote_body(text: str) -> str:
    """A remote service's error text, fit to quote: redacted and short."""
    return redact(" ".join(str(text).split()), REMOTE_BODY_LIMIT)


_factory_installed = False


def install_log_redaction() -> None:
    """Redact every log record from now on (idempotent)."""
    global _factory_installed
    with _lock:
        if _factory_installed:
            return
        _factory_installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error handling
            return record
        cleaned = redact(message, limit=None)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:  # tracebacks quote exception messages
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = redact(text, limit=None)
        return record

    logging.setLogRecordFactory(factory)
