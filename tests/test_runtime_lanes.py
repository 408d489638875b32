"""The runtime without a cluster: a tenant whose reconciles hang cannot hold another tenant's, nor another kind's;
the liveness figure grows when due work finds no free worker, and returns to 0 once work flows again."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from dpo_operator.api import collection, deployment
from dpo_operator.config import OperatorConfig
from dpo_operator.runtime import controller as runtime_module
from dpo_operator.runtime.controller import Controller, Result, Runtime
from tests.kubehelpers import wait_for


@pytest.fixture()
def objects(monkeypatch: pytest.MonkeyPatch) -> dict[tuple[str, str], dict[str, Any]]:
    """The API stand-in: objects by (namespace, name); status writes are kept."""
    store: dict[tuple[str, str], dict[str, Any]] = {}
    monkeypatch.setattr(runtime_module.custom_objects, "read", lambda kind, ns, name: store.get((ns, name)))
    monkeypatch.setattr(runtime_module, "write_status", lambda kind, body, outcome, done: {})
    return store


def body(store: dict[tuple[str, str], dict[str, Any]], namespace: str, name: str) -> dict[str, Any]:
    obj = {"metadata": {"namespace": namespace, "name": name, "uid": f"{namespace}-{name}"}, "spec": {}}
    store[(namespace, name)] = obj
    return obj


def test_hanging_reconciles_of_one_tenant_hold_neither_other_tenants_nor_other_kinds(objects: Any) -> None:
    release = threading.Event()
    done: set[str] = set()

    def decide(obj: dict[str, Any]) -> Result:
        if obj["metadata"]["name"].startswith("hanging"):
            release.wait(30)  # an endpoint that never answers (until the test ends)
        done.add(obj["metadata"]["uid"])
        return Result()

    runtime = Runtime(OperatorConfig(lanes={"deployment": 4, "collection": 2, "default": 1}))
    runtime.register(Controller(deployment.KIND, decide, lambda b: None, lane=lambda b: "deployment"))
    runtime.register(Controller(collection.KIND, decide, lambda b: None, lane=lambda b: "collection"))
    try:
        for i in range(20):
            runtime.enqueue(deployment.KIND, body(objects, "slow", f"hanging-{i}"))
        wait_for(lambda: runtime.seconds_without_progress() > 0, what="the slow tenant's work under way")
        runtime.enqueue(deployment.KIND, body(objects, "team-b", "serve"))
        runtime.enqueue(collection.KIND, body(objects, "slow", "pairs"))
        wait_for(lambda: {"team-b-serve", "slow-pairs"} <= done, what="other work done while the slow tenant hangs")
        assert not any(uid.startswith("slow-hanging") for uid in done)
    finally:
        release.set()
    wait_for(lambda: len(done) == 22, what="the slow tenant's work once its endpoints answer")


def test_liveness_reports_a_stall_and_recovers(objects: Any) -> None:
    from dpo_operator.handlers import settings

    release = threading.Event()
    runtime = Runtime(OperatorConfig(lanes={"deployment": 1, "default": 1}, stalled_after_seconds=0.2))
    runtime.register(Controller(deployment.KIND, lambda obj: (release.wait(30), Result())[1], lambda b: None,
                                lane=lambda b: "deployment"))
    original = runtime_module.RUNTIME
    settings.RUNTIME = runtime
    try:
        assert settings.progress() == 0.0
        runtime.enqueue(deployment.KIND, body(objects, "a", "x"))
        runtime.enqueue(deployment.KIND, body(objects, "b", "y"))

        def stalled() -> bool:
            try:
                settings.progress()
            except Exception as exc:  # noqa: BLE001  (kopf turns the probe's error into HTTP 500)
                return "no reconcile finished" in str(exc)
            return False
        wait_for(stalled, what="the liveness probe reporting the stall")
        release.set()
        wait_for(lambda: runtime.seconds_without_progress() == 0.0, what="work flowing again")
        assert settings.progress() == 0.0
    finally:
        release.set()
        settings.RUNTIME = original


def test_a_final_outcome_lost_to_a_conflict_is_written_again_without_waiting_for_the_pacing(
        objects: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seen on a loaded machine: kopf patched the object between our read and our status write (409), and an
    InvalidSpec waited for the kind's 30 s pacing before it was written again."""
    from kubernetes.client.exceptions import ApiException

    from dpo_operator.kube.status import Outcome

    writes: list[str] = []

    def write_status(kind: Any, body: Any, outcome: Outcome, done: str) -> dict[str, Any]:
        writes.append(outcome.phase)
        if len(writes) == 1:
            raise ApiException(status=409, reason="Conflict")
        return {"phase": outcome.phase}

    monkeypatch.setattr(runtime_module, "write_status", write_status)
    runtime = Runtime(OperatorConfig(conflict_retry_seconds=0.1))
    runtime.register(Controller(deployment.KIND, lambda obj: Result(Outcome("Failed", "InvalidSpec", "bad field")),
                                lambda b: None, pace=lambda b: 3600.0))
    runtime.enqueue(deployment.KIND, body(objects, "a", "bad"))
    wait_for(lambda: len(writes) == 2, timeout=20, what="the refused write made again")
    assert writes == ["Failed", "Failed"]
