"""A DPOCollection with ``parallelism: 3`` on the emulated cluster: an Indexed Job of three shard pods (run by the
local executor as the Job controller runs them), then a merge Job; its dataset equals a one-pod collection's."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kubehelpers import Kube, reason_of

pytestmark = pytest.mark.e2e


def test_three_shards_and_a_merge_give_the_one_pod_dataset(kube: Kube, namespace: str, operator: None,
                                                           tmp_path: Path) -> None:
    kube.require_emulated()  # runs a kubelet stand-in
    from dpo_operator.embedded.executor import LocalExecutor
    from dpo_operator.embedded.policy_server import PolicyServer

    kube.claims(namespace, "dpo-data")
    with PolicyServer(seed=3, noise=0.3) as policy, LocalExecutor(kube.api, tmp_path, namespace) as executor:
        kube.allow_urls(namespace, "nim-key", policy.url)
        base = {"workflow": {"name": "tictactoe", "numExamples": 10}, "numRuns": 2, "seed": 11, "candidatesPerTurn": 4,
                "llm": {"baseUrl": policy.url, "model": policy.model, "apiKeySecretRef": {"name": "nim-key", "key": "api-key"}}}
        kube.create("DPOCollection", namespace, "one", {**base, "output": {"pvc": {"claimName": "dpo-data", "path": "/one"}}})
        kube.create("DPOCollection", namespace, "three", {**base, "parallelism": 3,
                                                         "output": {"pvc": {"claimName": "dpo-data", "path": "/three"}}})
        one = kube.wait_phase("DPOCollection", namespace, "one", "Succeeded", timeout=90)
        three = kube.wait_phase("DPOCollection", namespace, "three", "Succeeded", timeout=90)

    shards = kube.job(namespace, "three-collect")
    assert shards is not None and shards["spec"]["completionMode"] == "Indexed"
    assert shards["spec"]["completions"] == shards["spec"]["parallelism"] == 3
    assert shards["status"]["succeeded"] == 3 and shards["status"]["completedIndexes"] == "0,1,2"
    pods = kube.core.list_namespaced_pod(namespace, label_selector="job-name=three-collect").items
    assert sorted(p.metadata.annotations["batch.kubernetes.io/job-completion-index"] for p in pods) == ["0", "1", "2"]
    assert "--shard" in shards["spec"]["template"]["spec"]["containers"][0]["command"]
    merge = kube.job(namespace, "three-merge")
    assert merge is not None and "--merge" in merge["spec"]["template"]["spec"]["containers"][0]["command"]
    merge_env = {e["name"] for e in merge["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "OPENAI_API_KEY" not in merge_env  # the merge calls no endpoint: it gets no key
    assert three["status"]["jobName"] == "three-collect" and three["status"]["mergeJobName"] == "three-merge"

    volume = executor.pvc_dir("dpo-data")
    for name in ("training/training_file.jsonl", "validation/validation_file.jsonl"):
        single, merged = (volume / "one" / name).read_text(), (volume / "three" / name).read_text()
        assert single == merged and single
    for field in ("pairs", "candidates", "runsCompleted", "meanScoreDiff"):
        assert three["status"][field] == one["status"][field], field
    assert three["status"]["datasetLocation"] == "pvc://dpo-data/three"


def test_a_failing_shard_fails_the_collection_without_a_merge(kube: Kube, namespace: str, operator: None,
                                                              tmp_path: Path) -> None:
    kube.require_emulated()
    import socket

    from dpo_operator.embedded.executor import LocalExecutor

    with socket.socket() as sock:  # a port nothing listens on: every request is refused
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    kube.claims(namespace, "dpo-data")
    spec = {"workflow": {"name": "tictactoe", "numExamples": 4}, "parallelism": 2, "job": {"backoffLimit": 0},
            "llm": {"baseUrl": f"http://127.0.0.1:{closed}/v1", "model": "m", "startupTimeoutSeconds": 0,
                    "maxRetries": 0, "timeoutSeconds": 2},
            "output": {"pvc": {"claimName": "dpo-data", "path": "/ds"}}}
    with LocalExecutor(kube.api, tmp_path, namespace):
        kube.create("DPOCollection", namespace, "broken", spec)
        failed = kube.wait_phase("DPOCollection", namespace, "broken", "Failed", timeout=60)
    assert reason_of(failed, "Failed") == "BackoffLimitExceeded", failed["status"]
    assert "shard" in failed["status"]["message"] and "last pod error" in failed["status"]["message"]
    assert kube.job(namespace, "broken-merge") is None  # nothing to merge
