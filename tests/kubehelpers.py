"""Test helpers over the Kubernetes API: typed shortcuts for our kinds and polling waits."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from dpo_operator.api import GROUP, VERSION

T = TypeVar("T")

PLURALS = {"DPOCollection": "dpocollections", "DPOTrainingJob": "dpotrainingjobs", "ModelDeployment": "modeldeployments",
           "DPOEvaluation": "dpoevaluations", "DPOLoop": "dpoloops"}


def wait_for(probe: Callable[[], T | None], timeout: float = 20.0, interval: float = 0.1, what: str = "condition") -> T:
    """Poll until ``probe`` returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except ApiException as exc:
            last = exc
        if last and not isinstance(last, ApiException):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def status_of(obj: dict[str, Any] | None) -> dict[str, Any]:
    """An object's status; empty until a controller has written one (a new object has no ``status`` at all, and a
    status may lack any field that its writer has not set yet): what every probe of a wait must read through."""
    return (obj or {}).get("status") or {}


def conditions_of(obj: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """An object's status conditions by type; empty before the first status write."""
    return {c["type"]: c for c in status_of(obj).get("conditions") or []}


def reason_of(obj: dict[str, Any] | None, condition: str) -> str | None:
    """The reason of one status condition, or None while that condition has not been written."""
    return conditions_of(obj).get(condition, {}).get("reason")


class Kube:
    def __init__(self, api: kubernetes.client.ApiClient, real_cluster: bool = False,
                 pod_logs: Path | None = None) -> None:
        self.real_cluster = real_cluster
        self.pod_logs = pod_logs  # emulated: where the API server reads pod logs from
        self.api = api
        self.core = kubernetes.client.CoreV1Api(api)
        self.batch = kubernetes.client.BatchV1Api(api)
        self.apps = kubernetes.client.AppsV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.ext = kubernetes.client.ApiextensionsV1Api(api)

    def require_emulated(self) -> None:
        """Helpers that play a built-in controller (Job, Deployment, kubelet) make no sense on a real cluster."""
        if self.real_cluster:
            pytest.skip("plays a built-in controller: emulated cluster only")

    def to_dict(self, obj: Any) -> dict[str, Any]:
        return self.api.sanitize_for_serialization(obj)

    def apply_crd(self, crd: dict[str, Any]) -> None:
        try:
            self.ext.create_custom_resource_definition(crd)
        except ApiException as exc:
            if exc.status != 409:
                raise

    # -- our custom resources

    def create(self, kind: str, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec}
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], body)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name)

    def patch_spec(self, kind: str, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name, {"spec": spec})

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name)

    def exists(self, kind: str, namespace: str, name: str) -> bool:
        try:
            self.get(kind, namespace, name)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def wait_phase(self, kind: str, namespace: str, name: str, phase: str, timeout: float = 20.0) -> dict[str, Any]:
        return self.wait_status(kind, namespace, name, lambda status: status.get("phase") == phase, timeout=timeout,
                                what=f"phase {phase}")

    def wait_status(self, kind: str, namespace: str, name: str, check: Callable[[dict[str, Any]], Any],
                    timeout: float = 20.0, what: str = "status") -> dict[str, Any]:
        """Poll one of our objects until ``check(status)`` holds, and return the object. ``check`` gets the status
        through ``status_of`` (``{}`` before the operator's first write), so it must read optional fields with
        ``.get``."""
        return wait_for(lambda: (obj := self.get(kind, namespace, name)) and check(status_of(obj)) and obj,
                        timeout=timeout, what=f"{kind} {namespace}/{name} {what}")

    # -- built-ins

    def usable_secret(self, namespace: str, name: str, data: dict[str, str], usable: bool = True,
                      allowed_urls: str = "") -> None:
        """A Secret; ``usable`` labels it ``dpo.ai/usable: "true"`` (the opt-in the operator requires),
        ``allowed_urls`` annotates where it may be sent (``dpo.ai/allowed-urls``)."""
        labels = {"dpo.ai/usable": "true"} if usable else {}
        annotations = {"dpo.ai/allowed-urls": allowed_urls} if allowed_urls else {}
        encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
        self.core.create_namespaced_secret(namespace, {"metadata": {"name": name, "labels": labels,
                                                                    "annotations": annotations}, "data": encoded})

    def allow_urls(self, namespace: str, name: str, *urls: str) -> None:
        """Set the Secret's ``dpo.ai/allowed-urls`` annotation (what its owner does) to ``urls``."""
        self.core.patch_namespaced_secret(name, namespace, {"metadata": {"annotations": {
            "dpo.ai/allowed-urls": ", ".join(urls)}}})

    def claims(self, namespace: str, *names: str) -> None:
        """PersistentVolumeClaims, as a user creates them before the pods that mount them (a missing claim keeps a
        pod Pending, on a real cluster and the local executor alike)."""
        for name in names:
            self.core.create_namespaced_persistent_volume_claim(namespace, {"metadata": {"name": name}, "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})

    def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.to_dict(self.batch.read_namespaced_job(name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def jobs(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        return self.to_dict(self.batch.list_namespaced_job(namespace, label_selector=selector))["items"]

    def finish_job(self, namespace: str, job_name: str, *, succeeded: bool, message: str = "",
                   reason: str = "BackoffLimitExceeded", exit_code: int | None = None,
                   termination_reason: str | None = None) -> None:
        """Play the job controller and kubelet: a terminated pod with a termination message, then the Job's
        final condition (what a cluster would do when the workload exits)."""
        self.require_emulated()
        job = self.job(namespace, job_name)
        assert job is not None, f"job {job_name} not found"
        pod = {
            "metadata": {
                "name": f"{job_name}-pod",
                "labels": {"batch.kubernetes.io/job-name": job_name, "job-name": job_name},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                                     "uid": job["metadata"]["uid"], "controller": True}],
            },
            # the Job's own containers: results are read only from pods running the Job's template
            "spec": {**{k: v for k, v in job["spec"]["template"]["spec"].items() if k in ("containers", "initContainers")},
                     "restartPolicy": "Never"},
        }
        self.core.create_namespaced_pod(namespace, pod)
        main = job["spec"]["template"]["spec"]["containers"][0]["name"]
        terminated = {"exitCode": 0 if succeeded else (exit_code or 1), "message": message,
                      "reason": termination_reason or ("Completed" if succeeded else "Error"),
                      "finishedAt": "2026-01-01T00:00:00Z"}
        self.core.patch_namespaced_pod_status(f"{job_name}-pod", namespace, {"status": {
            "phase": "Succeeded" if succeeded else "Failed",
            "containerStatuses": [{"name": main, "image": "x", "imageID": "", "ready": False, "restartCount": 0,
                                   "state": {"terminated": terminated}}]}})
        condition = {"type": "Complete" if succeeded else "Failed", "status": "True",
                     "reason": "Completed" if succeeded else reason, "message": "" if succeeded else f"Job has reached the specified {reason}",
                     "lastTransitionTime": "2026-01-01T00:00:00Z", "lastProbeTime": "2026-01-01T00:00:00Z"}
        self.batch.patch_namespaced_job_status(job_name, namespace, {"status": {
            "conditions": [condition], "succeeded": 1 if succeeded else 0, "failed": 0 if succeeded else 1, "active": 0}})

    def deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.to_dict(self.apps.read_namespaced_deployment(name, namespace))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def roll_out(self, namespace: str, name: str, available: bool = True) -> dict[str, Any]:
        """Play the Deployment controller: the current spec observed and its replicas updated (and available)."""
        self.require_emulated()
        deployment = self.deployment(namespace, name)
        assert deployment is not None, f"deployment {name} not found"
        replicas = deployment["spec"].get("replicas", 1)  # kube-apiserver's default when the spec leaves it out
        ready = replicas if available else 0
        self.apps.patch_namespaced_deployment_status(name, namespace, {"status": {
            "observedGeneration": deployment["metadata"]["generation"], "replicas": replicas,
            "updatedReplicas": replicas, "readyReplicas": ready, "availableReplicas": ready}})
        return deployment

    def run_pod(self, namespace: str, job_name: str, log: str) -> str:
        """Play the job controller and kubelet for a pod that runs and has printed ``log`` so far (call again to
        print more); returns the pod's name."""
        self.require_emulated()
        assert self.pod_logs is not None
        name = f"{job_name}-running"
        job = self.job(namespace, job_name)
        assert job is not None, f"job {job_name} not found"
        if not any(p["metadata"]["name"] == name for p in self.to_dict(self.core.list_namespaced_pod(namespace))["items"]):
            self.core.create_namespaced_pod(namespace, {
                "metadata": {"name": name, "labels": {"batch.kubernetes.io/job-name": job_name, "job-name": job_name},
                             "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                                                  "uid": job["metadata"]["uid"], "controller": True}]},
                "spec": {"containers": [{"name": "main", "image": "x"}], "restartPolicy": "Never"}})
            self.core.patch_namespaced_pod_status(name, namespace, {"status": {"phase": "Running"}})
        path = self.pod_logs / namespace / name / "output.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as output:
            output.write(log)
        return name

    def start_job(self, namespace: str, job_name: str) -> None:
        self.require_emulated()
        self.batch.patch_namespaced_job_status(job_name, namespace, {"status": {"active": 1, "startTime": "2026-01-01T00:00:00Z"}})
