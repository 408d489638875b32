"""Install paths, offline: the Helm chart lints and renders (helm-python-sdk, no helm binary), every rendered object
and every manifest the operator itself creates validates strictly against Kubernetes' schemas, example CRs validate
against our CRDs, generated files are in sync, and the Argo CD health script gives the right verdicts (lupa)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from dpo_operator import crdgen
from dpo_operator.api import ALL_KINDS
from dpo_operator.kubeemu.schema_validation import ResourceSchema

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
helm = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")
import render_manifests  # noqa: E402

K8S_VERSION = "1.30"
NON_DEFAULT = {
    "image": {"repository": "registry.example/dpo-operator", "tag": "1.2.3", "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "watchNamespaces": ["team-a", "team-b"],
    "replicaCount": 2, "peering": {"enabled": True, "name": "dpo"},
    "serviceAccount": {"create": True, "name": "dpo-sa", "annotations": {"iam.example/role": "x"}},
    "nodeSelector": {"pool": "cpu"}, "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["cpu"]}]}]}}},
    "workloads": {"image": "registry.example/dpo-workload:1.2.3", "nimImage": "nvcr.io/nim/x:1"},
    "logLevel": "debug", "priorityClassName": "system-cluster-critical",
}
CUSTOM_KINDS = {"ClusterKopfPeering", "KopfPeering"}


def validate_builtin(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_chart_lints_without_errors() -> None:
    report = helm.lint(str(render_manifests.CHART))
    assert report["errors"] == [] and not [m for m in report["messages"] if m["severity"] > 1], report


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["defaults", "non-defaults"])
def test_rendered_objects_validate(values: dict[str, Any]) -> None:
    objects = render_manifests.render_chart(values)
    for obj in objects:
        if obj["kind"] not in CUSTOM_KINDS:
            validate_builtin(obj)
    deployment = by_kind(objects, "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    operator = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert operator["securityContext"]["readOnlyRootFilesystem"] is True
    assert operator["livenessProbe"]["httpGet"]["path"] == "/healthz"
    if not values:
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
        assert "--standalone" in operator["args"] and not any(a.startswith("--namespace") for a in operator["args"])
        assert {o["kind"] for o in objects} >= {"ClusterRole", "ClusterRoleBinding", "ServiceAccount"}
        assert not by_kind(objects, "Role")
    else:
        assert operator["image"] == "registry.example/dpo-operator:1.2.3"
        assert "--peering=dpo" in operator["args"] and "--namespace=team-a" in operator["args"]
        assert "--verbose" in operator["args"]
        assert {r["metadata"]["namespace"] for r in by_kind(objects, "Role")} == {"team-a", "team-b"}
        assert {p["metadata"]["namespace"] for p in by_kind(objects, "KopfPeering")} == {"team-a", "team-b"}
        assert pod["serviceAccountName"] == "dpo-sa" and pod["nodeSelector"] == {"pool": "cpu"}
        env = {e["name"]: e["value"] for e in operator["env"]}
        assert env["DPO_WORKLOAD_IMAGE"] == "registry.example/dpo-workload:1.2.3"
        # namespaced mode still needs the cluster-level discovery reads, but no cluster-wide work permissions
        # (the Secrets ClusterRole is bound per namespace, by RoleBindings)
        assert [c["metadata"]["name"] for c in by_kind(objects, "ClusterRole")] == ["dpo-operator-discovery",
                                                                                    "dpo-operator-secrets"]


def test_several_replicas_without_peering_are_refused() -> None:
    with pytest.raises(Exception, match="peering"):
        render_manifests.render_chart({"replicaCount": 2})


def test_rbac_grants_what_the_operator_does() -> None:
    rules = by_kind(render_manifests.render_chart(), "ClusterRole")
    granted = {(group, resource, verb) for role in rules for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    needed = [("dpo.ai", "dpotrainingjobs", "watch"), ("dpo.ai", "modeldeployments", "create"),
              ("dpo.ai", "dpocollections/status", "patch"), ("batch", "jobs", "create"), ("apps", "deployments", "update"),
              ("", "services", "create"), ("", "pods", "list"), ("", "secrets", "get"), ("", "events", "create"),
              ("apiextensions.k8s.io", "customresourcedefinitions", "watch")]
    assert [n for n in needed if n not in granted] == []
    assert ("", "secrets", "list") not in granted  # only the Secrets a spec names, by name


def test_kueue_workloads_are_granted_only_when_enabled() -> None:
    def workload_verbs(values: dict[str, Any]) -> set[str]:
        objects = render_manifests.render_chart(values)
        return {verb for role in by_kind(objects, "ClusterRole") + by_kind(objects, "Role") for rule in role["rules"]
                if "kueue.x-k8s.io" in rule["apiGroups"] and "workloads" in rule["resources"] for verb in rule["verbs"]}

    assert workload_verbs({}) == set()
    assert workload_verbs({"kueue": {"enabled": True}}) == {"get", "list", "patch"}  # read, and deactivate
    namespaced = render_manifests.render_chart({"kueue": {"enabled": True}, "watchNamespaces": ["team-a"]})
    assert any("kueue.x-k8s.io" in rule["apiGroups"] for role in by_kind(namespaced, "Role") for rule in role["rules"])
    operator = by_kind(render_manifests.render_chart({"kueue": {"queueCheckSeconds": 3}}), "Deployment")[0]
    env = {e["name"]: e["value"] for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DPO_QUEUE_CHECK_SECONDS"] == "3"


def test_generated_files_are_in_sync() -> None:
    assert (ROOT / "manifests/install.yaml").read_text() == render_manifests.install_yaml(), "run `make manifests`"
    assert render_manifests.HEALTH_CM.read_text() == render_manifests.health_configmap(), "run `make manifests`"
    chart_crds = {d["metadata"]["name"]: d for d in render_manifests.chart_crds()}
    assert chart_crds == {c["metadata"]["name"]: c for c in crdgen.all_crds()}, "run `make crds`"


def test_install_yaml_objects_validate() -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests/install.yaml").read_text()) if d]
    assert docs[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dpo-system"}}
    for doc in docs:
        validate_builtin(doc)
    assert all(d["metadata"].get("namespace") in (None, "dpo-system") for d in docs)


def test_example_crs_validate_against_our_crds() -> None:
    schemas = {k.kind: ResourceSchema(crdgen.crd_for(k)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
               for k in ALL_KINDS}
    seen = set()
    for path in sorted((ROOT / "manifests/examples").glob("*.yaml")):
        for doc in (d for d in yaml.safe_load_all(path.read_text()) if d):
            if doc["kind"] in schemas:
                schemas[doc["kind"]].admit(doc, None, strict=True)
                seen.add(doc["kind"])
            else:
                validate_builtin(doc)
    assert seen == set(schemas)
    apps = [d for d in yaml.safe_load_all((ROOT / "manifests/argocd/application.yaml").read_text()) if d]
    assert {a["spec"]["source"]["path"] for a in apps} == {"charts/dpo-operator", "manifests/examples"}
    assert all((ROOT / a["spec"]["source"]["path"]).is_dir() for a in apps)


@pytest.fixture(scope="module")
def health() -> Any:
    lupa = pytest.importorskip("lupa")
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    script = render_manifests.HEALTH_LUA.read_text()
    check = runtime.eval(f"function(obj) {script} end")

    def verdict(obj: dict[str, Any]) -> tuple[str, str]:
        result = check(runtime.table_from(obj, recursive=True))
        return result["status"], result["message"]

    return verdict


def resource(phase: str | None, generation: int = 2, observed: int | None = 2, message: str = "") -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "x", "generation": generation}, "spec": {}}
    if phase is not None:
        obj["status"] = {"phase": phase, "observedGeneration": observed, "message": message}
        if observed is None:
            del obj["status"]["observedGeneration"]
    return obj


@pytest.mark.parametrize("obj, expected", [
    (resource(None), "Progressing"),
    (resource("Pending"), "Progressing"),
    (resource("Running"), "Progressing"),
    (resource("Progressing"), "Progressing"),
    (resource("Succeeded"), "Healthy"),
    (resource("Ready"), "Healthy"),
    (resource("Failed", message="spec.candidatesPerTurn must be at least 2"), "Degraded"),
    (resource("Cancelled"), "Degraded"),
    (resource("Suspended"), "Suspended"),
    (resource("Ready", generation=3, observed=2), "Progressing"),  # a spec change not yet observed
    (resource("Succeeded", observed=None), "Progressing"),
])
def test_argocd_health_verdicts(health: Any, obj: dict[str, Any], expected: str) -> None:
    status, message = health(obj)
    assert status == expected
    if obj.get("status", {}).get("message"):
        assert obj["status"]["message"] in message


# --------------------------------------------------------------------------- what the operator creates

def body(kind: str, name: str = "x") -> dict[str, Any]:
    return {"apiVersion": "dpo.ai/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": "team-a", "uid": "0000-1111", "generation": 1}}


def test_operator_manifests_validate_strictly() -> None:
    from dpo_operator.api.collection import DPOCollectionSpec
    from dpo_operator.api.common import PvcLocation
    from dpo_operator.api.deployment import ModelDeploymentSpec
    from dpo_operator.api.training import DPOTrainingJobSpec
    from dpo_operator.config import OperatorConfig
    from dpo_operator.handlers import collection, training_customizer, training_local
    from dpo_operator.render import nim
    from dpo_operator.serving.model import ServedModel

    config = OperatorConfig.from_env()
    examples = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "manifests/examples/pipeline.yaml").read_text()) if d}
    collection_spec = DPOCollectionSpec.model_validate(examples["DPOCollection"]["spec"])
    validate_builtin(collection.job_manifest(body("DPOCollection"), collection_spec, config))

    training = {**examples["DPOTrainingJob"]["spec"], "local": {"numNodes": 2, "gpusPerNode": 8,
                                                              "output": {"claimName": "dpo-data", "path": "/m"}}}
    spec = DPOTrainingJobSpec.model_validate(training)
    dataset = PvcLocation(claim_name="dpo-data", path="/ds")
    from dpo_operator.api.common import HubLocation, StorageLocation
    validate_builtin(training_local.job_manifest(body("DPOTrainingJob"), spec, StorageLocation(pvc=dataset), config))
    hub = StorageLocation(hub=HubLocation(endpoint="http://ds/v1/hf", repo_id="dpo/pairs"))
    validate_builtin(training_local.job_manifest(body("DPOTrainingJob"), spec, hub, config))
    validate_builtin(training_local.headless_service(body("DPOTrainingJob"), "x-train"))
    customizer = DPOTrainingJobSpec.model_validate(
        yaml.safe_load((ROOT / "manifests/examples/customizer-training.yaml").read_text())["spec"])
    validate_builtin(training_customizer.upload_manifest(body("DPOTrainingJob"), customizer,
                                                         StorageLocation(pvc=dataset), "dpo/x", config))

    deployment = ModelDeploymentSpec.model_validate(examples["ModelDeployment"]["spec"])
    served = ServedModel(served_name="tictactoe", base_name="meta/llama", weights=dataset,
                         adapter=PvcLocation(claim_name="dpo-data", path="/models/x/final"))
    validate_builtin(nim.deployment_manifest(body("ModelDeployment"), deployment, served, config, "rev1"))
    validate_builtin(nim.service_manifest(body("ModelDeployment"), deployment))
