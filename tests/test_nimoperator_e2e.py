"""ModelDeployment with ``backend: nimOperator`` against the emulated API server, which has the NVIDIA NIM Operator's
real CRDs installed (every NIMService and NIMCache we create is validated by their schema and CEL rules). The NIM
Operator's controller is played by embedded/nim_operator.py, its Deployment by the local executor (a local model
server with the NIM conventions); in the cache tests the test plays the NIMCache's caching Job."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.kubehelpers import Kube, conditions_of, reason_of, status_of, wait_for

pytestmark = pytest.mark.e2e
NIM = ("apps.nvidia.com", "v1alpha1")


@pytest.fixture(autouse=True)
def probe_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator runs outside the cluster here: it reaches a Service's port on localhost (the local server)."""
    monkeypatch.setenv("DPO_PROBE_URL_TEMPLATE", "http://127.0.0.1:{port}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nim_object(kube: Kube, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return kube.custom.get_namespaced_custom_object(*NIM, namespace, plural, name)
    except Exception:  # noqa: BLE001  (absent: None)
        return None


def env_of(service: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in service["spec"].get("env") or []}


def test_a_lora_adapter_is_served_by_a_base_model_nimservice_and_hot_loads_new_adapters(
        kube: Kube, namespace: str, operator: None, tmp_path: Path) -> None:
    kube.require_emulated()
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from dpo_operator.embedded.executor import LocalExecutor
    from dpo_operator.embedded.nim_operator import NimOperatorStandIn
    from dpo_operator.embedded.tiny_model import CHAT_TEMPLATE, build_tiny_model

    volume = tmp_path / "pvc" / "models"  # the local executor's directory for PVC "models"
    base = build_tiny_model(volume / "base", chat_template=CHAT_TEMPLATE)

    def adapter(name: str, seed: int) -> None:
        import torch

        torch.manual_seed(seed)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, target_modules=["q_proj"]))
        model.save_pretrained(volume / "loras" / name)

    adapter("tuned", 1)
    kube.claims(namespace, "models")
    port = free_port()
    spec = {"backend": "nimOperator", "port": port, "readinessTimeoutSeconds": 180,
            "model": {"explicit": {"name": "tiny", "pvc": {"claimName": "models", "path": "/base"},
                                   "loraAdapter": {"claimName": "models", "path": "/loras/tuned"}}},
            "nimOperator": {"peftRefreshIntervalSeconds": 1}}
    with NimOperatorStandIn(kube.api, namespace, poll_seconds=0.1), \
            LocalExecutor(kube.api, tmp_path, namespace, poll_seconds=0.1, serve_deployments=True):
        kube.create("ModelDeployment", namespace, "md", spec)
        ready = kube.wait_phase("ModelDeployment", namespace, "md", "Ready", timeout=120)
        service = nim_object(kube, "nimservices", namespace, "md")
        assert service is not None and service["status"]["state"] == "Ready"
        assert service["metadata"]["ownerReferences"][0]["uid"] == ready["metadata"]["uid"]
        env = env_of(service)
        # one base-model NIM; the adapter comes from its PEFT source on the same claim, under its directory name
        assert env["NIM_MODEL_NAME"] == "/model-store/base" and env["NIM_PEFT_SOURCE"] == "/model-store/loras"
        assert env["NIM_SERVED_MODEL_NAME"] == "tiny" and env["NIM_PEFT_REFRESH_INTERVAL"] == "1"
        assert service["spec"]["storage"]["pvc"] == {"name": "models"} and service["spec"]["storage"]["readOnly"]
        assert service["spec"]["startupProbe"]["probe"]["failureThreshold"] == 360  # 3600 s for large models
        status = ready["status"]
        assert status["servedModelName"] == "tuned" and status["readyReplicas"] == 1
        assert status["endpoint"] == f"http://md.{namespace}.svc.cluster.local:{port}"
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30, json={
            "model": "tuned", "messages": [{"role": "user", "content": "Move?"}], "max_tokens": 2}).json()
        assert answer["model"] == "tuned" and isinstance(answer["choices"][0]["message"]["content"], str)

        # a new adapter in the PEFT source is served without a new rollout (NIM_PEFT_REFRESH_INTERVAL)
        deployment = kube.deployment(namespace, "md")
        assert deployment is not None
        adapter("tuned-v2", 2)
        wait_for(lambda: "tuned-v2" in [m["id"] for m in httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"]],
                 timeout=30, what="the new adapter listed")
        assert kube.deployment(namespace, "md")["metadata"]["annotations"] == deployment["metadata"]["annotations"]

        # a spec change is a new revision: the NIMService's spec is replaced and rolls out to Ready again
        kube.patch_spec("ModelDeployment", namespace, "md", {"servedModelName": "ignored", "sharedMemorySize": "1Gi"})
        changed = kube.wait_status("ModelDeployment", namespace, "md",
                                   lambda s: s.get("phase") == "Ready" and s["revision"] != status["revision"],
                                   what="the new revision Ready", timeout=120)
        assert changed["status"]["servingRevision"] == changed["status"]["revision"]
        assert changed["status"]["servedModelName"] == "tuned"  # the NIM names an adapter after its directory
        replaced = nim_object(kube, "nimservices", namespace, "md")
        assert replaced is not None and replaced["spec"]["storage"]["sharedMemorySizeLimit"] == "1Gi"

        kube.delete("ModelDeployment", namespace, "md")
        wait_for(lambda: nim_object(kube, "nimservices", namespace, "md") is None, what="NIMService garbage-collected")
        wait_for(lambda: kube.deployment(namespace, "md") is None, what="its Deployment garbage-collected")


def test_a_hub_model_is_cached_by_a_nimcache_and_a_failed_cache_fails_the_deployment(
        kube: Kube, namespace: str, operator: None) -> None:
    spec = {"backend": "nimOperator", "model": {"explicit": {"name": "meta/llama-3.1-8b-instruct"}},
            "ngcApiKeySecretRef": {"name": "ngc", "key": "NGC_API_KEY"},
            "template": {"image": "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.8.4"},
            "nimOperator": {"cache": {"size": "80Gi", "profiles": ["tensorrt_llm-h100-bf16-tp1"]},
                            "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}}
    kube.create("ModelDeployment", namespace, "hub", spec)
    cache = wait_for(lambda: nim_object(kube, "nimcaches", namespace, "hub-cache"), what="NIMCache")
    assert cache["spec"]["source"]["ngc"] == {"authSecret": "ngc", "modelPuller": spec["template"]["image"],
                                              "pullSecret": "ngc-secret",
                                              "model": {"profiles": ["tensorrt_llm-h100-bf16-tp1"]}}
    assert cache["spec"]["storage"]["pvc"] == {"create": True, "size": "80Gi", "volumeAccessMode": "ReadWriteOnce"}
    service = wait_for(lambda: nim_object(kube, "nimservices", namespace, "hub"), what="NIMService")
    assert service["spec"]["storage"]["nimCache"] == {"name": "hub-cache"}
    assert service["spec"]["scale"] == {"enabled": True, "hpa": {"minReplicas": 1, "maxReplicas": 3}}
    assert "replicas" not in service["spec"]  # the NIM Operator's CEL rule: not with autoscaling
    assert service["spec"]["authSecret"] == "ngc"
    waiting = kube.wait_status("ModelDeployment", namespace, "hub", lambda s: "NIMCache" in s.get("message", ""))
    assert waiting["status"]["phase"] == "Progressing" and "hub-cache is Pending" in waiting["status"]["message"]

    kube.custom.patch_namespaced_custom_object_status(*NIM, namespace, "nimcaches", "hub-cache", {"status": {
        "state": "Failed", "conditions": [{"type": "NIM_CACHE_JOB_COMPLETED", "status": "False", "reason": "JobFailed",
                                           "message": "402 Payment Required from NGC",
                                           "lastTransitionTime": "2026-12-06T07:00:00Z"}]}})
    failed = kube.wait_phase("ModelDeployment", namespace, "hub", "Failed")
    assert reason_of(failed, "Failed") == "DeploymentFailed"
    assert "NIMCache hub-cache failed" in failed["status"]["message"] and "402" in failed["status"]["message"]


def test_a_nimservice_the_nim_operator_reports_failed_fails_the_deployment(
        kube: Kube, namespace: str, operator: None) -> None:
    kube.create("ModelDeployment", namespace, "bad", {"backend": "nimOperator",
                                                      "model": {"explicit": {"name": "meta/llama-3.2-1b-instruct"}}})
    wait_for(lambda: nim_object(kube, "nimservices", namespace, "bad"), what="NIMService")
    kube.custom.patch_namespaced_custom_object_status(*NIM, namespace, "nimservices", "bad", {"status": {
        "state": "Failed", "conditions": [{"type": "Failed", "status": "True", "reason": "DeploymentFailed",
                                           "message": "insufficient nvidia.com/gpu",
                                           "lastTransitionTime": "2026-12-06T07:00:00Z"}]}})
    failed = kube.wait_phase("ModelDeployment", namespace, "bad", "Failed")
    assert reason_of(failed, "Failed") == "DeploymentFailed"
    assert "NIMService bad failed: insufficient nvidia.com/gpu" in failed["status"]["message"]


@pytest.mark.parametrize(("extra", "named"), [
    ({"ngcApiKeySecretRef": {"name": "ngc", "key": "key"}}, "ngcApiKeySecretRef.key"),
    ({"nimOperator": {"autoscaling": {"minReplicas": 4, "maxReplicas": 2}}}, "nimOperator.autoscaling"),
    ({"nimOperator": {"cache": {"source": "huggingFace", "modelPuller": "nvcr.io/nim/x:1"}}},
     "nimOperator.cache.hfTokenSecretRef"),
    # passed through, then refused by the NIM Operator's own schema (a toleration's seconds must be an integer)
    ({"template": {"tolerations": [{"key": "gpu", "tolerationSeconds": "soon"}]}}, "tolerationSeconds"),
])
def test_specs_the_nim_operator_cannot_serve_end_in_invalid_spec(
        kube: Kube, namespace: str, operator: None, extra: dict[str, Any], named: str) -> None:
    spec = {"backend": "nimOperator", "model": {"explicit": {"name": "meta/llama-3.2-1b-instruct"}}, **extra}
    kube.create("ModelDeployment", namespace, "invalid", spec)
    failed = kube.wait_phase("ModelDeployment", namespace, "invalid", "Failed")
    assert reason_of(failed, "Failed") == "InvalidSpec", conditions_of(failed)
    assert named in status_of(failed)["message"]


def test_without_the_nim_operator_installed_the_failure_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """An API server that does not serve apps.nvidia.com (no NIM Operator CRDs): a clear, terminal reason."""
    import kubernetes

    from dpo_operator.api.deployment import ModelDeploymentSpec
    from dpo_operator.handlers import deployment_nimoperator
    from dpo_operator.kube import client
    from dpo_operator.kubeemu.cluster import EmbeddedCluster
    from dpo_operator.render import nimoperator
    from dpo_operator.runtime.errors import PermanentFailure
    from dpo_operator.serving.model import ServedModel

    with EmbeddedCluster() as bare:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(bare.kubeconfig), client_configuration=configuration)
        monkeypatch.setattr(client, "_client", kubernetes.client.ApiClient(configuration))
        client.core().create_namespace({"metadata": {"name": "team"}})
        spec = ModelDeploymentSpec.model_validate({"backend": "nimOperator", "model": {"explicit": {"name": "m"}}})
        owner = {"metadata": {"name": "md", "namespace": "team", "uid": "u-1"}}
        manifest = nimoperator.nim_service(owner, spec, ServedModel(served_name="m", base_name="m", nim_builtin=True),
                                           "nvcr.io/nim/m:1", "rev")
        with pytest.raises(PermanentFailure, match="install the NVIDIA NIM Operator") as raised:
            deployment_nimoperator.apply(deployment_nimoperator.NIMSERVICES, manifest)
    assert raised.value.reason == "NimOperatorNotInstalled"
