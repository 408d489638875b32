"""ModelDeployment against the (emulated) Kubernetes API with the real operator: a fake NIM behind the Service,
Deployment status played by the test (the Deployment controller's job), and the NeMo emulator for backend nemo."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.nemo import FakeNemo
from tests.fakes.nim import FakeNim
from tests.kubehelpers import Kube, status_of, wait_for
from tests.test_training_e2e import NO_CHECK, TRAIN_RESULT, TRAINING

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def probe_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator runs outside the cluster here: it reaches a Service's port on localhost (the fake NIM)."""
    monkeypatch.setenv("DPO_PROBE_URL_TEMPLATE", "http://127.0.0.1:{port}")


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj["status"]["conditions"]}


def explicit(port: int, **extra: Any) -> dict[str, Any]:
    return {"model": {"explicit": {"name": "meta/llama-3.2-1b-instruct", "pvc": {"claimName": "models", "path": "/llama"}}},
            "port": port, "readinessTimeoutSeconds": 60, **extra}


def test_trained_lora_adapter_is_served_and_ready(kube: Kube, namespace: str, operator: None) -> None:
    with FakeNim(models=["meta/llama-3.2-1b-instruct"], ready_after=1.0) as nim:
        spec = {**TRAINING, "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/ds"}}, **NO_CHECK},
                "hyperparameters": {**TRAINING["hyperparameters"], "finetuningType": "lora"},
                "deployOnCompletion": {"port": nim.port, "ngcApiKeySecretRef": {"name": "ngc", "key": "NGC_API_KEY"},
                                       "modelCachePvc": "nim-cache"}}
        kube.create("DPOTrainingJob", namespace, "dpo", spec)
        wait_for(lambda: kube.job(namespace, "dpo-train"), what="training job")
        kube.finish_job(namespace, "dpo-train", succeeded=True, message=json.dumps(TRAIN_RESULT))
        deployment = wait_for(lambda: kube.deployment(namespace, "dpo"), what="NIM Deployment")

        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
        assert env["NIM_PEFT_SOURCE"] == "/loras" and env["NIM_MODEL_NAME"] == "/mnt/models"
        assert env["NGC_API_KEY"] == {"secretKeyRef": {"name": "ngc", "key": "NGC_API_KEY"}}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        assert mounts["/loras/dpo"]["subPath"] == "models/dpo/final"  # the adapter's directory name is its model name
        assert mounts["/mnt/models"]["subPath"] == "tiny"
        assert container["readinessProbe"]["httpGet"]["path"] == "/v1/health/ready"
        assert container["startupProbe"]["httpGet"]["path"] == "/v1/health/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/v1/health/live"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
        assert volumes["nim-cache"]["persistentVolumeClaim"]["claimName"] == "nim-cache"
        assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        service = kube.core.read_namespaced_service("dpo", namespace)
        assert service.spec.ports[0].port == nim.port

        kube.roll_out(namespace, "dpo")
        progressing = kube.wait_status("ModelDeployment", namespace, "dpo", lambda s: "not listed" in s.get("message", ""),
                                       what="model not listed yet")
        assert progressing["status"]["phase"] == "Progressing"
        nim.models.append("dpo")  # the adapter appears in /v1/models
        ready = kube.wait_phase("ModelDeployment", namespace, "dpo", "Ready", timeout=30)
    status = ready["status"]
    assert status["endpoint"] == f"http://dpo.{namespace}.svc.cluster.local:{nim.port}"
    assert status["servedModelName"] == "dpo" and status["readyReplicas"] == 1
    assert status["servingRevision"] == status["revision"]
    assert conditions(ready)["Ready"]["status"] == "True" and conditions(ready)["Progressing"]["status"] == "False"


def test_never_ready_ends_in_a_terminal_readiness_timeout(kube: Kube, namespace: str, operator: None) -> None:
    with FakeNim(models=["meta/llama-3.2-1b-instruct"], ready_after=None) as nim:
        kube.create("ModelDeployment", namespace, "stuck", explicit(nim.port, readinessTimeoutSeconds=10))
        wait_for(lambda: kube.deployment(namespace, "stuck"), what="NIM Deployment")
        kube.roll_out(namespace, "stuck")
        failed = kube.wait_phase("ModelDeployment", namespace, "stuck", "Failed", timeout=40)
        assert nim.health_checks > 0
    condition = conditions(failed)["Failed"]
    assert condition["reason"] == "ReadinessTimeout"
    assert "/v1/health/ready answered 503" in condition["message"] and "readinessTimeoutSeconds 10" in condition["message"]
    assert failed["status"]["rolloutStartTime"] <= failed["status"]["completionTime"]


def test_readiness_clock_survives_an_operator_restart(kube: Kube, namespace: str) -> None:
    """The timeout counts wall-clock time from the rollout start, kept in status: a restarted operator does not
    start the clock again."""
    kube.require_emulated()  # runs its own operator or kubelet stand-in
    from kopf.testing import KopfRunner

    args = ["run", "--standalone", "--namespace", namespace, "-m", "dpo_operator.handlers"]
    with KopfRunner(args, timeout=60):
        kube.create("ModelDeployment", namespace, "slow", explicit(18001, readinessTimeoutSeconds=10))
        started = kube.wait_phase("ModelDeployment", namespace, "slow", "Progressing")["status"]["rolloutStartTime"]
    time.sleep(10)  # the operator is down while the deadline passes
    with KopfRunner(args, timeout=60):
        failed = kube.wait_phase("ModelDeployment", namespace, "slow", "Failed", timeout=15)
    assert failed["status"]["rolloutStartTime"] == started
    assert conditions(failed)["Failed"]["reason"] == "ReadinessTimeout"
    assert len(kube.apps.list_namespaced_deployment(namespace).items) == 1


def test_unavailable_replicas_are_named_in_the_timeout(kube: Kube, namespace: str, operator: None) -> None:
    kube.create("ModelDeployment", namespace, "nogpu", explicit(18000, readinessTimeoutSeconds=10))
    wait_for(lambda: kube.deployment(namespace, "nogpu"), what="NIM Deployment")
    kube.roll_out(namespace, "nogpu", available=False)
    failed = kube.wait_phase("ModelDeployment", namespace, "nogpu", "Failed", timeout=40)
    assert "0/1 updated replicas available" in failed["status"]["message"]


def test_spec_update_rolls_out_a_new_revision_while_the_old_one_serves(kube: Kube, namespace: str, operator: None) -> None:
    with FakeNim(models=["meta/llama-3.2-1b-instruct"]) as nim:
        kube.create("ModelDeployment", namespace, "md", explicit(nim.port))
        wait_for(lambda: kube.deployment(namespace, "md"), what="NIM Deployment")
        kube.roll_out(namespace, "md")
        first = kube.wait_phase("ModelDeployment", namespace, "md", "Ready")
        old_revision = first["status"]["revision"]

        kube.patch_spec("ModelDeployment", namespace, "md", {"replicas": 2, "template": {"image": "nvcr.io/nim/x:2"}})
        updated = wait_for(lambda: (d := kube.deployment(namespace, "md")) and d["spec"]["replicas"] == 2 and d,
                           what="Deployment updated")
        assert updated["spec"]["template"]["spec"]["containers"][0]["image"] == "nvcr.io/nim/x:2"
        rolling = kube.wait_phase("ModelDeployment", namespace, "md", "Progressing")
        assert rolling["status"]["revision"] != old_revision
        assert rolling["status"]["servingRevision"] == old_revision  # the previous revision keeps serving
        assert rolling["status"]["endpoint"] == first["status"]["endpoint"]
        kube.roll_out(namespace, "md")
        ready = kube.wait_phase("ModelDeployment", namespace, "md", "Ready")
    assert ready["status"]["servingRevision"] == ready["status"]["revision"] != old_revision
    assert ready["status"]["readyReplicas"] == 2

    kube.delete("ModelDeployment", namespace, "md")
    wait_for(lambda: kube.deployment(namespace, "md") is None, what="Deployment garbage-collected")
    wait_for(lambda: not kube.core.list_namespaced_service(namespace).items, what="Service garbage-collected")


def test_waits_for_its_training_job_and_rejects_a_failed_one(kube: Kube, namespace: str, operator: None) -> None:
    kube.create("ModelDeployment", namespace, "later", {"model": {"trainingJobRef": {"name": "absent"}}})
    pending = kube.wait_phase("ModelDeployment", namespace, "later", "Pending")
    assert conditions(pending)["Progressing"]["reason"] == "WaitingForModel"
    assert kube.deployment(namespace, "later") is None

    kube.create("DPOTrainingJob", namespace, "broken", {**TRAINING, "local": {"gpusPerNode": 1}})  # no output: invalid
    kube.wait_phase("DPOTrainingJob", namespace, "broken", "Failed")
    kube.create("ModelDeployment", namespace, "doomed", {"model": {"trainingJobRef": {"name": "broken"}}})
    failed = kube.wait_phase("ModelDeployment", namespace, "doomed", "Failed")
    assert conditions(failed)["Failed"]["reason"] == "ModelUnavailable"
    assert "DPOTrainingJob broken ended Failed" in failed["status"]["message"]


def test_nim_builtin_model_needs_no_weights(kube: Kube, namespace: str, operator: None) -> None:
    kube.create("ModelDeployment", namespace, "stock", {"model": {"explicit": {"name": "meta/llama-3.1-8b-instruct"}},
                                                        "template": {"image": "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.8"}})
    deployment = wait_for(lambda: kube.deployment(namespace, "stock"), what="NIM Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NIM_SERVED_MODEL_NAME"] == "meta/llama-3.1-8b-instruct" and "NIM_MODEL_NAME" not in env
    assert container["image"] == "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.8"


@pytest.fixture()
def nemo() -> Iterator[FakeNemo]:
    with FakeNemo() as fake:
        yield fake


def test_nemo_backend_deploys_replaces_and_deletes(kube: Kube, namespace: str, operator: None, nemo: FakeNemo) -> None:
    spec = {"backend": "nemo", "model": {"explicit": {"name": "team-a/dpo-model@v1"}},
            "nemo": {"url": nemo.url, "namespace": "team-a", "imageTag": "1.8"}, "readinessTimeoutSeconds": 60}
    kube.create("ModelDeployment", namespace, "remote", spec)
    ready = kube.wait_phase("ModelDeployment", namespace, "remote", "Ready", timeout=30)
    first = ready["status"]["remoteDeployment"]
    assert list(nemo.deployments) == [f"team-a/{first}"]
    config = nemo.configs[f"team-a/{first}"]
    assert config["model"] == "team-a/dpo-model@v1" and config["nim_deployment"]["image_tag"] == "1.8"
    assert ready["status"]["endpoint"] == f"{nemo.url}/nim/team-a/{first}"
    assert "serves 'team-a/dpo-model@v1'" in ready["status"]["message"]  # listed in the NIM's /v1/models

    kube.patch_spec("ModelDeployment", namespace, "remote", {"nemo": {"imageTag": "1.9"}})
    wait_for(lambda: len(nemo.deployments) == 2 or status_of(kube.get("ModelDeployment", namespace, "remote"))
             .get("remoteDeployment") != first, what="a second remote deployment")
    replaced = kube.wait_status("ModelDeployment", namespace, "remote", lambda s: s.get("remoteDeployment")
                                not in (None, first) and s.get("phase") == "Ready", timeout=30, what="replaced")
    second = replaced["status"]["remoteDeployment"]
    assert list(nemo.deployments) == [f"team-a/{second}"]  # the old one went only once the new one was ready

    kube.delete("ModelDeployment", namespace, "remote")
    wait_for(lambda: not kube.exists("ModelDeployment", namespace, "remote"), what="deletion")
    assert nemo.deployments == {} and nemo.configs == {}


def test_nemo_deployment_failure_and_cancellation_are_terminal(kube: Kube, namespace: str, operator: None,
                                                               nemo: FakeNemo) -> None:
    nemo.deployment_script = ["pending", "failed"]
    spec = {"backend": "nemo", "model": {"explicit": {"name": "team-a/m@v1"}}, "nemo": {"url": nemo.url}}
    kube.create("ModelDeployment", namespace, "bad", spec)
    failed = kube.wait_phase("ModelDeployment", namespace, "bad", "Failed", timeout=30)
    assert conditions(failed)["Failed"]["reason"] == "DeploymentFailed"
    nemo.deployment_script = ["pending", "cancelled"]
    kube.create("ModelDeployment", namespace, "stopped", spec)
    cancelled = kube.wait_phase("ModelDeployment", namespace, "stopped", "Failed", timeout=30)
    assert conditions(cancelled)["Failed"]["reason"] == "DeploymentCancelled"


def customizer_training(nemo: FakeNemo, finetuning: str) -> dict[str, Any]:
    nemo.repos["team-a/pairs"] = {"training/training_file.jsonl": b'{"prompt": "p"}\n'}
    return {"backend": "customizer", "model": {"name": "meta/llama-3.2-1b-instruct@v1.0.0+A100"},
            "dataset": {"location": {"hub": {"endpoint": f"{nemo.url}/v1/hf", "repoId": "team-a/pairs"}}},
            "hyperparameters": {"finetuningType": finetuning},
            "customizer": {"entityStoreUrl": nemo.url, "datastoreUrl": nemo.url, "namespace": "team-a",
                           "pollIntervalSeconds": 1},
            "deployOnCompletion": {"backend": "nemo", "readinessTimeoutSeconds": 60,
                                   "nemo": {"url": nemo.url, "namespace": "team-a"}}}


def test_a_customizer_lora_adapter_is_served_by_a_base_model_nim(kube: Kube, namespace: str, operator: None,
                                                                 nemo: FakeNemo) -> None:
    nemo.peft_refresh_polls = 1  # the NIM lists a new adapter only at its next refresh
    kube.create("DPOTrainingJob", namespace, "tuned", customizer_training(nemo, "lora"))
    trained = kube.wait_phase("DPOTrainingJob", namespace, "tuned", "Succeeded", timeout=40)
    adapter = trained["status"]["outputModel"]
    ready = kube.wait_phase("ModelDeployment", namespace, "tuned", "Ready", timeout=30)
    target = ready["status"]["remoteDeployment"]
    # the first listing (before the NIM's PEFT refresh) lacked the adapter: Ready waited for a second one
    assert nemo.model_listings[f"team-a/{target}"] >= 2
    assert nemo.configs[f"team-a/{target}"]["model"] == "meta/llama-3.2-1b-instruct"  # the base model, not the adapter
    assert ready["status"]["servedModelName"] == adapter and f"serves '{adapter}'" in ready["status"]["message"]
    kube.delete("ModelDeployment", namespace, "tuned")
    wait_for(lambda: not kube.exists("ModelDeployment", namespace, "tuned"), what="deletion")
    assert nemo.deployments == {}  # ours: deleted with the resource


def test_a_running_base_model_nim_is_reused_and_left_alone(kube: Kube, namespace: str, operator: None,
                                                           nemo: FakeNemo) -> None:
    nemo.add_deployment("team-a", "llama-base", "meta/llama-3.2-1b-instruct")
    nemo.add_deployment("team-a", "other-model", "meta/llama-3.1-8b-instruct")
    kube.create("DPOTrainingJob", namespace, "reuse", customizer_training(nemo, "lora"))
    ready = kube.wait_phase("ModelDeployment", namespace, "reuse", "Ready", timeout=60)
    assert ready["status"]["remoteDeployment"] == "llama-base"
    assert ready["status"]["endpoint"] == f"{nemo.url}/nim/team-a/llama-base"
    assert sorted(nemo.deployments) == ["team-a/llama-base", "team-a/other-model"]  # nothing new deployed
    kube.delete("ModelDeployment", namespace, "reuse")
    wait_for(lambda: not kube.exists("ModelDeployment", namespace, "reuse"), what="deletion")
    assert "team-a/llama-base" in nemo.deployments  # not ours: never deleted


def test_an_all_weights_customizer_model_is_deployed_itself(kube: Kube, namespace: str, operator: None,
                                                            nemo: FakeNemo) -> None:
    kube.create("DPOTrainingJob", namespace, "full", customizer_training(nemo, "all_weights"))
    ready = kube.wait_phase("ModelDeployment", namespace, "full", "Ready", timeout=60)
    model = kube.get("DPOTrainingJob", namespace, "full")["status"]["outputModel"]
    assert nemo.configs[f"team-a/{ready['status']['remoteDeployment']}"]["model"] == model
    assert ready["status"]["servedModelName"] == model
