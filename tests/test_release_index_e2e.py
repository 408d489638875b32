"""The evaluations waiting for a dependency are found through kopf's index of DPOEvaluations (no list of the
namespace's evaluations on every DPOCollection event): a held-out collection that appears releases its evaluation,
and neither the index nor the release handler fails in a running operator."""

from __future__ import annotations

import pytest

from tests.kubehelpers import Kube, wait_for
from tests.test_collection_e2e import SPEC

pytestmark = pytest.mark.e2e


def test_a_held_out_collection_that_appears_releases_its_evaluation(kube: Kube, namespace: str) -> None:
    kube.require_emulated()  # the operator runs in this process (its log is read)
    from kopf.testing import KopfRunner

    args = ["run", "--standalone", "--namespace", namespace, "-m", "dpo_operator.handlers"]
    with KopfRunner(args, timeout=60) as runner:
        kube.create("DPOEvaluation", namespace, "held", {
            "candidate": {"baseUrl": "http://cand.example:8000/v1", "model": "cand"},
            "baseline": {"baseUrl": "http://nim.example:8000/v1", "model": "base"},
            "heldOut": {"collectionRef": {"name": "later"}}})
        pending = kube.wait_status("DPOEvaluation", namespace, "held",
                                   lambda s: s.get("reason") == "WaitingForCollection")
        assert "DPOCollection later does not exist (yet)" in pending["status"]["message"]
        assert kube.job(namespace, "held-eval") is None
        kube.create("DPOCollection", namespace, "later", SPEC)
        wait_for(lambda: kube.job(namespace, "held-eval"), what="the evaluation's Job once the collection exists")
    assert runner.exception is None or isinstance(runner.exception, SystemExit), runner.output
    for handler in ("evaluations_by_dependency", "held_out_collection_changed"):
        assert f"Handler '{handler}' failed" not in runner.output, runner.output
        assert f"Indexing handler '{handler}' failed" not in runner.output, runner.output
    assert "Traceback" not in runner.output, runner.output
