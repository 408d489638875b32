"""A development stand-in for the kubelet and the Job controller: runs each Job's container as a local process.

For the embedded demo and end-to-end tests only; on a real cluster Kubernetes runs the pods. It watches Jobs
created by the operator, and for each one: creates a Pod, runs the container's command with its env (values
from Secrets resolved through the API), PVC mounts mapped to local directories and the termination log mapped
to a local file, then records the outcome as a kubelet and the Job controller would (pod terminated state and
termination message; Job ``Complete`` or ``Failed`` with ``BackoffLimitExceeded`` / ``DeadlineExceeded``).
With ``serve_deployments`` it also runs each NIM Deployment the operator (or the NIM Operator's stand-in) creates,
as ``dpo-operator serve`` (a local model server following the NIM conventions) in place of the NIM image, and
reports it ready.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)
TERMINATION_LOG = "/dev/termination-log"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"  # an Indexed Job pod's label and annotation
NODE = "dpo-dev-node"  # the one node this kubelet stand-in plays
NODE_IP = "127.0.0.1"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def fail_job_rule(job: dict[str, Any], code: int) -> int | None:
    """The index of the Job's podFailurePolicy FailJob rule that an exit code of its first container matches."""
    container = job["spec"]["template"]["spec"]["containers"][0]["name"]
    for index, rule in enumerate((job["spec"].get("podFailurePolicy") or {}).get("rules") or []):
        codes = rule.get("onExitCodes") or {}
        if rule.get("action") != "FailJob" or codes.get("containerName", container) != container:
            continue
        if (code in codes.get("values", [])) == (codes.get("operator", "In") == "In"):
            return index
    return None


def claims_of(pod_spec: dict[str, Any]) -> list[str]:
    """The PersistentVolumeClaims a pod spec mounts."""
    return [v["persistentVolumeClaim"]["claimName"] for v in pod_spec.get("volumes") or []
            if (v.get("persistentVolumeClaim") or {}).get("claimName")]


def unschedulable(claim: str) -> str:
    """The scheduler's message for a pod whose PVC does not exist (VolumeBinding plugin, one node)."""
    return (f'0/1 nodes are available: persistentvolumeclaim "{claim}" not found. preemption: 0/1 nodes are '
            "available: 1 Preemption is not helpful for scheduling.")


class Stopped(Exception):
    """The executor was stopped while a pod waited to be scheduled."""


class LocalExecutor:
    def __init__(self, api: kubernetes.client.ApiClient, workdir: Path, namespace: str | None = None,
                 poll_seconds: float = 0.2, serve_deployments: bool = False,
                 python_entry: list[str] | None = None) -> None:
        """``python_entry``: what runs a ``dpo-operator`` container command (default ``python -m dpo_operator``;
        tests put a harness there)."""
        self.core = kubernetes.client.CoreV1Api(api)
        self.batch = kubernetes.client.BatchV1Api(api)
        self.api = api
        self.workdir = workdir.resolve()
        self.namespace = namespace
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._started: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._poller = threading.Thread(target=self._poll, name="local-executor", daemon=True)
        self.apps = kubernetes.client.AppsV1Api(api)
        self.serve_deployments = serve_deployments
        self._servers: dict[str, tuple[str, subprocess.Popen[bytes], str]] = {}  # deployment uid -> (revision, process, pod)
        self.python_entry = python_entry or [sys.executable, "-m", "dpo_operator"]
        self._suspended: dict[str, threading.Event] = {}  # job uid -> set while the running Job is suspended

    def pvc_dir(self, claim: str) -> Path:
        """The local directory that plays a PVC's volume (created on first use: tests and the demo seed it)."""
        path = self.workdir / "pvc" / claim
        path.mkdir(parents=True, exist_ok=True)
        return path

    def pod_dir(self, namespace: str, pod: str) -> Path:
        """Where a pod's files live: ``output.log`` (served as the pod's log) and its termination log."""
        path = self.workdir / "pods" / namespace / pod
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _missing_claim(self, namespace: str, pod_spec: dict[str, Any]) -> str | None:
        """The first claim the pod mounts that does not exist; the claims that do are bound (as kind's
        WaitForFirstConsumer storage class binds them when a pod is scheduled)."""
        for claim in claims_of(pod_spec):
            try:
                pvc = self.api.sanitize_for_serialization(self.core.read_namespaced_persistent_volume_claim(claim, namespace))
            except ApiException as exc:
                if exc.status == 404:
                    return claim
                raise
            if (pvc.get("status") or {}).get("phase") != "Bound":
                requested = ((pvc["spec"].get("resources") or {}).get("requests") or {}).get("storage")
                self.core.patch_namespaced_persistent_volume_claim_status(claim, namespace, {"status": {
                    "phase": "Bound", "accessModes": pvc["spec"].get("accessModes") or ["ReadWriteOnce"],
                    **({"capacity": {"storage": requested}} if requested else {})}})
        return None

    def _schedule(self, namespace: str, pod: str, pod_spec: dict[str, Any], deadline: float | None) -> bool:
        """Keep the pod Pending with the scheduler's condition while a claim it mounts is missing, as on a real
        cluster; True once it can run, False when the Job's deadline passed first."""
        reported = None
        while (claim := self._missing_claim(namespace, pod_spec)) is not None:
            if claim != reported:
                reported = claim
                self.core.patch_namespaced_pod_status(pod, namespace, {"status": {"phase": "Pending", "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable(claim),
                     "lastProbeTime": None, "lastTransitionTime": _now()}]}})
                self._failed_scheduling(namespace, pod, claim)
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if self._stop.wait(self.poll_seconds):
                raise Stopped(pod)
        return True

    @staticmethod
    def _running_status(container: dict[str, Any], started: str) -> dict[str, Any]:
        """What the kubelet reports for a started pod: scheduled, IPs, the container running."""
        return {"phase": "Running", "startTime": started, "hostIP": NODE_IP, "podIP": NODE_IP,
                "podIPs": [{"ip": NODE_IP}], "hostIPs": [{"ip": NODE_IP}], "qosClass": "BestEffort", "conditions": [
                    {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": started}
                    for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")],
                "containerStatuses": [{
                    "name": container["name"], "image": container.get("image", ""), "imageID": "",
                    "containerID": f"local://{container['name']}", "ready": True, "started": True, "restartCount": 0,
                    "state": {"running": {"startedAt": started}}}]}

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> "LocalExecutor":
        self._poller.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._poller.join(timeout=10)
        for _, process, _ in self._servers.values():
            process.terminate()
        for _, process, _ in self._servers.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        for thread in self._threads:
            thread.join(timeout=30)

    def __enter__(self) -> "LocalExecutor":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _list_jobs(self) -> list[dict[str, Any]]:
        selector = "app.kubernetes.io/managed-by=dpo-operator"
        if self.namespace:
            jobs = self.batch.list_namespaced_job(self.namespace, label_selector=selector)
        else:
            jobs = self.batch.list_job_for_all_namespaces(label_selector=selector)
        return self.api.sanitize_for_serialization(jobs)["items"]

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                for job in self._list_jobs():
                    key = job["metadata"]["uid"]
                    finished = any(c.get("status") == "True" and c.get("type") in ("Complete", "Failed")
                                   for c in (job.get("status") or {}).get("conditions") or [])
                    if key in self._started and not finished:  # suspending a running Job stops its pod
                        event = self._suspended.setdefault(key, threading.Event())
                        event.set() if job["spec"].get("suspend") else event.clear()
                    if key in self._started or job["spec"].get("suspend") or finished:
                        continue
                    self._started.add(key)
                    thread = threading.Thread(target=self._run_job, args=(job,), name=f"job-{job['metadata']['name']}",
                                              daemon=True)
                    self._threads.append(thread)
                    thread.start()
                if self.serve_deployments:
                    self._poll_deployments()
            except Exception:  # noqa: BLE001  (a dev tool: keep polling through API hiccups)
                log.exception("local executor: listing jobs failed")
            self._stop.wait(self.poll_seconds)

    # ---------------------------------------------------------------- NIM Deployments

    def _poll_deployments(self) -> None:
        """Run one local model server per NIM Deployment revision (``dpo-operator serve`` in the NIM image's place)."""
        # ours, and those the NIM Operator (or its stand-in, embedded/nim_operator.py) renders for a NIMService
        selector = "app.kubernetes.io/managed-by in (dpo-operator,k8s-nim-operator)"
        listed = (self.apps.list_namespaced_deployment(self.namespace, label_selector=selector) if self.namespace
                  else self.apps.list_deployment_for_all_namespaces(label_selector=selector))
        deployments = self.api.sanitize_for_serialization(listed)["items"]
        self._stop_removed({d["metadata"]["uid"] for d in deployments})
        for deployment in deployments:
            uid = deployment["metadata"]["uid"]
            revision = (deployment["metadata"].get("annotations") or {}).get("dpo.ai/revision", "")
            running = self._servers.get(uid)
            if running is not None and running[0] == revision:
                continue
            namespace = deployment["metadata"]["namespace"]
            if running is not None:
                running[1].terminate()
                running[1].wait(timeout=10)
                self._servers.pop(uid)
                self._delete_pod(namespace, running[2])
            if deployment["spec"].get("replicas", 1) == 0:
                continue
            pod = self._replica_pod(deployment, revision)
            if (claim := self._missing_claim(namespace, deployment["spec"]["template"]["spec"])) is not None:
                self._report_unschedulable(namespace, pod, claim)
                continue
            process, port = self._start_server(deployment, pod)
            self._servers[uid] = (revision, process, pod)
            threading.Thread(target=self._report_ready, args=(deployment, pod, process, port), daemon=True,
                             name=f"nim-{deployment['metadata']['name']}").start()

    def _stop_removed(self, present: set[str]) -> None:
        """A deleted Deployment's server stops, as the kubelet kills its pods (and frees its port)."""
        for uid in [uid for uid in self._servers if uid not in present]:
            _, process, _ = self._servers.pop(uid)
            process.terminate()
            process.wait(timeout=10)

    def _replica_pod(self, deployment: dict[str, Any], revision: str) -> str:
        """The Deployment's one replica as a Pod (what its ReplicaSet would create), so that ``kubectl logs
        deploy/<name>`` and ``kubectl get pods`` find it; created once per revision."""
        meta = deployment["metadata"]
        template_hash = hashlib.sha256(f"{meta['uid']}/{revision}".encode()).hexdigest()
        name = f"{meta['name']}-{template_hash[:10]}-{template_hash[10:15]}"
        template = deployment["spec"]["template"]
        pod = {"metadata": {"name": name, "labels": {**(template.get("metadata") or {}).get("labels", {}),
                                                     "pod-template-hash": template_hash[:10]},
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                                                 "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
               "spec": {**template["spec"], "nodeName": NODE}}
        try:
            self.core.create_namespaced_pod(meta["namespace"], pod)
            self.core.patch_namespaced_pod_status(name, meta["namespace"], {"status": {"phase": "Pending"}})
        except ApiException as exc:
            if exc.status != 409:  # made on an earlier poll, still waiting for its claims
                raise
        return name

    def _report_unschedulable(self, namespace: str, pod: str, claim: str) -> None:
        current = self.api.sanitize_for_serialization(self.core.read_namespaced_pod_status(pod, namespace))
        if any(c.get("message") == unschedulable(claim) for c in (current.get("status") or {}).get("conditions") or []):
            return
        self.core.patch_namespaced_pod_status(pod, namespace, {"status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable(claim),
             "lastProbeTime": None, "lastTransitionTime": _now()}]}})
        self._failed_scheduling(namespace, pod, claim)

    def _failed_scheduling(self, namespace: str, pod: str, claim: str) -> None:
        """The scheduler's Warning Event (``kubectl describe pod`` lists it) and a log line for the dev cluster."""
        log.warning("pod %s/%s is unschedulable: %s", namespace, pod, unschedulable(claim))
        uid = self.api.sanitize_for_serialization(self.core.read_namespaced_pod(pod, namespace))["metadata"]["uid"]
        self.core.create_namespaced_event(namespace, {
            "metadata": {"generateName": f"{pod}."}, "type": "Warning", "reason": "FailedScheduling",
            "message": unschedulable(claim), "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod,
                                                               "namespace": namespace, "uid": uid},
            "source": {"component": "default-scheduler"}, "reportingComponent": "default-scheduler",
            "firstTimestamp": _now(), "lastTimestamp": _now(), "count": 1})

    def _delete_pod(self, namespace: str, pod: str) -> None:
        try:
            self.core.delete_namespaced_pod(pod, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _start_server(self, deployment: dict[str, Any], pod: str) -> tuple[subprocess.Popen[bytes], int]:
        namespace = deployment["metadata"]["namespace"]
        spec = deployment["spec"]["template"]["spec"]
        container = spec["containers"][0]
        run_dir = self.pod_dir(namespace, pod)
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        path_map: dict[str, str] = {}
        for mount in container.get("volumeMounts") or []:
            claim = (volumes.get(mount["name"], {}).get("persistentVolumeClaim") or {}).get("claimName")
            local = self.pvc_dir(claim) / mount.get("subPath", "") if claim else run_dir / mount["name"]
            if not claim and (error := self._fill_volume(namespace, volumes.get(mount["name"], {}), local)):
                log.warning("local executor: deployment %s/%s: %s", namespace, deployment["metadata"]["name"], error)
            path_map[mount["mountPath"]] = str(local).rstrip("/")
        peft = next((m["mountPath"] for m in container.get("volumeMounts") or [] if m["mountPath"].startswith("/loras/")), None)
        if peft is not None:  # NIM_PEFT_SOURCE holds one directory per adapter: link the mounted adapter in
            source = run_dir / "loras"
            source.mkdir(exist_ok=True)
            link = source / peft.removeprefix("/loras/")
            if not link.exists():
                link.symlink_to(path_map.pop(peft), target_is_directory=True)
            path_map["/loras"] = str(source)
        env = self._environment(namespace, container, path_map)
        port = int(env.get("NIM_SERVER_PORT", "8000"))
        output = open(run_dir / "output.log", "ab")  # noqa: SIM115  (the process keeps it)
        process = subprocess.Popen([sys.executable, "-m", "dpo_operator", "serve", "--host", "127.0.0.1"], env=env,
                                   stdout=output, stderr=subprocess.STDOUT, cwd=run_dir)
        status = self._running_status(container, _now())
        status["containerStatuses"][0]["ready"] = False
        status["conditions"] = [c if c["type"] not in ("Ready", "ContainersReady") else {**c, "status": "False"}
                                for c in status["conditions"]]
        self.core.patch_namespaced_pod_status(pod, namespace, {"status": status})
        return process, port

    def _report_ready(self, deployment: dict[str, Any], pod: str, process: subprocess.Popen[bytes], port: int) -> None:
        """Play the kubelet's readiness probe and the Deployment controller's status."""
        import httpx

        replicas = deployment["spec"].get("replicas", 1)
        while not self._stop.is_set() and process.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        ready = replicas if process.poll() is None and not self._stop.is_set() else 0
        try:
            if ready:
                self._mark_ready(deployment["metadata"]["namespace"], pod)
            self.apps.patch_namespaced_deployment_status(
                deployment["metadata"]["name"], deployment["metadata"]["namespace"], {"status": {
                    "observedGeneration": deployment["metadata"].get("generation", 1), "replicas": replicas,
                    "updatedReplicas": replicas, "readyReplicas": ready, "availableReplicas": ready}})
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _mark_ready(self, namespace: str, pod: str) -> None:
        """The kubelet's readiness probe passed: the container and the pod are Ready."""
        status = self.api.sanitize_for_serialization(self.core.read_namespaced_pod_status(pod, namespace))["status"]
        for container in status.get("containerStatuses") or []:
            container["ready"] = True
        for condition in status.get("conditions") or []:
            if condition["type"] in ("Ready", "ContainersReady"):
                condition.update(status="True", lastTransitionTime=_now())
        self.core.patch_namespaced_pod_status(pod, namespace, {"status": {
            "conditions": status.get("conditions") or [], "containerStatuses": status.get("containerStatuses") or []}})

    # ---------------------------------------------------------------- one job

    def _fill_volume(self, namespace: str, volume: dict[str, Any], directory: Path) -> str | None:
        """Write a ``configMap`` or ``secret`` volume's files as the kubelet projects them (other volumes: empty).

        Every key becomes a file named after it, or only the listed ``items`` at their ``path``. A missing object or
        key (not ``optional``) returns the kubelet's FailedMount message: the stand-in fails that pod attempt where
        a kubelet would keep the pod ContainerCreating until the object appears.
        """
        directory.mkdir(parents=True, exist_ok=True)
        kind = "configMap" if "configMap" in volume else "secret" if "secret" in volume else None
        if kind is None:
            return None
        source = volume[kind]
        name = source.get("name") if kind == "configMap" else source.get("secretName")
        try:
            read = self.core.read_namespaced_config_map if kind == "configMap" else self.core.read_namespaced_secret
            obj = self.api.sanitize_for_serialization(read(name, namespace))
        except ApiException as exc:
            if exc.status != 404 or source.get("optional"):
                return None if exc.status == 404 else f"MountVolume.SetUp failed: {exc.reason}"
            return f'MountVolume.SetUp failed for volume "{volume["name"]}": {kind.lower()} "{name}" not found'
        files: dict[str, bytes] = {k: v.encode() for k, v in (obj.get("data") or {}).items()} if kind == "configMap" \
            else {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        extra = obj.get("binaryData") if kind == "configMap" else None
        files.update({k: base64.b64decode(v) for k, v in (extra or {}).items()})
        files.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})  # a Secret the emulator kept so
        items = source.get("items") or [{"key": key, "path": key} for key in files]
        for item in items:
            if item["key"] not in files:
                if source.get("optional"):
                    continue
                what = "configmap references non-existent config key" if kind == "configMap" else \
                    "references non-existent secret key"
                return f'MountVolume.SetUp failed for volume "{volume["name"]}": {what}: {item["key"]}'
            target = directory / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(files[item["key"]])
        return None

    def _secret_value(self, namespace: str, name: str, key: str) -> str:
        secret = self.api.sanitize_for_serialization(self.core.read_namespaced_secret(name, namespace))
        if key in (secret.get("stringData") or {}):
            return secret["stringData"][key]
        return base64.b64decode(secret["data"][key]).decode()

    def _environment(self, namespace: str, container: dict[str, Any], path_map: dict[str, str],
                     annotations: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV",
                                                           "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "OMP_NUM_THREADS")}
        for var in container.get("env") or []:
            if "value" in var and var["value"] is not None:
                env[var["name"]] = self._map_paths(var["value"], path_map)
            elif (ref := (var.get("valueFrom") or {}).get("secretKeyRef")) is not None:
                env[var["name"]] = self._secret_value(namespace, ref["name"], ref["key"])
            elif (field := ((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath", "")).startswith(
                    "metadata.annotations['"):  # the downward API, for the annotations the pod carries
                value = (annotations or {}).get(field.removeprefix("metadata.annotations['").removesuffix("']"))
                if value is not None:
                    env[var["name"]] = value
        return env

    @staticmethod
    def _map_paths(value: str, path_map: dict[str, str]) -> str:
        flag, equals, rest = value.partition("=")
        if value.startswith("--") and equals:  # --flag=/container/path
            return f"{flag}={LocalExecutor._map_paths(rest, path_map)}"
        for container_path, local_path in sorted(path_map.items(), key=lambda kv: -len(kv[0])):
            if value == container_path or value.startswith(container_path.rstrip("/") + "/"):
                return local_path + value[len(container_path):]
        return value

    def _pod(self, job: dict[str, Any], attempt: int, index: int | None = None) -> str:
        """The Job controller's pod for one attempt (scheduled on the one node; Pending until it can run); an
        Indexed Job's pod carries its completion index (label, annotation, hostname) as the Job controller sets it."""
        jname = job["metadata"]["name"]
        name = f"{jname}-{attempt}" if index is None else f"{jname}-{index}-{attempt}"
        template = job["spec"]["template"]
        labels = {**(template["metadata"].get("labels") or {}), "batch.kubernetes.io/job-name": jname,
                  "job-name": jname}
        annotations = dict(template["metadata"].get("annotations") or {})
        spec = {**template["spec"], "nodeName": NODE}
        if index is not None:
            labels[INDEX_KEY] = annotations[INDEX_KEY] = str(index)
            spec["hostname"] = f"{jname}-{index}"
        pod = {"metadata": {"name": name, "labels": labels, "annotations": annotations, "ownerReferences": [{
                   "apiVersion": "batch/v1", "kind": "Job", "name": jname, "uid": job["metadata"]["uid"],
                   "controller": True, "blockOwnerDeletion": True}]},
               "spec": spec}
        self.core.create_namespaced_pod(job["metadata"]["namespace"], pod)
        self.core.patch_namespaced_pod_status(name, job["metadata"]["namespace"], {"status": {"phase": "Pending"}})
        return name

    def _run_attempt(self, job: dict[str, Any], attempt: int, deadline: float | None,
                     index: int | None = None) -> tuple[int, str, bool]:
        namespace = job["metadata"]["namespace"]
        spec = job["spec"]["template"]["spec"]
        container = spec["containers"][0]
        pod_name = self._pod(job, attempt, index)
        if not self._schedule(namespace, pod_name, spec, deadline):
            self.core.patch_namespaced_pod_status(pod_name, namespace, {"status": {
                "phase": "Failed", "reason": "DeadlineExceeded", "message": "Pod was active on the node longer than "
                "the specified deadline"}})
            return 137, "", True
        run_dir = self.pod_dir(namespace, pod_name)
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        path_map = {TERMINATION_LOG: str(run_dir / "termination-log")}
        mount_errors = []
        for mount in container.get("volumeMounts") or []:
            claim = (volumes.get(mount["name"], {}).get("persistentVolumeClaim") or {}).get("claimName")
            if not claim and (error := self._fill_volume(namespace, volumes.get(mount["name"], {}),
                                                         run_dir / mount["name"])):
                mount_errors.append(error)
            path_map[mount["mountPath"]] = str(self.pvc_dir(claim) if claim else run_dir / mount["name"])
        env = self._environment(namespace, container, path_map, {INDEX_KEY: str(index)} if index is not None else {})
        if index is not None:  # what the Job controller gives every container of an Indexed Job
            env["JOB_COMPLETION_INDEX"] = str(index)
        command = [self._map_paths(arg, path_map) for arg in [*container["command"], *(container.get("args") or [])]]
        if command[0] == "dpo-operator":
            command = [*self.python_entry, *command[1:]]
        started = _now()
        self.core.patch_namespaced_pod_status(pod_name, namespace, {"status": self._running_status(container, started)})
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        with open(run_dir / "output.log", "wb") as output:
            code, timed_out = 1, False
            if mount_errors:  # the container never starts
                output.write("\n".join(mount_errors).encode())
            else:
                code, timed_out = self._run_container(job, command, env, output, run_dir, timeout)
        termination = Path(path_map[TERMINATION_LOG])
        message = termination.read_text()[:4096] if termination.exists() else ""
        if not message and code != 0:  # terminationMessagePolicy: FallbackToLogsOnError
            message = (run_dir / "output.log").read_text(errors="replace")[-2048:]
        finished = _now()
        conditions = [{"type": t, "status": "True" if t in ("Initialized", "PodScheduled") else "False",
                       "lastProbeTime": None, "lastTransitionTime": finished if t not in ("Initialized", "PodScheduled")
                       else started, **({"reason": "PodCompleted"} if t in ("Ready", "ContainersReady") else {})}
                      for t in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")]
        self.core.patch_namespaced_pod_status(pod_name, namespace, {"status": {
            "phase": "Succeeded" if code == 0 else "Failed", "conditions": conditions,
            "containerStatuses": [{"name": container["name"], "image": container.get("image", ""), "imageID": "",
                                   "containerID": f"local://{container['name']}", "ready": False, "started": False,
                                   "restartCount": 0, "state": {"terminated": {
                                       "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                       "message": message, "startedAt": started, "finishedAt": finished,
                                       "containerID": f"local://{container['name']}"}}}]}})
        return code, message, timed_out

    @staticmethod
    def _pod_name(job: dict[str, Any], attempt: int) -> str:
        return f"{job['metadata']['name']}-{attempt}"

    def _run_container(self, job: dict[str, Any], command: list[str], env: dict[str, str], output: Any,
                       run_dir: Path, timeout: float | None) -> tuple[int, bool]:
        """Run the container's process to its end (exit code, timed out). Suspending the Job stops it as the
        kubelet stops a deleted pod: SIGTERM, then SIGKILL after the pod's terminationGracePeriodSeconds."""
        suspended = self._suspended.setdefault(job["metadata"]["uid"], threading.Event())
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=run_dir)
        started = time.monotonic()
        while process.poll() is None:
            if suspended.is_set() or self._stop.is_set():
                process.terminate()
                grace = job["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
                try:
                    return process.wait(timeout=grace), False
                except subprocess.TimeoutExpired:
                    process.kill()
                    return process.wait(), False
            if timeout is not None and time.monotonic() - started > timeout:
                process.kill()
                process.wait()
                return 137, True
            suspended.wait(self.poll_seconds)
        return process.returncode, False

    def _wait_while_suspended(self, job: dict[str, Any]) -> None:
        """The Job controller's side of a suspension: no pod, ``Suspended`` condition; back when resumed."""
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        self._finish(job, {"active": 0, "conditions": [{
            "type": "Suspended", "status": "True", "reason": "JobSuspended", "message": "Job suspended",
            "lastTransitionTime": _now(), "lastProbeTime": _now()}]})
        while self._suspended[job["metadata"]["uid"]].is_set():
            if self._stop.wait(self.poll_seconds):
                raise Stopped(name)
        self._finish(job, {"active": 1, "conditions": [{
            "type": "Suspended", "status": "False", "reason": "JobResumed", "message": "Job resumed",
            "lastTransitionTime": _now(), "lastProbeTime": _now()}]})
        log.info("local executor: job %s/%s resumed", namespace, name)

    def _finish(self, job: dict[str, Any], status: dict[str, Any]) -> None:
        self.batch.patch_namespaced_job_status(job["metadata"]["name"], job["metadata"]["namespace"], {"status": status})

    def _run_indexed(self, job: dict[str, Any], deadline: float | None) -> None:
        """An Indexed Job: ``completions`` indexes, each retried until it succeeds, all at once (parallelism is
        at least completions in our Jobs); Complete when every index succeeded, Failed once the Job-wide failures
        pass backoffLimit (or the deadline passes), as the Job controller decides."""
        completions = int(job["spec"].get("completions") or 1)
        backoff_limit = job["spec"].get("backoffLimit", 6)
        lock = threading.Lock()
        failures: list[bool] = []  # one entry per failed pod; True when it timed out
        done: set[int] = set()

        def run(index: int) -> None:
            attempt = 0
            while True:
                with lock:
                    if len(failures) > backoff_limit or any(failures):
                        return
                try:
                    code, _, timed_out = self._run_attempt(job, attempt, deadline, index)
                except (Stopped, ApiException):  # stopped, or the Job deleted meanwhile
                    return
                with lock:
                    if code == 0:
                        done.add(index)
                        self._finish(job, {"active": completions - len(done), "succeeded": len(done),
                                           "failed": len(failures),
                                           "completedIndexes": ",".join(str(i) for i in sorted(done))})
                        return
                    failures.append(timed_out)
                attempt += 1

        self._finish(job, {"active": completions, "startTime": _now()})
        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(completions)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if len(done) == completions:
            self._finish(job, {"active": 0, "succeeded": completions, "completionTime": _now(), "conditions": [
                {"type": "Complete", "status": "True", "reason": "Completed", "message": "",
                 "lastTransitionTime": _now(), "lastProbeTime": _now()}]})
            return
        timed_out = any(failures)
        self._finish(job, {"active": 0, "failed": len(failures), "conditions": [
            {"type": "Failed", "status": "True", "reason": "DeadlineExceeded" if timed_out else "BackoffLimitExceeded",
             "message": "Job was active longer than specified deadline" if timed_out
             else "Job has reached the specified backoff limit", "lastTransitionTime": _now(), "lastProbeTime": _now()}]})

    def _run_job(self, job: dict[str, Any]) -> None:
        deadline_s = job["spec"].get("activeDeadlineSeconds")
        deadline = time.monotonic() + deadline_s if deadline_s else None
        backoff_limit = job["spec"].get("backoffLimit", 6)
        try:
            if job["spec"].get("completionMode") == "Indexed":
                self._run_indexed(job, deadline)
                return
            self._finish(job, {"active": 1, "startTime": _now()})
            failures = pods = 0
            while True:
                code, _, timed_out = self._run_attempt(job, pods, deadline)
                pods += 1
                if self._suspended.setdefault(job["metadata"]["uid"], threading.Event()).is_set():
                    # stopped by the suspension (Kueue preempting, or the user): not a failure
                    self._delete_pod(job["metadata"]["namespace"], f"{job['metadata']['name']}-{pods - 1}")
                    self._wait_while_suspended(job)
                    continue
                if code == 0:
                    self._finish(job, {"active": 0, "succeeded": 1, "completionTime": _now(), "conditions": [
                        {"type": "Complete", "status": "True", "reason": "Completed", "message": "",
                         "lastTransitionTime": _now(), "lastProbeTime": _now()}]})
                    return
                failures += 1
                rule = None if timed_out else fail_job_rule(job, code)
                reason = "DeadlineExceeded" if timed_out else "PodFailurePolicy" if rule is not None \
                    else "BackoffLimitExceeded" if failures > backoff_limit else ""
                if reason:
                    message = ("Job was active longer than specified deadline" if timed_out
                               else f"Container {job['spec']['template']['spec']['containers'][0]['name']} for pod "
                                    f"{job['metadata']['namespace']}/{self._pod_name(job, pods - 1)} failed with "
                                    f"exit code {code} matching FailJob rule at index {rule}" if rule is not None
                               else "Job has reached the specified backoff limit")
                    self._finish(job, {"active": 0, "failed": failures, "conditions": [
                        {"type": "Failed", "status": "True", "reason": reason, "message": message,
                         "lastTransitionTime": _now(), "lastProbeTime": _now()}]})
                    return
                self._finish(job, {"active": 1, "failed": failures})
        except Stopped:
            return
        except ApiException as exc:
            if exc.status != 404:  # the job was deleted meanwhile
                log.exception("local executor: job %s failed to run", job["metadata"]["name"])
