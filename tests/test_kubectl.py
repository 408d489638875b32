"""The real kubectl against the emulated API server, as a user drives a kind cluster.

Every step here is a kubectl command a user runs (README: "A dev cluster for kubectl"); the assertions are on what
kubectl prints and exits with, and on the objects in the API.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dpo_operator.kubeemu.cluster import EmbeddedCluster
from tests.kubectl_versions import client_minor, kubectl_on_path  # noqa: F401  (the fixture)

# each test runs with the oldest and the newest kubectl installed here (tests/kubectl_versions.py)
pytestmark = [pytest.mark.skipif(shutil.which("kubectl") is None,
                                 reason="kubectl is not installed: these tests drive the emulated API server with it"),
              pytest.mark.usefixtures("kubectl_on_path")]
ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "manifests/examples/pipeline.yaml"


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KUBECACHEDIR": str(kubeconfig.parent / "kubecache")}
    done = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, env=env, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def cluster(kubectl_on_path: str | None) -> Iterator[Path]:
    """An emulated API server with nothing installed: kubectl installs our CRDs itself."""
    with EmbeddedCluster() as embedded:
        kubectl(embedded.kubeconfig, "apply", "--validate=strict", "-f", str(ROOT / "crds"))
        yield embedded.kubeconfig


def _table(output: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in output.strip().splitlines()]


def test_crds_apply_with_validation_and_are_discovered(tmp_path: Path) -> None:
    with EmbeddedCluster() as embedded:
        kubectl(embedded.kubeconfig, "create", "namespace", "early")
        early = kubectl(embedded.kubeconfig, "apply", "-n", "early", "-f", str(PIPELINE), check=False)
        assert early.stdout.strip() == "persistentvolumeclaim/dpo-data created"  # validated, then mapped, like kind:
        assert 'no matches for kind "DPOCollection" in version "dpo.ai/v1alpha1"\nensure CRDs are installed first' \
            in early.stderr
        applied = kubectl(embedded.kubeconfig, "apply", "--validate=strict", "-f", str(ROOT / "crds"))
        assert applied.stdout.split("\n")[:5] == [
            f"customresourcedefinition.apiextensions.k8s.io/{plural}.dpo.ai created"
            for plural in ("dpocollections", "dpoevaluations", "dpoloops", "dpotrainingjobs", "modeldeployments")]
        again = kubectl(embedded.kubeconfig, "apply", "--validate=strict", "-f", str(ROOT / "crds"))
        assert again.stdout.count("unchanged") == 5
        resources = _table(kubectl(embedded.kubeconfig, "api-resources", "--api-group=dpo.ai").stdout)
        assert resources[1:] == [["dpocollections", "dpoc", "dpo.ai/v1alpha1", "true", "DPOCollection"],
                                 ["dpoevaluations", "dpoeval", "dpo.ai/v1alpha1", "true", "DPOEvaluation"],
                                 ["dpoloops", "dpoloop", "dpo.ai/v1alpha1", "true", "DPOLoop"],
                                 ["dpotrainingjobs", "dpotj", "dpo.ai/v1alpha1", "true", "DPOTrainingJob"],
                                 ["modeldeployments", "dpomd", "dpo.ai/v1alpha1", "true", "ModelDeployment"]]
        core = _table(kubectl(embedded.kubeconfig, "api-resources", "--api-group=").stdout)
        assert ["persistentvolumeclaims", "pvc", "v1", "true", "PersistentVolumeClaim"] in core
        established = kubectl(embedded.kubeconfig, "wait", "--for=condition=Established", "crd", "--all", "--timeout=10s")
        assert established.stdout.count("condition met") == 5


def test_pipeline_client_side_apply_get_and_delete(cluster: Path) -> None:
    assert kubectl(cluster, "create", "namespace", "csa").stdout.strip() == "namespace/csa created"
    created = kubectl(cluster, "apply", "-n", "csa", "-f", str(PIPELINE)).stdout.splitlines()
    assert created == ["persistentvolumeclaim/dpo-data created", "dpocollection.dpo.ai/tictactoe-pairs created",
                       "dpotrainingjob.dpo.ai/tictactoe-dpo created", "modeldeployment.dpo.ai/tictactoe created"]
    assert all(line.endswith("unchanged") for line in kubectl(cluster, "apply", "-n", "csa", "-f", str(PIPELINE)).stdout.splitlines())

    rows = _table(kubectl(cluster, "get", "dpo", "-n", "csa").stdout)
    assert ["NAME", "PHASE", "PAIRS", "PROGRESS", "ETA", "AGE"] in rows
    assert ["NAME", "BACKEND", "PHASE", "PROGRESS", "ETA", "AGE"] in rows
    assert ["NAME", "PHASE", "READY", "MODEL", "AGE"] in rows
    wide = _table(kubectl(cluster, "get", "dpocollections", "-n", "csa", "-o", "wide").stdout)
    assert wide[0] == ["NAME", "PHASE", "PAIRS", "PROGRESS", "ETA", "AGE", "CANDIDATES", "DATASET", "REASON", "MESSAGE"]
    assert wide[1][0] == "tictactoe-pairs"
    status = {"status": {"phase": "Pending", "reason": "SecretNotFound", "message": "secret nim-key not found"}}
    kubectl(cluster, "patch", "-n", "csa", "dpoc", "tictactoe-pairs", "--subresource=status", "--type=merge",
            "-p", json.dumps(status))
    wide = _table(kubectl(cluster, "get", "dpoc", "tictactoe-pairs", "-n", "csa", "-o", "wide").stdout)
    assert wide[1][:2] == ["tictactoe-pairs", "Pending"]
    assert wide[1][-2:] == ["SecretNotFound", "secret nim-key not found"]
    for name in ("dpocollection/tictactoe-pairs", "dpoc/tictactoe-pairs", "dpocollections.dpo.ai/tictactoe-pairs"):
        got = json.loads(kubectl(cluster, "get", name, "-n", "csa", "-o", "json").stdout)
        assert got["spec"]["candidatesPerTurn"] == 4 and got["spec"]["pairing"] == {}  # defaulted (pairing: unset)
    assert _table(kubectl(cluster, "get", "pvc", "-n", "csa").stdout)[0][:3] == ["NAME", "STATUS", "VOLUME"]

    kubectl(cluster, "patch", "-n", "csa", "pvc", "dpo-data", "-p", '{"metadata": {"labels": {"tier": "data"}}}')
    assert kubectl(cluster, "get", "pvc", "-n", "csa", "-l", "tier=data", "-o", "name").stdout.strip() == \
        "persistentvolumeclaim/dpo-data"

    started = time.monotonic()
    deleted = kubectl(cluster, "delete", "--wait", "--timeout=20s", "-n", "csa", "-f", str(PIPELINE))
    assert time.monotonic() - started < 15 and deleted.stdout.count("deleted") == 4
    gone = kubectl(cluster, "get", "dpoc", "tictactoe-pairs", "-n", "csa", check=False)
    assert gone.returncode == 1 and 'dpocollections.dpo.ai "tictactoe-pairs" not found' in gone.stderr


def test_pipeline_server_side_apply_owns_fields(cluster: Path, tmp_path: Path) -> None:
    kubectl(cluster, "create", "namespace", "ssa")
    applied = kubectl(cluster, "apply", "--server-side", "-n", "ssa", "-f", str(PIPELINE)).stdout.splitlines()
    assert applied == ["persistentvolumeclaim/dpo-data serverside-applied",
                       "dpocollection.dpo.ai/tictactoe-pairs serverside-applied",
                       "dpotrainingjob.dpo.ai/tictactoe-dpo serverside-applied",
                       "modeldeployment.dpo.ai/tictactoe serverside-applied"]
    got = json.loads(kubectl(cluster, "get", "dpoc", "tictactoe-pairs", "-n", "ssa", "-o", "json",
                             "--show-managed-fields").stdout)
    managers = {(m["manager"], m["operation"]) for m in got["metadata"]["managedFields"]}
    assert managers == {("kubectl", "Apply")}
    assert "f:numRuns" in got["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]

    # another manager owning a field with another value is a conflict; --force-conflicts takes it over
    tuned = {"apiVersion": "dpo.ai/v1alpha1", "kind": "DPOCollection", "metadata": {"name": "tictactoe-pairs"},
             "spec": {"numRuns": 5}}
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(tuned))
    conflict = kubectl(cluster, "apply", "--server-side", "--field-manager=tuner", "-n", "ssa", "-f", str(other), check=False)
    assert conflict.returncode == 1 and 'conflict with "kubectl"' in conflict.stderr and ".spec.numRuns" in conflict.stderr
    kubectl(cluster, "apply", "--server-side", "--force-conflicts", "--field-manager=tuner", "-n", "ssa", "-f", str(other))
    assert kubectl(cluster, "get", "dpoc", "tictactoe-pairs", "-n", "ssa", "-o", "jsonpath={.spec.numRuns}").stdout == "5"

    # dropping a field from the applied configuration removes it from the object
    docs = [d for d in yaml.safe_load_all(PIPELINE.read_text()) if d]
    collection = next(d for d in docs if d["kind"] == "DPOCollection")
    del collection["metadata"]["annotations"], collection["spec"]["numRuns"]
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump(collection))
    kubectl(cluster, "apply", "--server-side", "-n", "ssa", "-f", str(mine))
    got = json.loads(kubectl(cluster, "get", "dpoc", "tictactoe-pairs", "-n", "ssa", "-o", "json").stdout)
    assert "annotations" not in got["metadata"] and got["spec"]["numRuns"] == 5  # tuner's field stays


def test_explain_reads_the_crd_schema_and_builtin_kinds(cluster: Path) -> None:
    pairing = kubectl(cluster, "explain", "dpocollection.spec.pairing").stdout
    assert "KIND:       DPOCollection" in pairing and "FIELD: pairing <Object>" in pairing
    enum = r"\s+enum: exhaustive, bestVsWorst" if client_minor() >= 28 else ""  # kubectl prints enums from 1.28 on
    assert re.search(r"strategy\s+<string>" + enum, pairing)
    recursive = kubectl(cluster, "explain", "dpotj.spec.hyperparameters", "--recursive").stdout
    assert "learningRate" in recursive and "dpo" in recursive
    claim = kubectl(cluster, "explain", "pvc.spec.accessModes").stdout
    assert "KIND:       PersistentVolumeClaim" in claim and "accessModes contains the desired access modes" in claim
    from_v2 = kubectl(cluster, "explain", "--output=plaintext-openapiv2", "dpoc.spec.pairing").stdout  # /openapi/v2
    assert "RESOURCE: pairing <Object>" in from_v2 and "maxPairsPerTurn" in from_v2


def test_invalid_custom_resources_get_the_api_servers_messages(cluster: Path) -> None:
    kubectl(cluster, "create", "namespace", "bad")
    bad = {"apiVersion": "dpo.ai/v1alpha1", "kind": "DPOCollection", "metadata": {"name": "bad"},
           "spec": {"numRuns": 0, "output": {"pvc": {"claimName": "d"}}}}
    for mode in ([], ["--server-side"]):
        rejected = kubectl(cluster, "apply", *mode, "-n", "bad", "-f", "-", stdin=json.dumps(bad), check=False)
        assert rejected.returncode == 1
        assert 'The DPOCollection "bad" is invalid:' in rejected.stderr
        assert "spec.numRuns: Invalid value: 0: spec.numRuns in body should be greater than or equal to 1" in rejected.stderr
    no_llm = {**bad, "spec": {"output": {"pvc": {"claimName": "d"}}}}  # a CEL rule: llm unless a NAT workflow
    rejected = kubectl(cluster, "apply", "-n", "bad", "-f", "-", stdin=json.dumps(no_llm), check=False)
    assert rejected.returncode == 1 and "spec.llm is required unless spec.workflow.nat is set" in rejected.stderr
    unknown = {**bad, "spec": {"llm": {"baseUrl": "http://x/v1", "model": "m"}, "output": {"pvc": {"claimName": "d"}},
                               "numRun": 2}}
    strict = kubectl(cluster, "apply", "-n", "bad", "-f", "-", stdin=json.dumps(unknown), check=False)
    assert strict.returncode == 1 and 'strict decoding error: unknown field "spec.numRun"' in strict.stderr
    assert kubectl(cluster, "get", "dpoc", "-n", "bad", "-o", "name").stdout == ""


def test_builtin_names_labels_and_quantities_are_validated(cluster: Path) -> None:
    kubectl(cluster, "create", "namespace", "names")
    configmap = kubectl(cluster, "create", "configmap", "Bad_Name", "-n", "names", check=False)
    assert configmap.returncode == 1 and 'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: ' \
        '"Bad_Name": a lowercase RFC 1123 subdomain must consist of' in configmap.stderr
    service = kubectl(cluster, "create", "service", "clusterip", "1svc", "--tcp=80", "-n", "names", check=False)
    assert service.returncode == 1 and "a DNS-1035 label must consist of" in service.stderr
    namespace = kubectl(cluster, "create", "namespace", "a.b", check=False)
    assert namespace.returncode == 1 and "a lowercase RFC 1123 label must consist of" in namespace.stderr
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c", "labels": {"team": "-x"}},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "50GB"}}}}
    rejected = kubectl(cluster, "apply", "-n", "names", "-f", "-", stdin=json.dumps(claim), check=False)
    assert rejected.returncode == 1 and 'The PersistentVolumeClaim "c" is invalid:' in rejected.stderr
    assert 'metadata.labels: Invalid value: "-x": a valid label must be an empty string' in rejected.stderr
    assert 'spec.resources.requests[storage]: Invalid value: "50GB": quantities must match' in rejected.stderr
    kubectl(cluster, "create", "configmap", "good", "-n", "names", "--from-literal=a=b")
    assert json.loads(kubectl(cluster, "get", "cm", "good", "-n", "names", "-o", "json").stdout)["data"] == {"a": "b"}


@pytest.fixture()
def dev_cluster(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """``dpo-operator dev-cluster`` as a user starts it; (kubeconfig, policy server URL)."""
    process = subprocess.Popen([sys.executable, "-m", "dpo_operator", "dev-cluster", "--workdir", str(tmp_path / "dev")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    kubeconfig = policy = None
    while time.monotonic() < deadline and kubeconfig is None:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if match := re.search(r"spec\.llm\.baseUrl: (\S+)", line):
            policy = match.group(1)
        if line.startswith("export KUBECONFIG="):
            kubeconfig = Path(line.strip().split("=", 1)[1])
    assert kubeconfig is not None and policy is not None, "".join(lines)
    try:
        yield kubeconfig, policy
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
        assert process.returncode == 0, rest
        assert "dev cluster stopped" in rest


def test_dev_cluster_runs_a_collection_to_succeeded(dev_cluster: tuple[Path, str]) -> None:
    kubeconfig, policy = dev_cluster
    crds = kubectl(kubeconfig, "get", "crd", "-o", "name").stdout
    assert crds.count("dpo.ai") == 5
    # the NIM Operator's CRDs too (backend nimOperator; its stand-in controller runs in the dev cluster)
    assert "nimservices.apps.nvidia.com" in crds and "nimcaches.apps.nvidia.com" in crds
    kubectl(kubeconfig, "create", "namespace", "demo")
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "dpo-data"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
    kubectl(kubeconfig, "apply", "-n", "demo", "-f", "-", stdin=json.dumps(claim))
    collection = {"apiVersion": "dpo.ai/v1alpha1", "kind": "DPOCollection", "metadata": {"name": "quick"},
                  "spec": {"workflow": {"name": "tictactoe", "numExamples": 8},
                           "llm": {"baseUrl": policy, "model": "toy/tictactoe-policy"},
                           "output": {"pvc": {"claimName": "dpo-data", "path": "/datasets/quick"}}}}
    kubectl(kubeconfig, "apply", "-n", "demo", "-f", "-", stdin=json.dumps(collection))
    waited = kubectl(kubeconfig, "wait", "-n", "demo", "--for=condition=Succeeded", "dpoc/quick", "--timeout=60s")
    assert waited.stdout.strip() == "dpocollection.dpo.ai/quick condition met"
    row = _table(kubectl(kubeconfig, "get", "dpoc", "quick", "-n", "demo").stdout)[1]
    assert row[0] == "quick" and row[1] == "Succeeded" and int(row[2]) > 0
    job = _table(kubectl(kubeconfig, "get", "jobs", "-n", "demo").stdout)
    assert job[0][:3] == ["NAME", "STATUS", "COMPLETIONS"] and job[1][:3] == ["quick-collect", "Complete", "1/1"]
    pods = _table(kubectl(kubeconfig, "get", "pods", "-n", "demo", "-l", "job-name=quick-collect").stdout)
    assert pods[1][:3] == ["quick-collect-0", "0/1", "Completed"]
    assert kubectl(kubeconfig, "logs", "-n", "demo", "job/quick-collect").stdout.strip()  # the collector's output

    # describe finds the object's Events through the field selectors it sends (involvedObject.uid, ...)
    uid = kubectl(kubeconfig, "get", "dpoc", "quick", "-n", "demo", "-o", "jsonpath={.metadata.uid}").stdout
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "quick.review"}, "type": "Normal",
             "reason": "Reviewed", "message": "pairs look balanced",
             "involvedObject": {"apiVersion": "dpo.ai/v1alpha1", "kind": "DPOCollection", "name": "quick",
                                "namespace": "demo", "uid": uid},
             "source": {"component": "reviewer"}}
    kubectl(kubeconfig, "create", "-n", "demo", "-f", "-", stdin=json.dumps(event))
    described = kubectl(kubeconfig, "describe", "dpoc", "quick", "-n", "demo").stdout
    assert "Phase:" in described and "Succeeded" in described
    assert re.search(r"Normal\s+Reviewed\s+\S+\s+reviewer\s+pairs look balanced", described), described

    deleted = kubectl(kubeconfig, "delete", "namespace", "demo", "--wait", "--timeout=30s")
    assert deleted.stdout.strip() == 'namespace "demo" deleted'
    assert kubectl(kubeconfig, "get", "dpoc", "-A", "-o", "name").stdout == ""
