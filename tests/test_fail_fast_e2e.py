"""Config mistakes fail fast and say why (issue 23): each mistake runs its real workload pod on the emulated
cluster (the local executor plays the kubelet and the Job controller, podFailurePolicy included) and the test
measures the time from creating the resource to a status that names the cause. The times are printed (run with
``-s``), never asserted: the point is the reason and the message, and that the Job is not retried."""

from __future__ import annotations

import http.server
import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kubehelpers import Kube, wait_for
from tests.test_events_e2e import events
from tests.test_collection_e2e import RESULT as COLLECTION_RESULT
from tests.test_collection_e2e import SPEC as COLLECTION_SPEC

pytestmark = pytest.mark.e2e

COLLECTION = {k: v for k, v in COLLECTION_SPEC.items() if k != "template"}


def timed(what: str, start: float, probe: Callable[[], Any], timeout: float = 90.0) -> Any:
    found = wait_for(probe, timeout=timeout, interval=0.1, what=what)
    # sys.__stdout__: the operator's KopfRunner swaps sys.stdout while it runs (pytest -s shows the line)
    print(f"\ntime to a clear status, {what}: {time.monotonic() - start:.1f} s", file=sys.__stdout__, flush=True)
    return found


def failed_with(kube: Kube, kind: str, namespace: str, name: str, reason: str) -> Callable[[], Any]:
    def probe() -> dict[str, Any] | None:
        status = kube.get(kind, namespace, name).get("status") or {}
        return status if status.get("phase") == "Failed" and status.get("reason") == reason else None
    return probe


def attempts(kube: Kube, namespace: str, job: str) -> int:
    return len([p for p in kube.core.list_namespaced_pod(namespace).items
                if (p.metadata.labels or {}).get("job-name") == job])


@pytest.fixture()
def executor(kube: Kube, namespace: str, tmp_path: Path) -> Iterator[Any]:
    kube.require_emulated()  # a kubelet stand-in runs the pods
    from dpo_operator.embedded.executor import LocalExecutor

    kube.claims(namespace, "dpo-data", "models")
    with LocalExecutor(kube.api, tmp_path, namespace) as running:
        yield running


def collection(llm: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {**COLLECTION, "llm": {**llm, "maxRetries": 0}, **spec}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_model_name_typo_fails_at_once_naming_the_served_models(kube: Kube, namespace: str, operator: None,
                                                                  executor: Any) -> None:
    from dpo_operator.embedded.policy_server import PolicyServer

    with PolicyServer(seed=1) as policy:
        start = time.monotonic()
        kube.create("DPOCollection", namespace, "typo", collection({"baseUrl": policy.url, "model": "meta/llama-3.2-1b-instruc"}))
        status = timed("llm.model typo", start, failed_with(kube, "DPOCollection", namespace, "typo", "EndpointMisconfigured"))
    assert f"serves ['{policy.model}'], not model 'meta/llama-3.2-1b-instruc'" in status["message"]
    assert "check llm.model" in status["message"] and "exited with code 4" in status["message"]
    assert attempts(kube, namespace, "typo-collect") == 1  # podFailurePolicy: no retry


@pytest.mark.parametrize(("base_url", "cause"), [
    (f"http://127.0.0.1:{free_port()}/v1", "its port refused the connection"),
    ("http://nim-typo.invalid:8000/v1", "its host name does not resolve"),
], ids=["port", "host"])
def test_an_endpoint_url_typo_fails_at_once(kube: Kube, namespace: str, operator: None, executor: Any,
                                           base_url: str, cause: str) -> None:
    start = time.monotonic()
    kube.create("DPOCollection", namespace, "url", collection({"baseUrl": base_url, "model": "m"}))
    status = timed(f"llm.baseUrl typo ({cause})", start,
                   failed_with(kube, "DPOCollection", namespace, "url", "EndpointMisconfigured"))
    assert f"{base_url} never answered: {cause}" in status["message"]
    assert attempts(kube, namespace, "url-collect") == 1


def test_a_workflow_name_typo_fails_at_once(kube: Kube, namespace: str, operator: None, executor: Any) -> None:
    start = time.monotonic()
    spec = collection({"baseUrl": f"http://127.0.0.1:{free_port()}/v1", "model": "m"},
                      workflow={"name": "tictactoo", "numExamples": 2})
    kube.create("DPOCollection", namespace, "flow", spec)
    status = timed("workflow.name typo", start, failed_with(kube, "DPOCollection", namespace, "flow", "NotFound"))
    assert "workflow 'tictactoo' not found" in status["message"] and "tictactoe" in status["message"]
    assert attempts(kube, namespace, "flow-collect") == 1


TRAINING = {
    "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/ds"}}},
    "model": {"name": "tiny", "pvc": {"claimName": "models", "path": "/tinny"}},
    "hyperparameters": {"epochs": 1, "batchSize": 4, "learningRate": 0.001, "finetuningType": "all_weights"},
    "local": {"gpusPerNode": 0, "precision": "fp32", "output": {"claimName": "dpo-data", "path": "/models"}},
}


def test_a_model_path_typo_says_not_found(kube: Kube, namespace: str, operator: None, executor: Any) -> None:
    pytest.importorskip("torch")
    start = time.monotonic()
    kube.create("DPOTrainingJob", namespace, "path", TRAINING)
    status = timed("model.pvc.path typo", start, failed_with(kube, "DPOTrainingJob", namespace, "path", "NotFound"))
    assert "model directory not found: model.pvc.path '/tinny' on PVC models does not exist" in status["message"]
    assert "Repo id" not in status["message"]
    # the CPU-only data check, which runs first, already finds it: one attempt, and no training Job (no GPU asked for)
    assert attempts(kube, namespace, "path-datacheck") == 1
    assert kube.job(namespace, "path-train") is None


def test_more_gpus_per_pod_than_any_node_offers_fails_before_the_job(kube: Kube, namespace: str,
                                                                     operator: None) -> None:
    kube.require_emulated()  # creates Node objects
    nodes = [f"gpu-{namespace}-{i}" for i in range(2)]
    for name, gpus in zip(nodes, ("4", "8")):
        kube.core.create_node({"metadata": {"name": name}})
        kube.core.patch_node_status(name, {"status": {"allocatable": {"nvidia.com/gpu": gpus, "cpu": "64"}}})
    try:
        start = time.monotonic()
        spec = {**TRAINING, "local": {**TRAINING["local"], "gpusPerNode": 16},
                "hyperparameters": {**TRAINING["hyperparameters"], "batchSize": 16}}
        kube.create("DPOTrainingJob", namespace, "big", spec)
        status = timed("local.gpusPerNode above every node", start,
                       failed_with(kube, "DPOTrainingJob", namespace, "big", "InsufficientGPUs"))
        assert "local.gpusPerNode is 16, but no node offers more than 8 GPUs" in status["message"]
        assert kube.job(namespace, "big-train") is None
        kube.create("DPOTrainingJob", namespace, "fits", {**spec, "local": {**TRAINING["local"], "gpusPerNode": 8}})
        # not refused: its first Job (the CPU-only data check, then training) is created
        wait_for(lambda: kube.job(namespace, "fits-datacheck") or kube.job(namespace, "fits-train"),
                 what="the first job of one that fits")
    finally:
        for name in nodes:
            kube.core.delete_node(name)


def test_a_batch_larger_than_the_dataset_warns(kube: Kube, namespace: str, operator: None) -> None:
    kube.require_emulated()  # plays the job controller
    kube.create("DPOCollection", namespace, "pairs", COLLECTION)
    wait_for(lambda: kube.job(namespace, "pairs-collect"), what="collection job")
    kube.finish_job(namespace, "pairs-collect", succeeded=True, message=json.dumps(COLLECTION_RESULT))  # 8 pairs
    kube.wait_phase("DPOCollection", namespace, "pairs", "Succeeded")
    start = time.monotonic()
    spec = {**TRAINING, "dataset": {"collectionRef": {"name": "pairs"}},
            "hyperparameters": {**TRAINING["hyperparameters"], "batchSize": 64}}
    kube.create("DPOTrainingJob", namespace, "wide", spec)

    def warned() -> dict[str, Any] | None:
        conditions = {c["type"]: c for c in (kube.get("DPOTrainingJob", namespace, "wide").get("status") or {})
                      .get("conditions") or []}
        return conditions.get("SmallDataset") if conditions.get("SmallDataset", {}).get("status") == "True" else None

    condition = timed("batchSize larger than the dataset", start, warned)
    assert condition["reason"] == "SmallDataset"
    assert "batchSize (64) is larger than the dataset (8 training pairs)" in condition["message"]
    found = wait_for(lambda: [e for e in events(kube, namespace, "wide") if e.get("reason") == "SmallDataset"] or None,
                     what="a SmallDataset event")
    assert found[0]["type"] == "Warning" and "batchSize (64)" in found[0]["note"]

    kube.create("DPOTrainingJob", namespace, "narrow", {**spec, "hyperparameters": {**spec["hyperparameters"],
                                                                                   "batchSize": 1}})
    fine = kube.wait_status("DPOTrainingJob", namespace, "narrow",
                            lambda s: {c["type"]: c for c in s.get("conditions") or []}.get("SmallDataset"))
    assert {c["type"]: c for c in fine["status"]["conditions"]}["SmallDataset"]["status"] == "False"


class _Failing(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return


def test_the_first_failed_pods_error_shows_while_the_job_retries(kube: Kube, namespace: str, operator: None,
                                                                 executor: Any) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        spec = collection({"baseUrl": url, "model": "m", "startupTimeoutSeconds": 3}, job={"backoffLimit": 2})
        start = time.monotonic()
        kube.create("DPOCollection", namespace, "flaky", spec)

        def retrying() -> dict[str, Any] | None:
            status = kube.get("DPOCollection", namespace, "flaky").get("status") or {}
            return status if status.get("reason") == "PodFailing" else None

        status = timed("a failing pod while the Job retries", start, retrying)
        assert status["phase"] in ("Running", "Pending")
        assert "exited with code 1" in status["message"] and "HTTP 500" in status["message"]
        assert "retrying (1 of 3 attempts failed)" in status["message"]
    finally:
        server.shutdown()
