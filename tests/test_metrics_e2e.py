"""The operator's Prometheus endpoint, scraped from the running operator and parsed with prometheus-client's own
parser; and what the operator logs for a resource that only waits (an Info line once, no ERROR, no headers)."""

from __future__ import annotations

import json
import logging
import socket
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dpo_operator.nemo.http import NemoApi, NemoError
from dpo_operator.runtime.metrics import REGISTRY
from tests.kubehelpers import Kube, wait_for
from tests.test_collection_e2e import SPEC


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the endpoint: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:  # noqa: S310
        text = answer.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture()
def metrics_operator(kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The real operator with its metrics endpoint on a free port."""
    from kopf.testing import KopfRunner

    kube.require_emulated()
    port = free_port()
    monkeypatch.setenv("DPO_METRICS_PORT", str(port))
    with KopfRunner(["run", "--standalone", "--namespace", namespace, "-m", "dpo_operator.handlers"], timeout=60):
        yield port


@pytest.mark.e2e
def test_metrics_endpoint_counts_reconciles_phases_and_queue(kube: Kube, namespace: str, metrics_operator: int,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dpo_operator")
    kube.usable_secret(namespace, "later", {"api-key": "sk-metrics"}, usable=False, allowed_urls=SPEC["llm"]["baseUrl"])
    waiting = {**SPEC, "llm": {**SPEC["llm"], "apiKeySecretRef": {"name": "later", "key": "api-key"}}}
    kube.create("DPOCollection", namespace, "waits", waiting)
    kube.create("DPOCollection", namespace, "bad", {**SPEC, "candidatesPerTurn": 1})  # InvalidSpec
    kube.wait_phase("DPOCollection", namespace, "bad", "Failed")
    kube.wait_status("DPOCollection", namespace, "waits", lambda s: s.get("reason") == "SecretNotUsable")

    def both_counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        found = scrape(metrics_operator)
        phases = [value(found, "dpo_operator_resources", kind="DPOCollection", phase=p) for p in ("Failed", "Pending")]
        return found if phases == [1, 1] else None

    samples = wait_for(both_counted, what="both collections counted by phase")
    assert (value(samples, "dpo_operator_reconciles_total", kind="DPOCollection") or 0) >= 2
    assert (value(samples, "dpo_operator_reconcile_errors_total", kind="DPOCollection", error="permanent") or 0) >= 1
    assert (value(samples, "dpo_operator_reconcile_errors_total", kind="DPOCollection", error="waiting") or 0) >= 1
    assert (value(samples, "dpo_operator_reconcile_duration_seconds_count", kind="DPOCollection") or 0) >= 2
    for lane in ("collection", "training", "customizer", "deployment", "default"):
        assert value(samples, "dpo_operator_queue_depth", lane=lane) is not None
        assert value(samples, "dpo_operator_reconciles_in_progress", lane=lane) is not None
    # the waiting collection is looked at again later: it is scheduled, not lost
    assert sum(v for (name, _), v in samples.items() if name == "dpo_operator_queue_scheduled") >= 1

    ours = [r for r in caplog.records if r.name.startswith("dpo_operator")]
    assert not [r for r in ours if r.levelno >= logging.ERROR], [r.getMessage() for r in ours]
    said = [r.getMessage() for r in ours if "waits" in r.getMessage() and r.levelno == logging.INFO]
    assert len(said) == 1 and "later" in said[0], said
    assert not [r for r in ours if "HTTP response headers" in r.getMessage()]


def _transport(status: int) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, json={"detail": "no"}))


def counted(service: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("dpo_operator_remote_calls_total", {"service": service, "outcome": outcome}) or 0.0


@pytest.mark.parametrize(("status", "outcome"), [(200, "ok"), (404, "error"), (503, "transient")])
def test_remote_calls_are_counted_by_service_and_outcome(status: int, outcome: str) -> None:
    service = f"test-{status}"
    api: Any = NemoApi("http://nemo.test", transport=_transport(status), service=service)
    if status == 200:
        api.request("GET", "/v1/x")
    else:
        with pytest.raises(NemoError):
            api.request("GET", "/v1/x")
    assert counted(service, outcome) == 1
    assert REGISTRY.get_sample_value("dpo_operator_remote_call_duration_seconds_count", {"service": service}) == 1


def test_an_unreachable_service_counts_as_network() -> None:
    api = NemoApi(f"http://127.0.0.1:{free_port()}", service="test-refused")
    with pytest.raises(NemoError):
        api.request("GET", "/v1/x")
    assert counted("test-refused", "network") == 1


def test_json_log_format_writes_one_object_a_line() -> None:
    from dpo_operator.cli import configure_logging

    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        configure_logging("json", verbose=False)
        added = [h for h in root.handlers if h not in before]
        assert len(added) == 1 and added[0].formatter is not None
        record = logging.LogRecord("dpo_operator.runtime", logging.INFO, __file__, 1, "waits: %s", ("Secret x",), None)
        line = json.loads(added[0].formatter.format(record))
        assert line["message"] == "waits: Secret x" and line["severity"] == "info"
        configure_logging("text", verbose=False)
        text = [h for h in root.handlers if h not in before][0].formatter
        assert text is not None and "[INFO    ] waits: Secret x" in text.format(record)
    finally:
        root.handlers[:] = before
        root.setLevel(level)


def test_api_errors_are_described_without_their_http_headers() -> None:
    from kubernetes.client.exceptions import ApiException

    from dpo_operator.runtime.errors import describe_failure

    class Answer:
        status, reason = 409, "Conflict"
        data = b'{"kind": "Status", "message": "the object has been modified", "reason": "Conflict"}'
        headers = {"Audit-Id": "0f6b", "X-Kubernetes-Pf-Flowschema-Uid": "c1"}

        def getheaders(self) -> dict[str, str]:
            return self.headers

    conflict = ApiException(http_resp=Answer())
    assert "HTTP response headers" in str(conflict)  # what the client's own text carries
    assert describe_failure(conflict) == "409 Conflict: the object has been modified"
