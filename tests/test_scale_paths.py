"""The cheaper paths taken for scale (bench/bench_scale.py) keep their outcomes: kopf's diff-base essence built
from part of the body, the filter of kopf's per-watch-event success lines, one log handler, the ``when`` filters of
the dependency-release handlers."""

from __future__ import annotations

import copy
import logging
from typing import Any

import kopf
import pytest

from dpo_operator.kube.diffbase import DigestDiffBaseStorage, essential_part

BODY: dict[str, Any] = {
    "apiVersion": "dpo.ai/v1alpha1", "kind": "DPOCollection",
    "metadata": {"name": "c", "namespace": "n", "uid": "u", "resourceVersion": "5", "generation": 2,
                 "labels": {"team": "a"},
                 "annotations": {"note/x": "1", "dpo.ai/last-handled-configuration": "{}",
                                 "kubectl.kubernetes.io/last-applied-configuration": "{}"},
                 "ownerReferences": [{"kind": "X", "name": "o", "uid": "1"}], "finalizers": ["dpo.ai/finalizer"],
                 "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {"f:workflow": {}}}}]},
    "spec": {"workflow": {"name": "tictactoe"}, "seeds": [1, 2]},
    "status": {"phase": "Running", "conditions": [{"type": "Progressing", "status": "True"}]},
}


@pytest.mark.parametrize("extra", [None, [("spec",)], [("status", "phase")], ["metadata.finalizers"]])
def test_the_essence_from_part_of_the_body_is_kopfs_own(extra: Any) -> None:
    body = kopf.Body(copy.deepcopy(BODY))
    kopfs = kopf.AnnotationsDiffBaseStorage(prefix="dpo.ai", key="last-handled-configuration")
    ours = DigestDiffBaseStorage(prefix="dpo.ai", key="last-handled-configuration")
    assert dict(ours.build(body=body, extra_fields=extra)) == dict(kopfs.build(body=body, extra_fields=extra))


def test_the_part_copied_leaves_out_status_and_managed_fields_unless_a_handler_tracks_them() -> None:
    light = essential_part(kopf.Body(BODY))
    assert "status" not in light and set(light["metadata"]) == {"labels", "annotations", "ownerReferences"}
    assert light["spec"] == BODY["spec"]
    assert essential_part(BODY, [("status", "phase")]) is BODY


def _record(message: str, level: int = logging.INFO, skip: bool = True) -> logging.LogRecord:
    record = logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)
    record.k8s_skip = skip
    return record


def test_watch_handler_successes_are_dropped_and_everything_else_kept() -> None:
    from dpo_operator.handlers.settings import QuietWatchSuccesses

    quiet, objects = QuietWatchSuccesses(), logging.getLogger("kopf.objects")
    level = objects.level
    try:
        objects.setLevel(logging.INFO)
        assert not quiet.filter(_record("Handler 'collection_job_changed' succeeded."))
        assert quiet.filter(_record("Handler 'collection_changed' succeeded.", skip=False))  # a creation handler
        assert quiet.filter(_record("Handler 'x' failed with an exception and will try again", logging.ERROR))
        assert quiet.filter(_record("Creation is processed: 1 succeeded; 0 failed.", skip=False))
        objects.setLevel(logging.DEBUG)  # --verbose: every line
        assert quiet.filter(_record("Handler 'collection_job_changed' succeeded."))
    finally:
        objects.setLevel(level)


def test_the_operator_writes_each_log_line_once() -> None:
    from dpo_operator.cli import configure_logging

    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    try:
        plain = logging.StreamHandler()  # what main()'s basicConfig installs
        root.addHandler(plain)
        configure_logging("text", verbose=False)
        assert plain not in root.handlers
        assert [type(h).__name__ for h in root.handlers if h not in before] == ["_KopfStreamHandler"]
    finally:
        root.handlers[:] = before
        root.setLevel(level)


def test_the_release_handlers_are_called_only_for_events_that_can_matter() -> None:
    from dpo_operator.handlers import deployment, evaluation, training

    assert evaluation._appeared(type="ADDED") and evaluation._appeared(type=None)
    assert not evaluation._appeared(type="MODIFIED") and not evaluation._appeared(type="DELETED")
    running, done = {"status": {"phase": "Running"}}, {"status": {"phase": "Succeeded"}}
    assert training._collection_finished(body=done, type="MODIFIED")
    assert not training._collection_finished(body=running, type="MODIFIED")
    assert not training._collection_finished(body=done, type="DELETED")
    assert deployment._model_may_be_ready(body={"status": {"phase": "Running", "promotion": {"phase": "Gating"}}},
                                          type="MODIFIED")
    assert not deployment._model_may_be_ready(body=running, type="MODIFIED")
    assert evaluation._endpoint_settled(body={"status": {"phase": "Ready"}})
    assert not evaluation._endpoint_settled(body={"status": {"phase": "Progressing"}})


def test_the_evaluation_index_names_each_dependency_of_a_running_evaluation() -> None:
    from dpo_operator.handlers import evaluation

    spec = {"candidate": {"modelDeploymentRef": {"name": "cand"}}, "baseline": {"baseUrl": "http://b/v1", "model": "m"},
            "heldOut": {"collectionRef": {"name": "pairs"}}}
    entries = evaluation.evaluations_by_dependency(body=kopf.Body({"spec": spec}), namespace="ns", name="ev", uid="u1")
    ref = {"metadata": {"namespace": "ns", "name": "ev", "uid": "u1"}}
    assert entries == {("ns", "ModelDeployment", "cand"): ref, ("ns", "DPOCollection", "pairs"): ref}
    assert evaluation._running(body={"status": {"phase": "Pending"}})
    assert not evaluation._running(body={"status": {"phase": "Succeeded"}})  # a finished one leaves the index


def test_a_dependency_releases_the_evaluations_the_index_holds_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from dpo_operator.handlers import evaluation

    enqueued: list[str] = []
    monkeypatch.setattr(evaluation.RUNTIME, "enqueue", lambda kind, body: enqueued.append(body["metadata"]["name"]))
    index = {("ns", "DPOCollection", "pairs"): [{"metadata": {"namespace": "ns", "name": "ev", "uid": "u1"}}]}
    collection = kopf.Body({"metadata": {"name": "pairs", "namespace": "ns"}})
    evaluation.held_out_collection_changed(body=collection, namespace="ns", type="ADDED", evaluations_by_dependency=index)
    evaluation.held_out_collection_changed(body=kopf.Body({"metadata": {"name": "other"}}), namespace="ns",
                                           type="ADDED", evaluations_by_dependency=index)
    assert enqueued == ["ev"]
