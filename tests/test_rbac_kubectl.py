"""RBAC on the dev cluster, driven with the real kubectl (the oldest and the newest installed here).

RBAC objects are stored, validated and served as kube-apiserver does, and not enforced: access reviews answer as a
server without an authorizer (allowed, with a reason saying so). ``manifests/install.yaml`` applies whole.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dpo_operator.kubeemu.cluster import EmbeddedCluster
from dpo_operator.kubeemu.reviews import REASON
from tests.kubectl_versions import installed_kubectls, version_id

KUBECTLS = installed_kubectls()
pytestmark = pytest.mark.skipif(not KUBECTLS, reason="kubectl is not installed: these tests drive the emulated API "
                                                     "server with it")
ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "manifests/install.yaml"


class Kubectl:
    """One kubectl binary pointed at one emulated cluster."""

    def __init__(self, binary: str, kubeconfig: Path) -> None:
        self.binary, self.kubeconfig = binary, kubeconfig

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig),
               "KUBECACHEDIR": str(self.kubeconfig.parent / f"kubecache-{version_id(self.binary)}")}
        done = subprocess.run([self.binary, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def json(self, *args: str) -> dict:
        return json.loads(self(*args, "-o", "json").stdout)


@pytest.fixture(scope="module", params=KUBECTLS, ids=version_id)
def kubectl(request: pytest.FixtureRequest) -> Iterator[Kubectl]:
    with EmbeddedCluster() as embedded:
        yield Kubectl(request.param, embedded.kubeconfig)


def _rows(output: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in output.strip().splitlines()]


def test_install_yaml_applies_whole_server_side(kubectl: Kubectl) -> None:
    docs = [d for d in yaml.safe_load_all(INSTALL.read_text()) if d]
    applied = kubectl("apply", "--server-side", "-f", str(INSTALL)).stdout.splitlines()
    assert len(applied) == len(docs) and all(line.endswith(" serverside-applied") for line in applied)
    kinds = {d["kind"] for d in docs}
    assert {"ClusterRole", "ClusterRoleBinding", "Deployment", "ServiceAccount"} <= kinds
    for doc in docs:
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            got = kubectl.json("get", doc["kind"].lower(), doc["metadata"]["name"])
            assert got.get("rules") == doc.get("rules") and got.get("roleRef") == doc.get("roleRef")
            assert got.get("subjects") == doc.get("subjects")
    again = kubectl("apply", "--server-side", "-f", str(INSTALL)).stdout.splitlines()
    assert len(again) == len(docs)  # re-applying the same manifests changes nothing and conflicts with nothing
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    header, row = _rows(kubectl("get", "clusterrolebinding", binding["metadata"]["name"], "-o", "wide").stdout)
    subject = binding["subjects"][0]  # (no users or groups: those cells are blank)
    assert header == ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
    assert row[1] == f"ClusterRole/{binding['roleRef']['name']}" and row[-1] == f"{subject['namespace']}/{subject['name']}"
    assert _rows(kubectl("get", "clusterrolebindings").stdout)[0] == ["NAME", "ROLE", "AGE"]


def test_kubectl_create_rbac_objects(kubectl: Kubectl) -> None:
    """The generators (protobuf bodies from newer kubectls), names with ':', and defaulted subjects."""
    kubectl("create", "namespace", "team-a")
    assert kubectl("create", "role", "pod-reader", "-n", "team-a", "--verb=get,list", "--resource=pods").stdout \
        .strip() == "role.rbac.authorization.k8s.io/pod-reader created"
    kubectl("create", "clusterrole", "system:dpo:secret-reader", "--verb=get", "--resource=secrets")
    kubectl("create", "rolebinding", "readers", "-n", "team-a", "--role=pod-reader", "--user=alice",
            "--serviceaccount=team-a:bot", "--group=devs")
    kubectl("create", "clusterrolebinding", "secret-readers", "--clusterrole=system:dpo:secret-reader",
            "--serviceaccount=dpo-system:dpo-operator")
    role = kubectl.json("get", "role", "pod-reader", "-n", "team-a")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    binding = kubectl.json("get", "rolebinding", "readers", "-n", "team-a")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"}
    assert {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"} in binding["subjects"]
    assert {"kind": "ServiceAccount", "name": "bot", "namespace": "team-a"} in binding["subjects"]
    header, row = _rows(kubectl("get", "rolebindings", "-n", "team-a", "-o", "wide").stdout)
    assert header == ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
    cells = dict(zip(header, row, strict=True))
    assert cells["NAME"] == "readers" and cells["ROLE"] == "Role/pod-reader" and cells["USERS"] == "alice"
    assert cells["GROUPS"] == "devs" and cells["SERVICEACCOUNTS"] == "team-a/bot"
    assert _rows(kubectl("get", "clusterrole", "system:dpo:secret-reader").stdout)[0] == ["NAME", "CREATED AT"]
    described = kubectl("describe", "role", "pod-reader", "-n", "team-a").stdout
    assert ["pods", "[]", "[]", "[get list]"] in _rows(described)
    described = kubectl("describe", "rolebinding", "readers", "-n", "team-a").stdout
    assert re.search(r"Role:\s+Kind:\s+Role\s+Name:\s+pod-reader", described)
    assert ["ServiceAccount", "bot", "team-a"] in _rows(described)
    resources = _rows(kubectl("api-resources", "--api-group=rbac.authorization.k8s.io").stdout)
    assert [r[0] for r in resources[1:]] == ["clusterrolebindings", "clusterroles", "rolebindings", "roles"]
    assert "rbac.authorization.k8s.io/v1" in kubectl("api-versions").stdout.split()
    explained = kubectl("explain", "clusterrolebinding.roleRef").stdout
    assert "RoleRef contains information that points to the role being used" in explained


def test_invalid_rbac_objects_get_the_api_servers_messages(kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "team-b")
    no_verbs = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "broken", "namespace": "team-b"},
                "rules": [{"apiGroups": [""], "resources": ["pods"]}]}
    refused = kubectl("apply", "-f", "-", stdin=json.dumps(no_verbs), check=False)
    assert refused.returncode == 1
    assert 'The Role "broken" is invalid: rules[0].verbs: Required value: verbs must contain at least one value' \
        in refused.stderr
    bad_ref = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": "bad-ref"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                                            "name": "x"},
               "subjects": [{"kind": "ServiceAccount", "name": "bot"}]}
    refused = kubectl("apply", "-f", "-", stdin=json.dumps(bad_ref), check=False)
    assert refused.returncode == 1
    assert 'roleRef.kind: Unsupported value: "Role": supported values: "ClusterRole"' in refused.stderr
    assert "subjects[0].namespace: Required value" in refused.stderr
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "pinned", "namespace": "team-b"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
               "subjects": [{"kind": "Group", "name": "devs"}]}
    kubectl("apply", "-f", "-", stdin=json.dumps(binding))
    binding["roleRef"]["name"] = "edit"
    changed = kubectl("apply", "-f", "-", stdin=json.dumps(binding), check=False)
    assert changed.returncode == 1 and "roleRef: Invalid value" in changed.stderr and "cannot change roleRef" in \
        changed.stderr
    assert kubectl("get", "rolebinding", "pinned", "-n", "team-b", "-o", "jsonpath={.roleRef.name}").stdout == "view"


def test_auth_can_i_answers_as_a_server_without_an_authorizer(kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "team-c")
    allowed = kubectl("auth", "can-i", "create", "deployments", "-n", "team-c")
    assert allowed.stdout.strip() == "yes"
    impersonated = kubectl("auth", "can-i", "get", "secrets", "-n", "team-c",
                           "--as=system:serviceaccount:dpo-system:dpo-operator")
    assert impersonated.stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "get", "/healthz").stdout.strip() == "yes"
    listed = _rows(kubectl("auth", "can-i", "--list", "-n", "team-c").stdout)
    assert listed[0][:2] == ["Resources", "Non-Resource URLs"] and ["*.*", "[]", "[]", "[*]"] in listed
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": "alice", "resourceAttributes": {"verb": "delete", "resource": "pods",
                                                               "namespace": "team-c"}}}
    answered = json.loads(kubectl("create", "-f", "-", "-o", "json", stdin=json.dumps(review)).stdout)
    assert answered["status"] == {"allowed": True, "reason": REASON}
    assert "RBAC is not enforced" in REASON
    del review["spec"]["user"]
    refused = kubectl("create", "-f", "-", stdin=json.dumps(review), check=False)
    assert refused.returncode == 1 and "spec.user: Invalid value" in refused.stderr \
        and "at least one of user or group must be specified" in refused.stderr
    local = {"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
             "spec": {"groups": ["devs"], "resourceAttributes": {"verb": "list", "resource": "jobs", "group": "batch",
                                                                 "namespace": "default"}}}
    elsewhere = kubectl("create", "-n", "team-c", "-f", "-", stdin=json.dumps(local), check=False)
    assert elsewhere.returncode == 1 and "spec.resourceAttributes.namespace must match namespace: team-c" in \
        elsewhere.stderr
    local["spec"]["resourceAttributes"]["namespace"] = "team-c"
    answered = json.loads(kubectl("create", "-n", "team-c", "-f", "-", "-o", "json", stdin=json.dumps(local)).stdout)
    assert answered["status"]["allowed"] is True
    listing = kubectl("get", "selfsubjectaccessreviews", check=False)  # create-only, never stored
    assert listing.returncode == 1 and "the server does not allow this method" in listing.stderr
