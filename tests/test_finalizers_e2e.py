"""Finalizers only where something outside the cluster must be cleaned up; no per-object timers: objects are
looked at again when a change is expected (requeue-after), and deleting them never waits for the operator."""

from __future__ import annotations

import pytest

from tests.kubehelpers import Kube, wait_for
from tests.test_collection_e2e import SPEC
from tests.test_training_e2e import NO_CHECK, TRAINING

pytestmark = pytest.mark.e2e


def test_no_finalizer_without_remote_work_and_deletes_do_not_need_the_operator(kube: Kube, namespace: str) -> None:
    kube.require_emulated()  # runs its own operator
    from kopf.testing import KopfRunner

    from dpo_operator.runtime.controller import RUNTIME

    args = ["run", "--standalone", "--namespace", namespace, "-m", "dpo_operator.handlers"]
    local = {**TRAINING, "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/ds"}}, **NO_CHECK}}
    local.pop("deployOnCompletion")
    with KopfRunner(args, timeout=60):
        kube.create("DPOCollection", namespace, "pairs", SPEC)
        kube.create("DPOTrainingJob", namespace, "train", local)
        kube.create("ModelDeployment", namespace, "serve", {"model": {"explicit": {"name": "meta/llama"}}})
        wait_for(lambda: kube.job(namespace, "pairs-collect") and kube.job(namespace, "train-train")
                 and kube.deployment(namespace, "serve"), what="children")
        kube.wait_phase("ModelDeployment", namespace, "serve", "Progressing")
        for kind, name in (("DPOCollection", "pairs"), ("DPOTrainingJob", "train"), ("ModelDeployment", "serve")):
            obj = kube.get(kind, namespace, name)
            assert not obj["metadata"].get("finalizers"), (kind, obj["metadata"].get("finalizers"))
            # looked at again later (a resync, a readiness check), without a timer
            wait_for(lambda: RUNTIME.scheduled_in(kind, obj["metadata"]["uid"]) is not None, what=f"{kind} requeued")
    assert RUNTIME.scheduled_in("DPOCollection", kube.get("DPOCollection", namespace, "pairs")["metadata"]["uid"]) is None
    # the operator is down: deletes complete anyway
    for kind, name in (("DPOCollection", "pairs"), ("DPOTrainingJob", "train"), ("ModelDeployment", "serve")):
        kube.delete(kind, namespace, name)
        wait_for(lambda: not kube.exists(kind, namespace, name), timeout=10, what=f"{kind} deleted")
