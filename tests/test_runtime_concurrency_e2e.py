"""The runtime under concurrent events: Job events, Pod events and requeues of every kind arrive at once from many
threads while the objects move on. Each object is reconciled by one worker at a time, every status write starts
from the status the previous one left (none lost, none reordered), and no child is created twice."""

from __future__ import annotations

import collections
import dataclasses
import json
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kubehelpers import Kube, wait_for
from tests.test_collection_e2e import RESULT, SPEC
from tests.test_training_e2e import NO_CHECK, TRAIN_RESULT, TRAINING

pytestmark = pytest.mark.e2e
RANK = {"Pending": 0, "Running": 1, "Progressing": 1, "Succeeded": 2, "Ready": 2}


def projection(status: dict[str, Any] | None) -> tuple[Any, ...]:
    """What a status write decides: phase, message, generation and the conditions' verdicts."""
    status = status or {}
    conditions = sorted((c["type"], c["status"], c["reason"]) for c in status.get("conditions") or [])
    return status.get("phase"), status.get("message"), status.get("observedGeneration"), tuple(conditions)


class Recorder:
    """Wraps the runtime's decision functions, its status writer and the child create calls."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.busy: collections.Counter[str] = collections.Counter()
        self.most_busy: collections.Counter[str] = collections.Counter()
        self.decisions: collections.Counter[str] = collections.Counter()
        self.writes: dict[str, list[tuple[tuple[Any, ...], tuple[Any, ...]]]] = collections.defaultdict(list)
        self.creates: collections.Counter[str] = collections.Counter()

    def decide(self, decide: Any) -> Any:
        def wrapped(body: dict[str, Any]) -> Any:
            uid = body["metadata"]["uid"]
            with self.lock:
                self.busy[uid] += 1
                self.decisions[uid] += 1
                self.most_busy[uid] = max(self.most_busy[uid], self.busy[uid])
            try:
                return decide(body)
            finally:
                with self.lock:
                    self.busy[uid] -= 1
        return wrapped

    def write_status(self, write: Any) -> Any:
        def wrapped(kind: Any, body: dict[str, Any], outcome: Any, done: str = "Succeeded") -> dict[str, Any]:
            new = write(kind, body, outcome, done)
            with self.lock:
                self.writes[body["metadata"]["uid"]].append((projection(body.get("status")), projection(new)))
            return new
        return wrapped

    def counting(self, make_api: Any, method: str) -> Any:
        def make() -> Any:
            api = make_api()
            original = getattr(api, method)

            def create(namespace: str, body: dict[str, Any], **kwargs: Any) -> Any:
                with self.lock:
                    self.creates[f"{body['kind']}/{namespace}/{body['metadata']['name']}"] += 1
                return original(namespace, body, **kwargs)
            setattr(api, method, create)
            return api
        return make


@pytest.fixture()
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    from dpo_operator import handlers  # noqa: F401  (registers every kind)
    from dpo_operator.kube import client
    from dpo_operator.runtime import controller

    recorder = Recorder()
    originals = dict(controller.RUNTIME._controllers)
    for name, registered in originals.items():
        controller.RUNTIME.register(dataclasses.replace(registered, decide=recorder.decide(registered.decide)))
    monkeypatch.setattr(controller, "write_status", recorder.write_status(controller.write_status))
    monkeypatch.setattr(client, "batch", recorder.counting(client.batch, "create_namespaced_job"))
    monkeypatch.setattr(client, "apps", recorder.counting(client.apps, "create_namespaced_deployment"))
    yield recorder
    controller.RUNTIME._controllers.update(originals)


def test_concurrent_events_and_requeues_lose_no_write_and_create_no_child_twice(
        kube: Kube, namespace: str, monkeypatch: pytest.MonkeyPatch, recorder: Recorder) -> None:
    kube.require_emulated()  # plays the Job and Deployment controllers, and calls the runtime in-process
    from kopf.testing import KopfRunner

    from dpo_operator.api import collection, deployment, training
    from dpo_operator.handlers import collection as collection_handlers
    from dpo_operator.handlers import deployment as deployment_handlers
    from dpo_operator.handlers import training as training_handlers
    from dpo_operator.runtime.controller import RUNTIME

    monkeypatch.setenv("DPO_PROBE_URL_TEMPLATE", "http://127.0.0.1:9/{name}")  # nothing answers: Progressing
    local = {**TRAINING, "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/ds"}}, **NO_CHECK}}
    local.pop("deployOnCompletion")
    args = ["run", "--standalone", "--namespace", namespace, "-m", "dpo_operator.handlers"]
    stop = threading.Event()
    errors: list[BaseException] = []

    def hammer(seed: int) -> None:
        """Job events, Pod events and requeues of every kind, as fast as they come."""
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                for kind, name in ((collection.KIND, "c"), (training.KIND, "t"), (deployment.KIND, "m")):
                    RUNTIME.enqueue(kind, kube.get(kind.kind, namespace, name), delay=rng.choice((0.0, 0.01, 0.05)))
                for job_name, handler, pod_handler in (
                        ("c-collect", collection_handlers.collection_job_changed, collection_handlers.collection_pod_changed),
                        ("t-train", training_handlers.training_job_changed, training_handlers.training_pod_changed)):
                    job = kube.job(namespace, job_name)
                    if job is not None:
                        handler(body=job, namespace=namespace, type="MODIFIED")
                    pods = kube.core.list_namespaced_pod(namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}")
                    for pod in kube.to_dict(pods)["items"]:
                        pod_handler(body=pod, namespace=namespace, type="MODIFIED")
                served = kube.deployment(namespace, "m")
                if served is not None:
                    deployment_handlers.nim_deployment_changed(body=served, namespace=namespace, type="MODIFIED")
        except BaseException as exc:  # noqa: BLE001  (reported by the test thread)
            errors.append(exc)

    with KopfRunner(args, timeout=60):
        kube.create("DPOCollection", namespace, "c", SPEC)
        kube.create("DPOTrainingJob", namespace, "t", local)
        kube.create("ModelDeployment", namespace, "m", {"model": {"explicit": {"name": "meta/llama"}}})
        wait_for(lambda: kube.job(namespace, "c-collect") and kube.job(namespace, "t-train")
                 and kube.deployment(namespace, "m"), what="children")
        threads = [threading.Thread(target=hammer, args=(seed,), daemon=True) for seed in range(6)]
        for thread in threads:
            thread.start()
        try:
            kube.start_job(namespace, "c-collect")
            kube.start_job(namespace, "t-train")
            kube.wait_phase("DPOCollection", namespace, "c", "Running")
            kube.wait_phase("DPOTrainingJob", namespace, "t", "Running")
            kube.finish_job(namespace, "c-collect", succeeded=True, message=json.dumps(RESULT))
            kube.finish_job(namespace, "t-train", succeeded=True, message=json.dumps(TRAIN_RESULT))
            kube.roll_out(namespace, "m")
            kube.wait_phase("DPOCollection", namespace, "c", "Succeeded")
            kube.wait_phase("DPOTrainingJob", namespace, "t", "Succeeded")
            wait_for(lambda: "not reachable" in (kube.get("ModelDeployment", namespace, "m").get("status") or {})
                     .get("message", ""), what="the rollout complete, the endpoint not answering")
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        assert not errors, errors
        final = {name: kube.get(kind, namespace, name) for kind, name in
                 (("DPOCollection", "c"), ("DPOTrainingJob", "t"), ("ModelDeployment", "m"))}

    for name, obj in final.items():
        uid = obj["metadata"]["uid"]
        writes = recorder.writes[uid]
        assert recorder.decisions[uid] >= 3, (name, recorder.decisions[uid])
        assert recorder.most_busy[uid] == 1, f"{name} was reconciled by {recorder.most_busy[uid]} workers at once"
        assert writes, name
        assert writes[0][0] == projection(None), (name, writes[0])  # the first write saw no status
        for (_, before), (seen, _) in zip(writes, writes[1:]):
            assert seen == before, f"{name}: a status write decided on {seen}, not on the previous write's {before}"
        assert projection(obj["status"]) == writes[-1][1], f"{name}: the last status write is not what the API holds"
        phases = [RANK[new[0]] for _, new in writes]
        assert phases == sorted(phases), f"{name}: phases went backwards: {[new[0] for _, new in writes]}"
    assert final["c"]["status"]["pairs"]["total"] == RESULT["pairs"]["total"]
    assert final["m"]["status"]["phase"] == "Progressing"
    assert dict(recorder.creates) == {f"Job/{namespace}/c-collect": 1, f"Job/{namespace}/t-train": 1,
                                      f"Deployment/{namespace}/m": 1}
