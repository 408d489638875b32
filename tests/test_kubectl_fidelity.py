"""What people type every day, with the real kubectl (the oldest and the newest installed), against the dev
cluster's emulated API server and local executor (issue 30, items 2-5): the answers a kind cluster gives."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from dpo_operator.embedded.executor import LocalExecutor, unschedulable
from dpo_operator.kubeemu.cluster import EmbeddedCluster
from tests.kubehelpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
MANAGED = {"app.kubernetes.io/managed-by": "dpo-operator"}  # what the local executor runs


def _kubectls() -> list[str]:
    """The oldest and the newest kubectl installed (gcloud installs several side by side), else the one on PATH."""
    found = shutil.which("kubectl")
    if found is None:
        return []
    versions = sorted(Path(found).resolve().parent.glob("kubectl.1.*"), key=lambda p: int(p.name.split(".")[-1]))
    return [str(versions[0]), str(versions[-1])] if len(versions) > 1 else [found]


KUBECTLS = _kubectls()
pytestmark = pytest.mark.skipif(not KUBECTLS, reason="kubectl is not installed: these tests drive the dev cluster with it")


class Kubectl:
    def __init__(self, binary: str, kubeconfig: Path) -> None:
        self.binary, self.kubeconfig = binary, kubeconfig

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KUBECACHEDIR": str(self.kubeconfig.parent / "cache")}
        done = subprocess.run([self.binary, *args], input=stdin, capture_output=True, text=True, env=env, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def apply(self, obj: dict[str, object], namespace: str = "default") -> None:
        self("apply", "-n", namespace, "-f", "-", stdin=json.dumps(obj))


@pytest.fixture(scope="module", params=KUBECTLS, ids=lambda p: Path(p).name)
def kubectl(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubectl]:
    """A dev cluster (API server, the local executor with NIM stand-ins, pod logs) and one kubectl."""
    workdir = tmp_path_factory.mktemp("dev")
    with EmbeddedCluster(log_root=workdir / "pods") as cluster:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)
        api = kubernetes.client.ApiClient(configuration)
        run = Kubectl(request.param, cluster.kubeconfig)
        run("apply", "-f", str(ROOT / "crds"))
        with LocalExecutor(api, workdir, poll_seconds=0.1, serve_deployments=True):
            yield run


def _table(output: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in output.strip().splitlines()]


def _job(name: str, command: list[str], claim: str | None = None) -> dict[str, object]:
    spec: dict[str, object] = {"restartPolicy": "Never", "containers": [
        {"name": "main", "image": "python:3.11-slim", "command": command,
         **({"volumeMounts": [{"name": "data", "mountPath": "/data"}]} if claim else {})}]}
    if claim:
        spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": MANAGED},
            "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": MANAGED}, "spec": spec}}}


def _claim(name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}


def test_a_finished_job_pod_reads_completed_and_its_logs_are_served(kubectl: Kubectl) -> None:
    kubectl.apply(_job("hello", ["python3", "-c", "print('hello from the job')"]))
    done = kubectl("wait", "--for=condition=complete", "job/hello", "--timeout=60s")
    assert done.stdout.strip() == "job.batch/hello condition met"
    pods = _table(kubectl("get", "pods", "-l", "job-name=hello").stdout)
    assert pods[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] and pods[1][:4] == ["hello-0", "0/1", "Completed", "0"]
    started = kubectl("get", "pod", "hello-0", "-o", "jsonpath={.status.startTime} "
                      "{.status.containerStatuses[0].state.terminated.startedAt}").stdout.split()
    assert len(started) == 2 and all(re.fullmatch(r"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\dZ", t) for t in started)
    assert kubectl("logs", "job/hello").stdout == "hello from the job\n"
    assert kubectl("logs", "hello-0", "--tail=1").stdout == "hello from the job\n"
    assert kubectl("logs", "-f", "hello-0", timeout=30).stdout == "hello from the job\n"  # ends with the pod
    wide = _table(kubectl("get", "job", "hello", "-o", "wide").stdout)
    assert wide[0] == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1][:3] == ["hello", "Complete", "1/1"] and re.fullmatch(r"\d+s", wide[1][3])
    assert wide[1][5:7] == ["main", "python:3.11-slim"] and wide[1][7].startswith("batch.kubernetes.io/controller-uid=")
    assert [p for p, in _table(kubectl("get", "pods", "--field-selector=status.phase=Succeeded", "-o",
                                       "custom-columns=NAME:.metadata.name", "--no-headers").stdout)] == ["hello-0"]


def test_a_missing_claim_keeps_the_pod_pending_until_it_exists(kubectl: Kubectl) -> None:
    kubectl.apply(_job("needs-claim", ["python3", "-c", "print('ran')"], claim="typo"))
    message = wait_for(lambda: kubectl("get", "pod", "needs-claim-0", "-o", "jsonpath={.status.conditions[?(@.type=="
                                       '"PodScheduled")].message}', check=False).stdout, what="scheduler message")
    assert message == unschedulable("typo")
    assert 'persistentvolumeclaim "typo" not found' in message
    assert _table(kubectl("get", "pod", "needs-claim-0").stdout)[1][2] == "Pending"
    described = kubectl("describe", "pod", "needs-claim-0").stdout
    assert re.search(r"Warning\s+FailedScheduling\s+.*default-scheduler\s+0/1 nodes are available: "
                     r'persistentvolumeclaim "typo" not found', described), described
    kubectl.apply(_claim("typo"))
    kubectl("wait", "--for=condition=complete", "job/needs-claim", "--timeout=60s")
    assert kubectl("logs", "job/needs-claim").stdout == "ran\n"
    assert _table(kubectl("get", "pvc", "typo").stdout)[1][1] == "Bound"


def test_stand_in_nim_replicas_are_pods_with_logs(kubectl: Kubectl) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    labels = {**MANAGED, "app": "nim"}
    kubectl.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "nim", "labels": labels, "annotations": {"dpo.ai/revision": "1"}},
                   "spec": {"selector": {"matchLabels": {"app": "nim"}}, "template": {"metadata": {"labels": labels},
                            "spec": {"containers": [{"name": "nim", "image": "nvcr.io/nim/meta/llama:1.0",
                                                     "env": [{"name": "NIM_SERVER_PORT", "value": str(port)}]}]}}}})
    pod = wait_for(lambda: kubectl("get", "pods", "-l", "app=nim", "-o", "name").stdout.strip(), what="NIM pod")
    assert pod.startswith("pod/nim-")
    # no model configured: the stand-in server exits with its error, which kubectl logs shows like a crashed NIM's
    logs = wait_for(lambda: "NIM_MODEL_NAME" in (out := kubectl("logs", "deploy/nim").stdout) and out, timeout=60,
                    what="the stand-in's output")
    assert "KeyError" in logs
    owner = json.loads(kubectl("get", pod, "-o", "json").stdout)["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("Deployment", "nim")


def test_exec_and_port_forward_say_what_is_not_emulated(kubectl: Kubectl) -> None:
    kubectl("run", "shell", "--image=busybox:1.36", "--restart=Never", "--", "sleep", "3600")
    kubectl("patch", "pod", "shell", "--subresource=status", "--type=merge", "-p", json.dumps({"status": {
        "phase": "Running", "containerStatuses": [{"name": "shell", "image": "busybox:1.36", "imageID": "",
                                                   "ready": True, "restartCount": 0,
                                                   "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}}))
    started = time.monotonic()
    execed = kubectl("exec", "shell", "--", "ls", check=False, timeout=30)
    assert execed.returncode != 0 and "exec and cp are not emulated by the dpo dev cluster" in execed.stderr
    assert "runs as a local process on this machine" in execed.stderr
    forwarded = kubectl("port-forward", "pod/shell", "18080:8000", check=False, timeout=30)
    assert forwarded.returncode != 0 and "port-forward is not emulated" in forwarded.stderr
    assert time.monotonic() - started < 30  # answered at once, not after a hang


def test_deployments_scale_and_print_the_standard_columns(kubectl: Kubectl) -> None:
    kubectl.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {
        "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
            "containers": [{"name": "nginx", "image": "nginx:1.27"}]}}}})
    wide = _table(kubectl("get", "deploy", "web", "-o", "wide").stdout)
    assert wide[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
    assert wide[1][0] == "web" and wide[1][5:] == ["nginx", "nginx:1.27", "app=web"]
    assert kubectl("scale", "deployment", "web", "--replicas=3").stdout.strip() == "deployment.apps/web scaled"
    assert kubectl("get", "deploy", "web", "-o", "jsonpath={.spec.replicas}").stdout == "3"
    defaults = json.loads(kubectl("get", "deploy", "web", "-o", "json").stdout)["spec"]
    assert defaults["strategy"]["type"] == "RollingUpdate" and defaults["revisionHistoryLimit"] == 10
    assert defaults["template"]["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"


def test_discovery_lists_the_common_api_groups(kubectl: Kubectl) -> None:
    versions = set(kubectl("api-versions").stdout.split())
    assert {"networking.k8s.io/v1", "policy/v1", "storage.k8s.io/v1", "autoscaling/v2", "discovery.k8s.io/v1",
            "apps/v1", "batch/v1"} <= versions
    kubectl.apply({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "pdb"},
                   "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}})
    assert kubectl("get", "pdb", "-o", "name").stdout.strip() == "poddisruptionbudget.policy/pdb"


def test_field_selectors_chunks_and_orphans_as_on_kind(kubectl: Kubectl) -> None:
    kubectl("create", "namespace", "every")
    for name in ("c1", "c2", "c3", "c4", "c5"):
        kubectl("create", "configmap", name, "-n", "every")
    chunked = kubectl("get", "cm", "-n", "every", "--chunk-size=2", "-o", "name", "-v=6")
    assert chunked.stdout.split() == [f"configmap/c{i}" for i in range(1, 6)]
    assert chunked.stderr.count("continue=") == 2  # three pages: the server paginated
    refused = kubectl("get", "dpoc", "-n", "every", "--field-selector=spec.numRuns=1", check=False)
    assert refused.returncode == 1 and "field label not supported: spec.numRuns" in refused.stderr

    owner = json.loads(kubectl("get", "cm", "c1", "-n", "every", "-o", "json").stdout)["metadata"]
    kubectl("patch", "cm", "c2", "-n", "every", "--type=merge", "-p", json.dumps({"metadata": {"ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "c1", "uid": owner["uid"]}]}}))
    kubectl("delete", "cm", "c1", "-n", "every", "--cascade=orphan")
    orphan = json.loads(kubectl("get", "cm", "c2", "-n", "every", "-o", "json").stdout)["metadata"]
    assert "ownerReferences" not in orphan
    assert "generation" not in orphan  # ConfigMaps have none


def test_create_deployment_and_job_send_protobuf_and_are_stored(kubectl: Kubectl) -> None:
    """kubectl >= 1.32 writes these kinds as protobuf; older ones as JSON: both decode to the same objects."""
    assert kubectl("create", "deployment", "pb", "--image=nginx:1.27", "--replicas=2", "--port=80").stdout.strip() \
        == "deployment.apps/pb created"
    spec = json.loads(kubectl("get", "deploy", "pb", "-o", "json").stdout)["spec"]
    assert spec["replicas"] == 2 and spec["selector"] == {"matchLabels": {"app": "pb"}}
    container = spec["template"]["spec"]["containers"][0]
    assert (container["name"], container["image"], container["ports"]) == ("nginx", "nginx:1.27",
                                                                           [{"containerPort": 80, "protocol": "TCP"}])
    assert kubectl("create", "job", "pbjob", "--image=busybox:1.36", "--", "echo", "hi").stdout.strip() \
        == "job.batch/pbjob created"
    job = json.loads(kubectl("get", "job", "pbjob", "-o", "json").stdout)["spec"]
    assert job["template"]["spec"]["containers"][0]["command"] == ["echo", "hi"]
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_client_side_apply_upgrades_to_server_side_and_prune_works(kubectl: Kubectl) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "up", "labels": {"set": "p"}}, "data": {"a": "1"}}
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "stale", "labels": {"set": "p"}}}
    kubectl.apply(cm)
    kubectl.apply(other)
    changed = {**cm, "data": {"a": "2"}}
    upgraded = kubectl("apply", "--server-side", "-f", "-", stdin=json.dumps(changed))  # no conflict with CSA
    assert upgraded.stdout.strip() == "configmap/up serverside-applied"
    assert kubectl("get", "cm", "up", "-o", "jsonpath={.data.a}").stdout == "2"
    pruned = kubectl("apply", "--prune", "-l", "set=p", "-f", "-", stdin=json.dumps(changed))
    assert "configmap/stale pruned" in pruned.stdout.splitlines()
    assert kubectl("get", "cm", "-l", "set=p", "-o", "name").stdout.split() == ["configmap/up"]
