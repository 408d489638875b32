"""Workload pods meet the "restricted" Pod Security Standard by default and mount no service account token; a spec
may name only the service accounts the operator allows; RBAC grants what is used and reads Secrets per namespace."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dpo_operator.api.collection import DPOCollectionSpec
from dpo_operator.api.common import HubLocation, PvcLocation, StorageLocation
from dpo_operator.api.deployment import ModelDeploymentSpec
from dpo_operator.api.training import DPOTrainingJobSpec
from dpo_operator.config import OperatorConfig
from dpo_operator.handlers import collection, training_customizer, training_local
from dpo_operator.kube.pods import (
    EnvNotAllowed,
    PodSecurityNotAllowed,
    SchedulingNotAllowed,
    ServiceAccountNotAllowed,
)
from dpo_operator.render import nim
from dpo_operator.serving.model import ServedModel
from tests.kubehelpers import Kube, wait_for
from tests.pss import violations

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "manifests/examples/pipeline.yaml").read_text()) if d}
CUSTOMIZER = yaml.safe_load((ROOT / "manifests/examples/customizer-training.yaml").read_text())


def body(kind: str) -> dict[str, Any]:
    return {"apiVersion": "dpo.ai/v1alpha1", "kind": kind,
            "metadata": {"name": "x", "namespace": "team-a", "uid": "0000-1111", "generation": 1}}


def pod_specs(template: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The pod spec of everything the operator launches, from the examples (with ``template`` merged in)."""
    config = OperatorConfig.from_env()
    extra = {"template": {**EXAMPLES["DPOCollection"]["spec"].get("template", {}), **(template or {})}}
    collect = DPOCollectionSpec.model_validate({**EXAMPLES["DPOCollection"]["spec"], **extra})
    local = {**EXAMPLES["DPOTrainingJob"]["spec"], **extra,
             "local": {"numNodes": 2, "gpusPerNode": 8, "output": {"claimName": "dpo-data", "path": "/m"}}}
    train = DPOTrainingJobSpec.model_validate(local)
    remote = DPOTrainingJobSpec.model_validate({**CUSTOMIZER["spec"], **extra})
    serve = ModelDeploymentSpec.model_validate({**EXAMPLES["ModelDeployment"]["spec"],
                                                "template": {**EXAMPLES["ModelDeployment"]["spec"]["template"],
                                                             **(template or {})}})
    dataset = StorageLocation(pvc=PvcLocation(claim_name="dpo-data", path="/ds"))
    served = ServedModel(served_name="t", base_name="meta/llama", weights=dataset.pvc)
    return {
        "collector": collection.job_manifest(body("DPOCollection"), collect, config)["spec"]["template"]["spec"],
        "trainer": training_local.job_manifest(body("DPOTrainingJob"), train, dataset, config)["spec"]["template"]["spec"],
        "uploader": training_customizer.upload_manifest(
            body("DPOTrainingJob"), remote, StorageLocation(hub=HubLocation(endpoint="http://h/v1/hf", repo_id="a/b")),
            "dpo/x", config)["spec"]["template"]["spec"],
        "nim": nim.deployment_manifest(body("ModelDeployment"), serve, served, config, "rev")["spec"]["template"]["spec"],
    }


def test_every_workload_pod_meets_the_restricted_profile_and_mounts_no_token() -> None:
    for name, pod in pod_specs().items():
        assert violations(pod) == [], name
        assert pod["automountServiceAccountToken"] is False, name
        assert "serviceAccountName" not in pod
    assert pod_specs()["nim"]["securityContext"]["runAsUser"] == 1000  # what NIM images expect
    assert pod_specs()["collector"]["securityContext"]["runAsUser"] == 65532  # docker/workload.Dockerfile's user


def test_the_checker_catches_what_the_profile_forbids() -> None:
    root = {"securityContext": {"runAsUser": 0}, "containers": [{"name": "c", "image": "x", "securityContext": {
        "privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}}], "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}
    found = " ".join(violations(root))
    for control in ("privileged", "hostPath", "allowPrivilegeEscalation", "drop ALL", "SYS_ADMIN", "runAsNonRoot",
                    "runAsUser=0", "seccompProfile"):
        assert control in found


def test_security_contexts_can_be_overridden() -> None:
    custom = {"runAsNonRoot": True, "runAsUser": 4242, "seccompProfile": {"type": "RuntimeDefault"}}
    container = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                 "readOnlyRootFilesystem": True}
    for pod in pod_specs({"securityContext": custom, "containerSecurityContext": container}).values():
        assert pod["securityContext"] == custom and pod["containers"][0]["securityContext"] == container
        assert violations(pod) == []


def test_service_accounts_are_refused_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ServiceAccountNotAllowed, match="workloads.allowedServiceAccounts"):
        pod_specs({"serviceAccountName": "cluster-admin-sa"})
    pod_specs({"serviceAccountName": "default"})  # the namespace's default account is always fine
    monkeypatch.setenv("DPO_ALLOWED_SERVICE_ACCOUNTS", "trainer, puller")
    assert {p["serviceAccountName"] for p in pod_specs({"serviceAccountName": "trainer"}).values()} == {"trainer"}


# what the audit's Job asked for: root, privileged, SYS_ADMIN, onto the control plane
ROOT_POD = {"securityContext": {"runAsUser": 0, "runAsNonRoot": False},
            "containerSecurityContext": {"privileged": True, "runAsUser": 0, "allowPrivilegeEscalation": True,
                                         "capabilities": {"add": ["SYS_ADMIN"]}}}
CONTROL_PLANE = {"tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists",
                                  "effect": "NoSchedule"}],
                 "nodeSelector": {"node-role.kubernetes.io/control-plane": ""}}


def test_privileged_overrides_are_refused_for_every_workload() -> None:
    with pytest.raises(PodSecurityNotAllowed) as refused:
        pod_specs(ROOT_POD)
    message = str(refused.value)
    for control in ("privileged", "SYS_ADMIN", "runAsUser=0", "allowPrivilegeEscalation", "workloads.podSecurityLevel"):
        assert control in message
    for template in ({"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "Unconfined"}}},
                     {"containerSecurityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                                   "runAsNonRoot": False}}):
        with pytest.raises(PodSecurityNotAllowed):
            pod_specs(template)
    for name in ("collector", "trainer", "uploader", "nim"):  # each builder refuses, not only the first
        with pytest.raises(PodSecurityNotAllowed):
            only(name, ROOT_POD)


def only(name: str, template: dict[str, Any]) -> dict[str, Any]:
    """One workload's pod spec with ``template`` merged in (the others' builders may refuse it too)."""
    try:
        return pod_specs(template)[name]
    except PodSecurityNotAllowed:
        if name == "collector":
            raise
    spec = DPOTrainingJobSpec.model_validate({**CUSTOMIZER["spec"], "template": template})
    if name == "uploader":
        return training_customizer.upload_manifest(
            body("DPOTrainingJob"), spec, StorageLocation(hub=HubLocation(endpoint="http://h/v1/hf", repo_id="a/b")),
            "dpo/x", OperatorConfig.from_env())["spec"]["template"]["spec"]
    if name == "nim":
        serve = ModelDeploymentSpec.model_validate({**EXAMPLES["ModelDeployment"]["spec"], "template": template})
        served = ServedModel(served_name="t", base_name="meta/llama", weights=PvcLocation(claim_name="d", path="/m"))
        return nim.deployment_manifest(body("ModelDeployment"), serve, served, OperatorConfig.from_env(), "rev")["spec"]["template"]["spec"]
    local = {**EXAMPLES["DPOTrainingJob"]["spec"], "template": template,
             "local": {"output": {"claimName": "dpo-data", "path": "/m"}}}
    return training_local.job_manifest(body("DPOTrainingJob"), DPOTrainingJobSpec.model_validate(local),
                                       StorageLocation(pvc=PvcLocation(claim_name="d", path="/ds")),
                                       OperatorConfig.from_env())["spec"]["template"]["spec"]


def test_the_admin_chooses_the_level(monkeypatch: pytest.MonkeyPatch) -> None:
    baseline_ok = {"securityContext": {"runAsUser": 0}, "containerSecurityContext": {"capabilities": {"add": ["CHOWN"]}}}
    with pytest.raises(PodSecurityNotAllowed):
        pod_specs(baseline_ok)
    monkeypatch.setenv("DPO_POD_SECURITY_LEVEL", "baseline")  # root allowed, privileged and SYS_ADMIN still not
    assert pod_specs(baseline_ok)["trainer"]["securityContext"] == {"runAsUser": 0}
    with pytest.raises(PodSecurityNotAllowed, match="privileged"):
        pod_specs(ROOT_POD)
    monkeypatch.setenv("DPO_POD_SECURITY_LEVEL", "privileged")
    assert pod_specs(ROOT_POD)["collector"]["containers"][0]["securityContext"]["privileged"] is True


def test_tolerations_and_node_selectors_come_from_the_allow_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SchedulingNotAllowed) as refused:
        pod_specs(CONTROL_PLANE)
    assert "node-role.kubernetes.io/control-plane" in str(refused.value)
    assert "workloads.allowedTolerations" in str(refused.value)
    with pytest.raises(SchedulingNotAllowed, match="any taint"):  # a key-less toleration tolerates every taint
        pod_specs({"tolerations": [{"operator": "Exists"}]})
    gpu = {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
           "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}
    assert pod_specs(gpu)["trainer"]["tolerations"] == gpu["tolerations"]  # harmless by default
    monkeypatch.setenv("DPO_ALLOWED_NODE_SELECTORS", "pool=gpu")
    monkeypatch.setenv("DPO_ALLOWED_TOLERATIONS", "")
    assert pod_specs({"nodeSelector": {"pool": "gpu"}})["collector"]["nodeSelector"] == {"pool": "gpu"}
    for refused_template in ({"nodeSelector": {"pool": "system"}}, gpu):
        with pytest.raises(SchedulingNotAllowed):
            pod_specs(refused_template)


def test_template_env_cannot_replace_what_the_operator_sets() -> None:
    with pytest.raises(EnvNotAllowed, match="DPO_COLLECTION_SPEC"):
        pod_specs({"env": [{"name": "DPO_COLLECTION_SPEC", "value": "{}"}]})


@pytest.mark.e2e
def test_a_privileged_template_fails_the_resource_before_any_pod(kube: Kube, namespace: str, operator: None) -> None:
    from tests.test_collection_e2e import SPEC

    kube.create("DPOCollection", namespace, "root", {**SPEC, "template": {**SPEC["template"], **ROOT_POD}})
    kube.create("DPOCollection", namespace, "cp", {**SPEC, "template": {**SPEC["template"], **CONTROL_PLANE}})
    for name, expected in (("root", "PodSecurityNotAllowed"), ("cp", "SchedulingNotAllowed")):
        failed = kube.wait_phase("DPOCollection", namespace, name, "Failed")
        condition = {c["type"]: c for c in failed["status"]["conditions"]}["Failed"]
        assert condition["reason"] == expected, condition
    assert "privileged" in kube.get("DPOCollection", namespace, "root")["status"]["message"]
    assert kube.jobs(namespace) == []


@pytest.mark.e2e
def test_a_forbidden_service_account_fails_the_resource(kube: Kube, namespace: str, operator: None) -> None:
    from tests.test_collection_e2e import SPEC

    kube.create("DPOCollection", namespace, "sa", {**SPEC, "template": {"serviceAccountName": "deployer"}})
    failed = kube.wait_phase("DPOCollection", namespace, "sa", "Failed")
    condition = {c["type"]: c for c in failed["status"]["conditions"]}["Failed"]
    assert condition["reason"] == "ServiceAccountNotAllowed" and "'deployer'" in condition["message"]
    assert kube.jobs(namespace) == []
    kube.create("DPOCollection", namespace, "ok", SPEC)
    job = wait_for(lambda: kube.job(namespace, "ok-collect"), what="job")
    assert violations(job["spec"]["template"]["spec"]) == []


# --------------------------------------------------------------------------- chart

sys.path.insert(0, str(ROOT / "scripts"))
render_manifests = pytest.importorskip("render_manifests")


def grants(objects: list[dict[str, Any]], kinds: tuple[str, ...] = ("ClusterRole", "Role")) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for role in objects if role["kind"] in kinds for rule in role["rules"]
            for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]}


def test_rbac_is_what_the_operator_uses() -> None:
    pytest.importorskip("helm_python")
    objects = render_manifests.render_chart()
    work = next(o for o in objects if o["kind"] == "ClusterRole" and o["metadata"]["name"] == "dpo-operator")
    granted = grants([work])
    for kind in ("dpocollections", "dpotrainingjobs", "modeldeployments", "dpoevaluations", "dpoloops"):
        assert ("dpo.ai", f"{kind}/finalizers", "update") in granted
        assert ("dpo.ai", kind, "update") not in granted
        # only the promotion gate deletes one of our kinds: the candidate ModelDeployments it created
        assert (("dpo.ai", kind, "delete") in granted) == (kind == "modeldeployments")
    assert ("batch", "jobs", "delete") not in granted and ("", "services", "list") not in granted
    assert ("apps", "deployments", "patch") not in granted and ("", "pods", "get") not in granted
    assert not any(resource == "secrets" for _, resource, _ in granted)
    # Secrets: a ClusterRole that is bound in no namespace by default, per namespace when asked, cluster-wide on request
    bindings = [o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")
                and o["roleRef"]["name"] == "dpo-operator-secrets"]
    assert bindings == []
    scoped = render_manifests.render_chart({"watchNamespaces": ["team-a", "team-b"]})
    assert sorted(o["metadata"]["namespace"] for o in scoped if o["kind"] == "RoleBinding"
                  and o["roleRef"]["name"] == "dpo-operator-secrets") == ["team-a", "team-b"]
    wide = render_manifests.render_chart({"rbac": {"clusterWideSecrets": True}})
    assert [o["kind"] for o in wide if o.get("roleRef", {}).get("name") == "dpo-operator-secrets"] == ["ClusterRoleBinding"]


def test_allowed_service_accounts_reach_the_operator() -> None:
    pytest.importorskip("helm_python")
    objects = render_manifests.render_chart({"workloads": {"allowedServiceAccounts": ["trainer", "puller"]}})
    operator = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in operator["env"]}["DPO_ALLOWED_SERVICE_ACCOUNTS"] == "trainer,puller"


def test_the_workload_policy_reaches_the_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("helm_python")
    defaults = next(o for o in render_manifests.render_chart() if o["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in defaults["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DPO_POD_SECURITY_LEVEL"] == "restricted" and env["DPO_ALLOWED_TOLERATIONS"] == "nvidia.com/gpu"
    monkeypatch.delenv("DPO_ROLLOUT_CHECK_SECONDS")  # the test operators' quicker look (conftest): not the chart's
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = OperatorConfig.from_env()
    # the chart's defaults are the code's, but for the metrics port: the chart serves metrics, a local run does not
    assert config == OperatorConfig(workload_image=config.workload_image, nim_image=config.nim_image,
                                    probe_url_template=config.probe_url_template, metrics_port=8081,
                                    watch_nim_operator=False)  # the chart turns it on with nimOperator.enabled
    custom = render_manifests.render_chart({"workloads": {"podSecurityLevel": "baseline", "allowedTolerations": [],
                                                          "allowedNodeSelectors": ["pool=gpu", "zone"]}})
    env = {e["name"]: e.get("value") for e in
           next(o for o in custom if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name in ("DPO_POD_SECURITY_LEVEL", "DPO_ALLOWED_TOLERATIONS", "DPO_ALLOWED_NODE_SELECTORS"):
        monkeypatch.setenv(name, env[name])
    config = OperatorConfig.from_env()
    assert (config.pod_security_level, config.allowed_tolerations, config.allowed_node_selectors) == (
        "baseline", (), ("pool=gpu", "zone"))
