"""DPOCollection against the (emulated) Kubernetes API with the real operator running."""

from __future__ import annotations

import json

import pytest

from tests.kubehelpers import Kube, wait_for

pytestmark = pytest.mark.e2e

SPEC = {
    "workflow": {"name": "tictactoe", "numExamples": 8},
    "llm": {"baseUrl": "http://nim.example:8000/v1", "model": "meta/llama-3.2-1b-instruct",
            "apiKeySecretRef": {"name": "nim-key", "key": "api-key"}},
    "output": {"pvc": {"claimName": "dpo-data", "path": "/datasets/ttt"}},
    "template": {"resources": {"limits": {"nvidia.com/gpu": 1}}, "nodeSelector": {"nvidia.com/gpu.present": "true"}},
    "job": {"activeDeadlineSeconds": 3600},
}
RESULT = {"pairs": {"total": 10, "training": 8, "validation": 2}, "candidates": 32, "runsCompleted": 1,
          "runsFailed": 0, "meanScoreDiff": 0.75, "datasetLocation": "pvc://dpo-data/datasets/ttt"}


def test_collection_launches_job_reports_result_and_cleans_up(kube: Kube, namespace: str, operator: None) -> None:
    kube.create("DPOCollection", namespace, "ttt", SPEC)

    job = wait_for(lambda: kube.job(namespace, "ttt-collect"), what="collection job")
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "DPOCollection" and owner["name"] == "ttt" and owner["controller"] is True
    assert job["spec"]["activeDeadlineSeconds"] == 3600 and job["spec"]["backoffLimit"] == 2
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "dpo-data"
    env = {e["name"]: e for e in container["env"]}
    assert env["OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "nim-key", "key": "api-key"}
    assert json.loads(env["DPO_COLLECTION_SPEC"]["value"])["workflow"]["numExamples"] == 8

    pending = kube.wait_phase("DPOCollection", namespace, "ttt", "Pending")
    assert pending["status"]["jobName"] == "ttt-collect"
    assert pending["status"]["observedGeneration"] == pending["metadata"]["generation"]

    kube.start_job(namespace, "ttt-collect")
    running = kube.wait_phase("DPOCollection", namespace, "ttt", "Running")
    assert running["status"]["startTime"]

    kube.finish_job(namespace, "ttt-collect", succeeded=True, message=json.dumps(RESULT))
    done = kube.wait_phase("DPOCollection", namespace, "ttt", "Succeeded")
    status = done["status"]
    assert status["pairs"] == {"total": 10, "training": 8, "validation": 2}
    assert status["candidates"] == 32 and status["meanScoreDiff"] == 0.75
    assert status["datasetLocation"] == "pvc://dpo-data/datasets/ttt"
    assert status["completionTime"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Succeeded"]["status"] == "True" and conditions["Progressing"]["status"] == "False"
    assert conditions["Succeeded"]["observedGeneration"] == done["metadata"]["generation"]

    kube.delete("DPOCollection", namespace, "ttt")
    wait_for(lambda: not kube.exists("DPOCollection", namespace, "ttt"), what="collection deleted")
    wait_for(lambda: kube.job(namespace, "ttt-collect") is None, what="job garbage-collected")
    wait_for(lambda: not kube.core.list_namespaced_pod(namespace).items, what="pods garbage-collected")


def test_failed_job_reports_reason_and_pod_error(kube: Kube, namespace: str, operator: None) -> None:
    kube.create("DPOCollection", namespace, "boom", SPEC)
    wait_for(lambda: kube.job(namespace, "boom-collect"), what="collection job")
    kube.finish_job(namespace, "boom-collect", succeeded=False, reason="DeadlineExceeded",
                    message=json.dumps({"error": "LLM endpoint http://nim.example:8000/v1 unreachable"}))
    failed = kube.wait_phase("DPOCollection", namespace, "boom", "Failed")
    assert failed["status"]["failureReason"] == "DeadlineExceeded"
    assert "unreachable" in failed["status"]["message"]
    assert {c["type"]: c["reason"] for c in failed["status"]["conditions"]}["Failed"] == "DeadlineExceeded"


def test_invalid_spec_fails_with_actionable_message_and_no_job(kube: Kube, namespace: str, operator: None) -> None:
    spec = {**SPEC, "candidatesPerTurn": 1}  # schema-valid, but no pair can come from one candidate
    kube.create("DPOCollection", namespace, "single", spec)
    failed = kube.wait_phase("DPOCollection", namespace, "single", "Failed")
    condition = {c["type"]: c for c in failed["status"]["conditions"]}["Failed"]
    assert condition["reason"] == "InvalidSpec"
    assert "candidatesPerTurn must be at least 2" in condition["message"]
    assert kube.jobs(namespace) == []


def test_suspend_pauses_and_resumes_the_job(kube: Kube, namespace: str, operator: None) -> None:
    kube.create("DPOCollection", namespace, "paused", {**SPEC, "suspend": True})
    job = wait_for(lambda: kube.job(namespace, "paused-collect"), what="collection job")
    assert job["spec"]["suspend"] is True
    kube.wait_phase("DPOCollection", namespace, "paused", "Suspended")
    kube.patch_spec("DPOCollection", namespace, "paused", {"suspend": False})
    wait_for(lambda: (job := kube.job(namespace, "paused-collect")) is not None and job["spec"].get("suspend") is False,
             what="job resumed")
    kube.wait_phase("DPOCollection", namespace, "paused", "Pending")
    assert len(kube.jobs(namespace)) == 1


def test_operator_restart_adopts_the_existing_job(kube: Kube, namespace: str) -> None:
    kube.require_emulated()  # runs its own operator or kubelet stand-in
    from kopf.testing import KopfRunner

    args = ["run", "--standalone", "--namespace", namespace, "-m", "dpo_operator.handlers"]
    with KopfRunner(args, timeout=60):
        kube.create("DPOCollection", namespace, "again", SPEC)
        wait_for(lambda: kube.job(namespace, "again-collect"), what="collection job")
    with KopfRunner(args, timeout=60):
        kube.start_job(namespace, "again-collect")
        kube.wait_phase("DPOCollection", namespace, "again", "Running")
    assert [j["metadata"]["name"] for j in kube.jobs(namespace)] == ["again-collect"]


def test_real_collector_runs_in_a_local_pod(kube: Kube, namespace: str, operator: None, tmp_path) -> None:  # noqa: ANN001
    """The Job's real container command (the collector) runs, against an OpenAI-compatible server, and its
    termination message flows into the status."""
    kube.require_emulated()  # runs a kubelet stand-in
    from dpo_operator.embedded.executor import LocalExecutor
    from dpo_operator.embedded.policy_server import PolicyServer

    kube.claims(namespace, "dpo-data")
    with PolicyServer(seed=2) as policy, LocalExecutor(kube.api, tmp_path, namespace) as executor:
        kube.allow_urls(namespace, "nim-key", policy.url)  # the key's owner lets it go to this endpoint
        spec = {**SPEC, "llm": {**SPEC["llm"], "baseUrl": policy.url, "model": policy.model}, "numRuns": 2}
        kube.create("DPOCollection", namespace, "real", spec)
        done = kube.wait_phase("DPOCollection", namespace, "real", "Succeeded", timeout=60)
    status = done["status"]
    dataset = executor.pvc_dir("dpo-data") / "datasets/ttt"
    train = (dataset / "training/training_file.jsonl").read_text().splitlines()
    validation = (dataset / "validation/validation_file.jsonl").read_text().splitlines()
    assert status["pairs"] == {"total": len(train) + len(validation), "training": len(train), "validation": len(validation)}
    assert status["runsCompleted"] == 2 and status["candidates"] > 0
    assert status["datasetLocation"] == "pvc://dpo-data/datasets/ttt"
    assert json.loads((dataset / "metrics.json").read_text())["pairs"] == status["pairs"]


def test_nat_workflow_runs_as_a_dpocollection_in_a_local_pod(kube: Kube, namespace: str, operator: None, tmp_path,  # noqa: ANN001
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A NAT workflow (the test plugin, found through its entry point as an installed package would be) runs
    unchanged in the collection pod; its TTC_END candidates become the dataset, and the status reports them."""
    kube.require_emulated()  # runs a kubelet stand-in
    pytest.importorskip("nat.plugins.eval.runtime.evaluate", reason="needs the [nat] extra")
    import os
    from pathlib import Path

    from dpo_operator.embedded.executor import LocalExecutor
    from tests.test_nat_workflow import PLUGIN, as_set, minus_ties, nat_reference

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGIN), os.environ.get("PYTHONPATH")])))
    config = Path(tmp_path) / "nat-config.yml"
    config.write_text((PLUGIN / "config.yml").read_text().replace("file_path: data.json",
                                                                  f"file_path: {PLUGIN / 'data.json'}"))
    spec = {"workflow": {"nat": {"configFile": str(config), "ttcStepName": "dpo_candidate_move"},
                         "maxConcurrentEpisodes": 2},
            "numRuns": 2, "useFullMessageHistory": True, "output": {"pvc": {"claimName": "dpo-data", "path": "/nat"}}}
    kube.claims(namespace, "dpo-data")
    with LocalExecutor(kube.api, Path(tmp_path) / "cluster", namespace) as executor:
        kube.create("DPOCollection", namespace, "natwf", spec)
        done = kube.wait_phase("DPOCollection", namespace, "natwf", "Succeeded", timeout=90)
    status = done["status"]
    dataset = executor.pvc_dir("dpo-data") / "nat"
    rows = [json.loads(line) for name in ("training/training_file.jsonl", "validation/validation_file.jsonl")
            for line in (dataset / name).read_text().splitlines()]
    assert as_set(rows) == as_set(minus_ties(nat_reference()))
    assert status["runsCompleted"] == 2 and status["candidates"] == 80 and status["invalidCandidates"] == 0
    assert status["candidatesPerSecond"] > 0
    env = {e["name"] for e in kube.job(namespace, "natwf-collect")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "OPENAI_API_KEY" not in env  # no llm: the NAT config says where its model is


def test_nat_inputs_are_mounted_into_the_collection_pod(kube: Kube, namespace: str, operator: None) -> None:
    """ConfigMap-held NAT config and dataset, and an offline workflow output on another PVC, reach the pod."""
    spec = {"workflow": {"nat": {"configMapRef": {"name": "nat", "key": "config.yml"},
                                 "datasetRef": {"name": "nat-data", "key": "data.json"}}},
            "template": {"env": [{"name": "NVIDIA_API_KEY", "valueFrom": {"secretKeyRef": {"name": "k", "key": "v"}}}]},
            "output": {"pvc": {"claimName": "dpo-data", "path": "/ds"}}}
    # a Secret a pod may name carries the opt-in label; passed by template.env (sent who knows where): allowed anywhere
    kube.usable_secret(namespace, "k", {"v": "nvapi-test"}, allowed_urls="*")
    kube.create("DPOCollection", namespace, "natcm", spec)
    pod = wait_for(lambda: kube.job(namespace, "natcm-collect"), what="collection job")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    # every key (the config's relative paths resolve), with kube-apiserver's defaultMode, as on a real cluster
    assert volumes["nat-config"]["configMap"] == {"name": "nat", "defaultMode": 420}
    assert volumes["nat-dataset"]["configMap"]["name"] == "nat-data"
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["DPO_NAT_CONFIG"]["value"] == "/etc/dpo-operator/nat-config/config.yml"
    assert env["DPO_NAT_DATASET"]["value"] == "/etc/dpo-operator/nat-dataset/data.json"
    assert env["NVIDIA_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "k", "key": "v"}  # NAT's key, by reference

    offline = {"workflow": {"nat": {"workflowOutput": {"claimName": "nat-runs", "path": "/eval/jobs"}}},
               "output": {"pvc": {"claimName": "dpo-data"}}}
    kube.create("DPOCollection", namespace, "natoff", offline)
    pod = wait_for(lambda: kube.job(namespace, "natoff-collect"), what="collection job")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["nat-output"]["persistentVolumeClaim"] == {"claimName": "nat-runs", "readOnly": True}
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["DPO_NAT_WORKFLOW_OUTPUT"]["value"] == "/nat-output/eval/jobs"
