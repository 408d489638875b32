"""DPOTrainingJob with model.adapter and referenceModel against the (emulated) API server with the real operator:
what is refused before any pod, and a round that continues the previous round's adapter, trained and served by
the local executor."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.kubehelpers import Kube, conditions_of

pytestmark = pytest.mark.e2e

NO_CHECK = {"check": {"enabled": False}}
LOCAL = {
    "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/ds"}}, **NO_CHECK},
    "model": {"name": "tiny", "pvc": {"claimName": "models", "path": "/tiny"}},
    "hyperparameters": {"epochs": 1, "batchSize": 8, "learningRate": 0.005, "finetuningType": "lora"},
    "local": {"gpusPerNode": 0, "precision": "fp32", "output": {"claimName": "dpo-data", "path": "/models"}},
}
ADAPTER = {"claimName": "dpo-data", "path": "/models/round0/final"}
CUSTOMIZER = {"backend": "customizer", "local": None,
              "customizer": {"entityStoreUrl": "http://nemo.example", "datastoreUrl": "http://ds.example"}}


def spec(**changes: object) -> dict:
    return {k: v for k, v in {**LOCAL, **changes}.items() if v is not None}


@pytest.mark.parametrize("body, text", [
    (spec(model={**LOCAL["model"], "adapter": ADAPTER},
          hyperparameters={**LOCAL["hyperparameters"], "finetuningType": "all_weights"}),
     "model.adapter needs hyperparameters.finetuningType lora"),
    (spec(model={"name": "meta/llama-3.2-1b-instruct@v1.0.0+A100", "adapter": ADAPTER}, **CUSTOMIZER),
     "model.adapter is for the local backend"),
    (spec(model={"name": "meta/llama-3.2-1b-instruct@v1.0.0+A100"}, referenceModel={"name": "meta/other"},
          **CUSTOMIZER),
     "referenceModel is for the local backend"),
    (spec(referenceModel={"name": "other", "pvc": {"claimName": "models", "path": "/other"},
                          "hub": {"endpoint": "http://hub.example/v1/hf", "repoId": "ns/other"}}),
     "referenceModel: set at most one of 'pvc' or 'hub'"),
])
def test_starting_points_that_cannot_work_are_invalid_specs(kube: Kube, namespace: str, operator: None, body: dict,
                                                            text: str) -> None:
    kube.create("DPOTrainingJob", namespace, "bad", body)
    failed = kube.wait_phase("DPOTrainingJob", namespace, "bad", "Failed")
    condition = conditions_of(failed)["Failed"]
    assert condition["reason"] == "InvalidSpec" and text in condition["message"]
    assert kube.jobs(namespace) == []


@pytest.fixture()
def pods_reach_services_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator and the local executor's pods run on this machine: both reach a NIM Service on localhost."""
    monkeypatch.setenv("DPO_PROBE_URL_TEMPLATE", "http://127.0.0.1:{port}")
    monkeypatch.setenv("DPO_WORKLOAD_ENDPOINT_URL_TEMPLATE", "http://127.0.0.1:{port}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.workload
@pytest.mark.timeout(480)  # two tiny trainings, a data check and a served model on a loaded machine
def test_a_round_continues_the_previous_rounds_adapter_and_is_served(pods_reach_services_locally: None, kube: Kube,
                                                                    namespace: str, operator: None,
                                                                    tmp_path: Path) -> None:
    kube.require_emulated()  # runs a kubelet stand-in
    pytest.importorskip("peft")
    import httpx

    from dpo_operator.embedded.executor import LocalExecutor
    from dpo_operator.embedded.tiny_model import CHAT_TEMPLATE, build_tiny_model
    from tests.datasets import toy_dataset

    kube.claims(namespace, "models", "dpo-data")
    port = free_port()
    with LocalExecutor(kube.api, tmp_path, namespace, serve_deployments=True) as executor:
        build_tiny_model(executor.pvc_dir("models") / "tiny", chat_template=CHAT_TEMPLATE)
        toy_dataset(executor.pvc_dir("dpo-data") / "ds")
        first = spec(hyperparameters={**LOCAL["hyperparameters"],
                                      "lora": {"rank": 4, "alpha": 8, "targetModules": ["q_proj", "v_proj"]}})
        kube.create("DPOTrainingJob", namespace, "round0", first)
        done = kube.wait_phase("DPOTrainingJob", namespace, "round0", "Succeeded", timeout=180)
        assert done["status"]["outputModel"] == "pvc://dpo-data/models/round0/final"

        # knowable before any pod: round0's spec says what its adapter is
        kube.create("DPOTrainingJob", namespace, "wrongrank", spec(
            model={**LOCAL["model"], "adapter": ADAPTER},
            hyperparameters={**LOCAL["hyperparameters"], "lora": {"rank": 8}}))
        refused = kube.wait_phase("DPOTrainingJob", namespace, "wrongrank", "Failed")
        message = conditions_of(refused)["Failed"]["message"]
        assert conditions_of(refused)["Failed"]["reason"] == "InvalidSpec"
        assert "spec.hyperparameters.lora.rank is 8 but the adapter it starts from (DPOTrainingJob round0's " \
               "output, pvc://dpo-data/models/round0/final) has rank 4" in message
        assert kube.job(namespace, "wrongrank-train") is None and kube.job(namespace, "wrongrank-datacheck") is None

        # the next round: rank, alpha and targets are the saved adapter's; the data check runs for real
        second = spec(model={**LOCAL["model"], "adapter": ADAPTER},
                      dataset={"location": LOCAL["dataset"]["location"]},
                      deployOnCompletion={"port": port, "servedModelName": "round1", "readinessTimeoutSeconds": 120})
        kube.create("DPOTrainingJob", namespace, "round1", second)
        done = kube.wait_phase("DPOTrainingJob", namespace, "round1", "Succeeded", timeout=240)
        assert done["status"]["dataCheck"]["passed"] is True
        trainer = kube.job(namespace, "round1-train")["spec"]["template"]["spec"]["containers"][0]
        assert "--adapter=/mnt/pvc/dpo-data/models/round0/final" in trainer["command"]
        pod_spec = json.loads(next(e["value"] for e in trainer["env"] if e["name"] == "DPO_TRAINING_SPEC"))
        assert pod_spec["hyperparameters"]["lora"] == {"dropout": 0.0}  # only what the user set: the rest is the adapter's
        final = executor.pvc_dir("dpo-data") / "models/round1/final"
        saved = json.loads((final / "adapter_config.json").read_text())
        assert (saved["r"], saved["lora_alpha"], sorted(saved["target_modules"])) == (4, 8, ["q_proj", "v_proj"])
        summary = json.loads((executor.pvc_dir("dpo-data") / "models/round1/summary.json").read_text())
        assert summary["reference"].startswith("the starting policy") and summary["referenceLoads"] == 0

        # served as base + this job's adapter (the whole adapter: nothing of round0's is mounted)
        ready = kube.wait_phase("ModelDeployment", namespace, "round1", "Ready", timeout=180)
        assert ready["status"]["servedModelName"] == "round1"
        container = kube.deployment(namespace, "round1")["spec"]["template"]["spec"]["containers"][0]
        assert {m["mountPath"]: m.get("subPath") for m in container["volumeMounts"]}["/loras/round1"] == \
            "models/round1/final"
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60, json={
            "model": "round1", "messages": [{"role": "user", "content": "Q1: is 5 fine?"}], "max_tokens": 4,
            "temperature": 0})
        assert answer.status_code == 200 and answer.json()["model"] == "round1"
