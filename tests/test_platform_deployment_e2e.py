"""ModelDeployment, backend nemo with nemo.apiVersion v2, against the emulated cluster with the real operator and the strict
NeMo platform fake (models service + inference gateway, every request and answer validated against NVIDIA's
OpenAPI document)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes
import pytest

from dpo_operator.kube.captured import captured_name
from dpo_operator.render.platform_models import deployment_name
from tests.fakes.platform_models import FakePlatformModels
from tests.kubehelpers import Kube, wait_for

pytestmark = pytest.mark.e2e
API_KEY = "platform-key-7781"


@pytest.fixture()
def platform() -> Iterator[FakePlatformModels]:
    with FakePlatformModels(api_key=API_KEY, workspaces=("default", "team-a")) as fake:
        for name in ("dpo-a", "dpo-b"):  # full-weights models, as a finished customization job registers them
            fake.add_model(f"team-a/{name}", fileset=f"team-a/{name}", finetuning_type="all_weights",
                           base_model="team-a/llama-3.2-1b-instruct")
        yield fake


def spec_for(platform: FakePlatformModels, model: str = "team-a/dpo-a", **nemo: Any) -> dict[str, Any]:
    return {"backend": "nemo", "model": {"explicit": {"name": model}}, "readinessTimeoutSeconds": 60,
            "startupTimeoutSeconds": 900, "template": {"nodeSelector": {"gpu": "h100"}},
            "nemo": {"url": platform.url, "apiVersion": "v2", "workspace": "team-a", "imageTag": "1.13.1", "gpu": 2,
                     "apiKeySecretRef": {"name": "platform", "key": "api-key"}, **nemo}}


@pytest.fixture()
def secret(kube: Kube, namespace: str, platform: FakePlatformModels) -> None:
    kube.usable_secret(namespace, "platform", {"api-key": API_KEY}, allowed_urls=platform.url)


def deleted_on_the_platform(platform: FakePlatformModels) -> bool:
    """Every version DELETED (the platform removes them for good after a grace period) or already gone."""
    return all(v["status"] == "DELETED" for versions in platform.deployments.values() for v in versions)


def reason(obj: dict[str, Any], condition: str) -> str:
    return {c["type"]: c for c in obj["status"]["conditions"]}[condition]["reason"]


def test_serves_through_the_gateway_switches_model_and_cleans_up(
        kube: Kube, namespace: str, operator: None, platform: FakePlatformModels, secret: None,
        tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from dpo_operator.embedded.model_server import LocalModel, ModelServer
    from dpo_operator.embedded.tiny_model import CHAT_TEMPLATE, build_tiny_model

    weights = build_tiny_model(tmp_path / "tiny", chat_template=CHAT_TEMPLATE)
    with ModelServer(LocalModel(str(weights), "team-a/dpo-a")) as nim:
        platform.backends["team-a/dpo-a"] = nim.root_url
        kube.create("ModelDeployment", namespace, "served", spec_for(platform))
        ready = kube.wait_phase("ModelDeployment", namespace, "served", "Ready", timeout=60)
        status = ready["status"]
        target = deployment_name(namespace, "served")
        assert status["remoteDeployment"] == target and status["servedModelName"] == "team-a/dpo-a"
        assert status["endpoint"] == f"{platform.url}/apis/inference-gateway/v2/workspaces/team-a/openai/-/v1"
        [config] = platform.configs.values()
        assert config["model_entity_id"] == "team-a/dpo-a" and config["engine"] == "nim"
        assert config["executor_config"]["image_tag"] == "1.13.1" and config["executor_config"]["gpu"] == 2
        assert config["executor_config"]["k8s_nim_operator_config"] == {
            "startup_probe_grace_seconds": 900, "node_selector": {"gpu": "h100"}}
        # a client calls the served model where status says, as DPOCollection and DPOEvaluation do
        answer = httpx.post(f"{status['endpoint']}/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                            json={"model": status["servedModelName"], "max_tokens": 3, "temperature": 0.0,
                                  "messages": [{"role": "user", "content": "Your move?"}]}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "team-a/dpo-a" and platform.served_chats == ["team-a/dpo-a"]

    # the promotion gate switches spec.model: a new version of the same deployment, the old one serving meanwhile
    platform.deployment_script = ["PENDING"]  # the new version stays PENDING until the test lets it go on
    kube.patch_spec("ModelDeployment", namespace, "served", {"model": {"explicit": {"name": "team-a/dpo-b"}}})
    rolling = kube.wait_status("ModelDeployment", namespace, "served", lambda s: s.get("phase") == "Progressing"
                               and "(version 2) is PENDING" in (s.get("message") or ""), timeout=30,
                               what="the new version pending")
    versions = platform.deployments[f"team-a/{target}"]
    assert [v["status"] for v in versions] == ["READY", "PENDING"] and "team-a/dpo-a" in platform.routed("team-a")
    # clients keep calling the old model where they did until the new one is Ready
    assert rolling["status"]["servedModelName"] == "team-a/dpo-a" and rolling["status"]["endpoint"] == status["endpoint"]
    platform.deployment_script = ["READY"]
    switched = kube.wait_status("ModelDeployment", namespace, "served", lambda s: s.get("phase") == "Ready"
                                and s.get("servedModelName") == "team-a/dpo-b", timeout=60, what="switched")
    assert switched["status"]["remoteDeployment"] == target
    wait_for(lambda: [v["entity_version"] for v in platform.deployments[f"team-a/{target}"]] == [2],
             timeout=60, what="the old version retired")
    assert platform.routed("team-a") == ["team-a/dpo-b"]
    wait_for(lambda: [c["model_entity_id"] for c in platform.configs.values()] == ["team-a/dpo-b"], timeout=60,
             what="the old config deleted")
    assert platform.calls_to("create_deployment") == 1 and platform.calls_to("update_deployment") == 1

    kube.delete("ModelDeployment", namespace, "served")
    wait_for(lambda: not kube.exists("ModelDeployment", namespace, "served"), timeout=60, what="deletion")
    assert deleted_on_the_platform(platform) and platform.configs == {}
    assert platform.calls_to("delete_deployment") >= 1 and platform.calls_to("delete_deployment_config") >= 1
    assert set(platform.models) == {("team-a", "dpo-a"), ("team-a", "dpo-b")}  # the entities are not ours: left alone


def test_transient_errors_are_retried(
        kube: Kube, namespace: str, operator: None, platform: FakePlatformModels, secret: None) -> None:
    platform.fail["create_deployment_config"] = [503, 500]
    platform.fail["create_deployment"] = [409]  # e.g. a concurrent create: read back, not a failure
    kube.create("ModelDeployment", namespace, "flaky", spec_for(platform))
    kube.wait_phase("ModelDeployment", namespace, "flaky", "Ready", timeout=60)
    assert platform.calls_to("create_deployment_config") >= 3


def test_a_refusal_or_an_error_fails_with_the_platform_message(
        kube: Kube, namespace: str, operator: None, platform: FakePlatformModels, secret: None) -> None:
    # a refusal persists, as a missing permission does: a decision lost to a status-write conflict is made again
    platform.fail["create_deployment_config"] = [403] * 20
    kube.create("ModelDeployment", namespace, "refused", spec_for(platform, model="team-a/dpo-b"))
    failed = kube.wait_phase("ModelDeployment", namespace, "refused", "Failed", timeout=60)
    assert reason(failed, "Failed") == "RemoteApiError" and "injected failure 403" in failed["status"]["message"]
    platform.fail["create_deployment_config"].clear()

    platform.deployment_script = ["PENDING", "ERROR"]
    kube.create("ModelDeployment", namespace, "broken", spec_for(platform, model="team-a/dpo-b"))
    broken = kube.wait_phase("ModelDeployment", namespace, "broken", "Failed", timeout=60)
    assert reason(broken, "Failed") == "DeploymentFailed" and "image pull failed" in broken["status"]["message"]

    kube.create("ModelDeployment", namespace, "unknown", spec_for(platform, model="team-a/never-trained"))
    unknown = kube.wait_phase("ModelDeployment", namespace, "unknown", "Failed", timeout=60)
    assert reason(unknown, "Failed") == "ModelUnavailable" and "team-a/never-trained" in unknown["status"]["message"]


def test_a_restarted_operator_adopts_its_deployment(kube: Kube, namespace: str, platform: FakePlatformModels,
                                                   secret: None) -> None:
    kube.require_emulated()  # runs its own operator
    from kopf.testing import KopfRunner

    args = ["run", "--standalone", "--namespace", namespace, "-m", "dpo_operator.handlers"]
    platform.deployment_script = ["PENDING"]
    with KopfRunner(args, timeout=60):
        kube.create("ModelDeployment", namespace, "adopted", spec_for(platform))
        kube.wait_status("ModelDeployment", namespace, "adopted", lambda s: "is PENDING" in (s.get("message") or ""),
                         timeout=30, what="pending on the platform")
    platform.deployment_script = ["READY"]
    with KopfRunner(args, timeout=60):
        kube.wait_phase("ModelDeployment", namespace, "adopted", "Ready", timeout=30)
    assert platform.calls_to("create_deployment") == 1 and len(platform.deployments) == 1  # adopted by name
    assert len(platform.configs) == 1


def test_the_key_stays_secret_and_deletion_uses_the_captured_one(
        kube: Kube, namespace: str, operator: None, platform: FakePlatformModels, secret: None) -> None:
    kube.create("ModelDeployment", namespace, "quiet", spec_for(platform))
    ready = kube.wait_phase("ModelDeployment", namespace, "quiet", "Ready", timeout=60)
    events = kube.core.list_namespaced_event(namespace)
    assert API_KEY not in str(ready) and API_KEY not in str(kube.to_dict(events))
    captured = kube.to_dict(kube.core.read_namespaced_secret(captured_name("quiet"), namespace))
    assert "dpo.ai/usable" not in (captured["metadata"].get("labels") or {})
    assert base64.b64decode(captured["data"]["url"]).decode() == platform.url

    platform.deleted_grace_passes = 10**6  # the platform keeps the DELETED deployment (its grace period)
    kube.core.delete_namespaced_secret("platform", namespace)  # the user's Secret is gone before the resource
    kube.delete("ModelDeployment", namespace, "quiet")
    wait_for(lambda: not kube.exists("ModelDeployment", namespace, "quiet"), timeout=60, what="deletion")
    assert deleted_on_the_platform(platform) and platform.configs == {}
    assert platform.calls_to("delete_deployment") >= 1

    # the same name again, while the platform still keeps the DELETED deployment: it is removed and made anew
    kube.usable_secret(namespace, "platform", {"api-key": API_KEY}, allowed_urls=platform.url)
    kube.create("ModelDeployment", namespace, "quiet", spec_for(platform))
    again = kube.wait_phase("ModelDeployment", namespace, "quiet", "Ready", timeout=60)
    [version] = platform.deployments[f"team-a/{again['status']['remoteDeployment']}"]
    assert version["entity_version"] == 1 and version["status"] == "READY"
    assert platform.calls_to("create_deployment") == 2


def test_weights_on_a_pvc_are_refused_at_admission(kube: Kube, namespace: str, platform: FakePlatformModels) -> None:
    spec = spec_for(platform)
    spec["model"]["explicit"]["loraAdapter"] = {"claimName": "adapters", "path": "/dpo"}
    with pytest.raises(kubernetes.client.ApiException) as refused:
        kube.create("ModelDeployment", namespace, "lora", spec)
    assert refused.value.status == 422 and "use backend kubernetes or nimOperator" in str(refused.value.body)
    assert platform.calls == []


def test_the_fake_refuses_what_the_platform_refuses(platform: FakePlatformModels) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    base = f"{platform.url}/apis/models/v2/workspaces/team-a"
    valid = {"name": "cfg-1", "engine": "nim", "model_spec": {"model_type": "llm"}, "executor_config": {"gpu": 1}}
    for bad in ({**valid, "name": "Bad--Name"}, {**valid, "engine": "triton"}, {**valid, "replicas": 2},
                {k: v for k, v in valid.items() if k != "executor_config"}):
        answer = httpx.post(f"{base}/deployment-configs", json=bad, headers=headers)
        assert answer.status_code == 422 and answer.json()["detail"][0]["loc"][0] == "body"
    assert len(platform.take_rejected()) == 4 and platform.configs == {}
    assert httpx.post(f"{base}/deployment-configs", json=valid, headers=headers).status_code == 201
    assert httpx.post(f"{base}/deployments", json={"name": "d1", "config": "cfg-1", "description": "x"},
                      headers=headers).status_code == 422  # deployments carry no description
    assert len(platform.take_rejected()) == 1
    assert httpx.get(f"{base}/deployments/d1", headers={}).status_code == 401


def test_a_lora_adapter_or_pvc_weights_are_refused_with_what_to_use_instead() -> None:
    from dpo_operator.api.common import PvcLocation
    from dpo_operator.handlers.deployment_platform import served_entity
    from dpo_operator.runtime.errors import InvalidSpec
    from dpo_operator.serving.model import ServedModel

    v1_adapter = ServedModel(served_name="team-a/dpo-lora", base_name="meta/llama-3.2-1b-instruct",
                             remote_model="team-a/dpo-lora", remote_base="meta/llama-3.2-1b-instruct")
    with pytest.raises(InvalidSpec, match="serve it with nemo.apiVersion v1, or with backend kubernetes"):
        served_entity(v1_adapter, "team-a")
    local = ServedModel(served_name="dpo", base_name="tiny", weights=PvcLocation(claim_name="m", path="/out"))
    with pytest.raises(InvalidSpec, match="use backend kubernetes or nimOperator"):
        served_entity(local, "team-a")
    trained = ServedModel(served_name="dpo", base_name="tiny", remote_model="team-b/dpo-full")
    assert served_entity(trained, "team-a") == ("team-b", "dpo-full")
    assert served_entity(ServedModel(served_name="x", base_name="x", remote_model="bare"), "team-a") == ("team-a", "bare")


def test_a_model_trained_on_the_platform_is_served_as_its_output_entity() -> None:
    from dpo_operator.handlers.deployment_platform import served_entity
    from dpo_operator.serving.model import from_training_job

    job = {"spec": {"backend": "customizer", "model": {"name": "team-a/llama-3.2-1b-instruct"},
                    "dataset": {"location": {"hub": {"endpoint": "http://hub:8000", "repoId": "team-a/pairs"}}},
                    "customizer": {"apiVersion": "v2", "platformUrl": "http://platform:8080", "workspace": "team-a"},
                    "hyperparameters": {"finetuningType": "all_weights"}},
           "status": {"phase": "Succeeded", "outputModel": "team-a/tictactoe-dpo"}}
    model = from_training_job(job, "tictactoe", None)
    assert served_entity(model, "default") == ("team-a", "tictactoe-dpo")


def test_a_model_trained_on_the_platform_is_deployed_there_on_completion(
        kube: Kube, namespace: str, operator: None, tmp_path: Path) -> None:
    """Train on v2, then serve the output entity the job registered, on the same (fake) platform."""
    from dpo_operator.embedded.executor import LocalExecutor
    from tests.datasets import toy_dataset
    from tests.fakes.platform_models import FullPlatform
    from tests.test_platform_e2e import BASE
    from tests.test_platform_e2e import spec_for as training_spec

    kube.require_emulated()  # the upload pod runs on the local kubelet stand-in
    with FullPlatform(api_key=API_KEY, workspaces=("default", "team-a")) as platform:
        platform.add_model(BASE)
        kube.claims(namespace, "dpo-data")
        local = LocalExecutor(kube.api, tmp_path, namespace)
        toy_dataset(local.pvc_dir("dpo-data") / "ds")
        kube.usable_secret(namespace, "platform", {"api-key": API_KEY}, allowed_urls=platform.url)
        spec = training_spec(platform)
        spec["deployOnCompletion"] = {"backend": "nemo", "readinessTimeoutSeconds": 60, "nemo": {
            "url": platform.url, "apiVersion": "v2", "workspace": "team-a",
            "apiKeySecretRef": {"name": "platform", "key": "api-key"}}}
        with local:
            kube.create("DPOTrainingJob", namespace, "trained", spec)
            done = kube.wait_phase("DPOTrainingJob", namespace, "trained", "Succeeded", timeout=90)
        output = done["status"]["outputModel"]
        assert tuple(output.split("/")) in platform.models  # registered by the job's last step
        served = kube.wait_phase("ModelDeployment", namespace, done["status"]["deploymentName"], "Ready", timeout=60)
        assert served["status"]["servedModelName"] == output and platform.routed("team-a") == [output]
        [config] = platform.configs.values()
        assert config["model_entity_id"] == output
