"""A development stand-in for the NVIDIA NIM Operator's NIMService controller (standalone platform).

For the embedded dev cluster and end-to-end tests only. Like the real controller it turns each NIMService into a
Deployment and a Service of the same name (owned by the NIMService, labelled ``app: <name>`` and
``app.kubernetes.io/managed-by: k8s-nim-operator``), mounts ``spec.storage`` at ``/model-store`` (a PVC, a
NIMCache's PVC or an emptyDir), injects the standard NIM variables (``NIM_CACHE_PATH``, ``NIM_SERVER_PORT``,
``NGC_API_KEY`` from ``authSecret``) before ``spec.env``, and reports the Deployment's readiness in the NIMService's
status (``state`` Ready/NotReady, conditions ``Ready``/``Failed``, ``availableReplicas``, ``model``). The
:class:`~dpo_operator.embedded.executor.LocalExecutor` (``serve_deployments``) then runs that Deployment as a local
model server. It does not download models: a NIMCache is left for whoever plays its caching Job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes
import yaml
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)
GROUP, VERSION = "apps.nvidia.com", "v1alpha1"
MANAGED_BY = "k8s-nim-operator"
MODEL_STORE = "/model-store"
REVISION_ANNOTATION = "dpo.ai/revision"  # what the local executor restarts a Deployment's server on
CRD_DIR = Path(__file__).parent / "vendor" / "nim_operator"


def nim_operator_crds() -> list[dict[str, Any]]:
    """The NIM Operator's own CRDs (NIMService, NIMCache), vendored unmodified."""
    return [yaml.safe_load(path.read_text()) for path in sorted(CRD_DIR.glob("*.yaml"))]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _model_volume(namespace: str, spec: dict[str, Any], custom: Any) -> dict[str, Any]:
    storage = spec.get("storage") or {}
    if (cache := (storage.get("nimCache") or {}).get("name")):
        status = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "nimcaches", cache).get("status") or {}
        return {"persistentVolumeClaim": {"claimName": status.get("pvc") or f"{cache}-pvc"}}
    if (pvc := storage.get("pvc") or {}).get("name") or pvc.get("create"):
        return {"persistentVolumeClaim": {"claimName": pvc.get("name") or "", "readOnly": bool(storage.get("readOnly"))}}
    return {"emptyDir": storage.get("emptyDir") or {}}


def deployment_for(service: dict[str, Any], custom: Any) -> dict[str, Any]:
    """The Deployment the NIM Operator renders for a standalone NIMService (the parts a local server needs)."""
    meta, spec = service["metadata"], service["spec"]
    name, namespace = meta["name"], meta["namespace"]
    port = int(((spec.get("expose") or {}).get("service") or {}).get("port") or 8000)
    env = [{"name": "NIM_CACHE_PATH", "value": MODEL_STORE}, {"name": "NIM_SERVER_PORT", "value": str(port)},
           {"name": "NIM_HTTP_API_PORT", "value": str(port)}]
    if spec.get("authSecret"):
        env.append({"name": "NGC_API_KEY", "valueFrom": {"secretKeyRef": {"name": spec["authSecret"], "key": "NGC_API_KEY"}}})
    env += spec.get("env") or []
    image = spec["image"]
    labels = {"app": name, "app.kubernetes.io/name": name, "app.kubernetes.io/instance": name,
              "app.kubernetes.io/part-of": "nim-service", "app.kubernetes.io/managed-by": MANAGED_BY}
    shm = (spec.get("storage") or {}).get("sharedMemorySizeLimit")
    revision = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    replicas = spec.get("replicas", 1) if not ((spec.get("scale") or {}).get("enabled")) else \
        (spec["scale"].get("hpa") or {}).get("minReplicas", 1)
    container = {"name": name, "image": f"{image['repository']}:{image['tag']}", "env": env,
                 "ports": [{"name": "api", "containerPort": port}],
                 "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "model-store", "mountPath": MODEL_STORE}]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if (spec.get(probe) or {}).get("probe"):
            container[probe] = spec[probe]["probe"]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": {REVISION_ANNOTATION: revision},
                     "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "NIMService", "name": name,
                                          "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {**labels, **(spec.get("labels") or {})},
                                           "annotations": {REVISION_ANNOTATION: revision}},
                              "spec": {"containers": [container], "volumes": [
                                  {"name": "dshm", "emptyDir": {"medium": "Memory", **({"sizeLimit": shm} if shm else {})}},
                                  {"name": "model-store", **_model_volume(namespace, spec, custom)}]}}},
    }


class NimOperatorStandIn:
    """Polls NIMServices and plays their controller until stopped."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str | None = None, poll_seconds: float = 0.2) -> None:
        self.api = api
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.apps = kubernetes.client.AppsV1Api(api)
        self.core = kubernetes.client.CoreV1Api(api)
        self.namespace = namespace
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="nim-operator-stand-in", daemon=True)

    def __enter__(self) -> "NimOperatorStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                listed = (self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, "nimservices")
                          if self.namespace else self.custom.list_cluster_custom_object(GROUP, VERSION, "nimservices"))
                for service in listed["items"]:
                    if not service["metadata"].get("deletionTimestamp"):
                        self.reconcile(service)
            except Exception:  # noqa: BLE001  (a dev tool: keep polling through API hiccups)
                log.exception("NIM Operator stand-in: reconcile failed")
            self._stop.wait(self.poll_seconds)

    def reconcile(self, service: dict[str, Any]) -> None:
        namespace = service["metadata"]["namespace"]
        wanted = deployment_for(service, self.custom)
        current = self._apply_deployment(namespace, wanted)
        self._apply_service(service, wanted)
        self._report(service, wanted, current)

    def _apply_deployment(self, namespace: str, wanted: dict[str, Any]) -> dict[str, Any]:
        name = wanted["metadata"]["name"]
        try:
            current = self.api.sanitize_for_serialization(self.apps.read_namespaced_deployment(name, namespace))
        except ApiException as exc:
            if exc.status != 404:
                raise
            return self.api.sanitize_for_serialization(self.apps.create_namespaced_deployment(namespace, wanted))
        if current["metadata"].get("annotations", {}).get(REVISION_ANNOTATION) != wanted["metadata"]["annotations"][REVISION_ANNOTATION]:
            current["metadata"]["annotations"] = wanted["metadata"]["annotations"]
            current["spec"] = wanted["spec"]
            current = self.api.sanitize_for_serialization(self.apps.replace_namespaced_deployment(name, namespace, current))
        return current

    def _apply_service(self, service: dict[str, Any], deployment: dict[str, Any]) -> None:
        meta = service["metadata"]
        expose = (service["spec"].get("expose") or {}).get("service") or {}
        body = {"metadata": {"name": meta["name"], "labels": deployment["metadata"]["labels"],
                             "ownerReferences": deployment["metadata"]["ownerReferences"]},
                "spec": {"type": expose.get("type") or "ClusterIP", "selector": {"app": meta["name"]},
                         "ports": [{"name": "api", "port": int(expose.get("port") or 8000), "targetPort": "api"}]}}
        try:
            self.core.create_namespaced_service(meta["namespace"], body)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def _report(self, service: dict[str, Any], wanted: dict[str, Any], current: dict[str, Any]) -> None:
        """The NIM Operator's status: Ready once the Deployment of the current spec has all its replicas ready."""
        meta = service["metadata"]
        status = current.get("status") or {}
        desired = int(wanted["spec"]["replicas"])
        ready = (current["metadata"].get("annotations", {}).get(REVISION_ANNOTATION)
                 == wanted["metadata"]["annotations"][REVISION_ANNOTATION]
                 and int(status.get("observedGeneration") or 0) >= int(current["metadata"].get("generation") or 0)
                 and int(status.get("updatedReplicas") or 0) >= desired > 0
                 and int(status.get("readyReplicas") or 0) >= desired)
        state = "Ready" if ready else "NotReady"
        old = service.get("status") or {}
        if old.get("state") == state and int(old.get("availableReplicas") or 0) == int(status.get("availableReplicas") or 0):
            return
        message = "Deployment is ready" if ready else (
            f"Waiting for deployment {meta['name']!r} rollout to finish: {status.get('readyReplicas') or 0} of "
            f"{desired} updated replicas are available...")
        env = {e["name"]: e.get("value") for e in service["spec"].get("env") or []}
        cluster_ip = self.core.read_namespaced_service(meta["name"], meta["namespace"]).spec.cluster_ip
        port = wanted["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
        new = {"state": state, "availableReplicas": int(status.get("availableReplicas") or 0),
               "conditions": [
                   {"type": "Ready", "status": "True" if ready else "False",
                    "reason": "Ready" if ready else "NotReady", "message": message, "lastTransitionTime": _now()},
                   {"type": "Failed", "status": "False", "reason": "Ready" if ready else "NotReady", "message": "",
                    "lastTransitionTime": _now()}],
               "model": {"name": env.get("NIM_SERVED_MODEL_NAME") or meta["name"],
                         "clusterEndpoint": f"{cluster_ip}:{port}", "externalEndpoint": ""}}
        try:
            self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, meta["namespace"], "nimservices",
                                                              meta["name"], {"status": new})
        except ApiException as exc:
            if exc.status != 404:
                raise
