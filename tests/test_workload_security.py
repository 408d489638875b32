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
from dpo_operator.kube.pods import ServiceAccountNotAllowed
from dpo_operator.serving import nim
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
        "nim": nim.deployment_manifest(body("ModelDeployment"), serve, served, "nim:1", "rev")["spec"]["template"]["spec"],
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
    for kind in ("dpocollections", "dpotrainingjobs", "modeldeployments"):
        assert ("dpo.ai", f"{kind}/finalizers", "update") in granted
        assert ("dpo.ai", kind, "update") not in granted and ("dpo.ai", kind, "delete") not in granted
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
