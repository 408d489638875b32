"""What kube-apiserver's defaulting adds to the built-in kinds the emulator serves, and which kinds count generations.

The OpenAPI that kubernetes-validate ships carries no defaults, so these are written from the Kubernetes 1.32
source: ``pkg/apis/core/v1/defaults.go`` (``SetDefaults_Pod``, ``_PodSpec``, ``_Container``, ``_Probe``,
``_Secret``, ``_SecretVolumeSource``, ``_ConfigMapVolumeSource``, ``_PersistentVolumeClaimSpec``...),
``pkg/apis/apps/v1/defaults.go`` (``SetDefaults_Deployment``), ``pkg/apis/batch/v1/defaults.go``
(``SetDefaults_Job``), and the Job strategy's ``generateSelector`` (``pkg/registry/batch/job/strategy.go``).
Defaulting runs on every write, so each default only fills what is unset.
"""

from __future__ import annotations

from typing import Any

from dpo_operator.kubeemu.registry import Served

# Kinds whose strategy sets metadata.generation (PrepareForCreate: Generation = 1, bumped on spec changes); every
# custom resource has one too. ConfigMaps, Secrets, Services, Pods (1.32), Namespaces... have none.
_GENERATION = {("apps", "Deployment"), ("apps", "StatefulSet"), ("apps", "ReplicaSet"), ("apps", "DaemonSet"),
               ("batch", "Job"), ("batch", "CronJob"), ("apiextensions.k8s.io", "CustomResourceDefinition"),
               ("networking.k8s.io", "NetworkPolicy"), ("networking.k8s.io", "Ingress"),
               ("policy", "PodDisruptionBudget"), ("autoscaling", "HorizontalPodAutoscaler")}


def has_generation(served: Served) -> bool:
    return served.custom or (served.group, served.kind) in _GENERATION


def _probe(probe: dict[str, Any] | None) -> None:
    if not probe:
        return
    for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)):
        probe.setdefault(key, value)
    if "httpGet" in probe:
        probe["httpGet"].setdefault("path", "/")
        probe["httpGet"].setdefault("scheme", "HTTP")


def _image_pull_policy(image: str) -> str:
    """``Always`` for ``:latest`` or no tag (and no digest), ``IfNotPresent`` otherwise."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else "latest"
    return "Always" if tag == "latest" else "IfNotPresent"


def _container(container: dict[str, Any]) -> None:
    container.setdefault("imagePullPolicy", _image_pull_policy(container.get("image", "")))
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for var in container.get("env") or []:
        field_ref = (var.get("valueFrom") or {}).get("fieldRef")
        if field_ref is not None:
            field_ref.setdefault("apiVersion", "v1")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(container.get(probe))


def _volume(volume: dict[str, Any]) -> None:
    for source in ("secret", "configMap", "downwardAPI", "projected"):
        if isinstance(volume.get(source), dict):
            volume[source].setdefault("defaultMode", 420)
    if "hostPath" in volume:
        volume["hostPath"].setdefault("type", "")
    if volume.keys() == {"name"}:  # no source at all: an emptyDir
        volume["emptyDir"] = {}


def pod_spec(spec: dict[str, Any], *, restart_policy: str = "Always") -> None:
    spec.setdefault("restartPolicy", restart_policy)
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        _container(container)
    for volume in spec.get("volumes") or []:
        _volume(volume)


def _template(obj: dict[str, Any], restart_policy: str = "Always") -> None:
    template = (obj.get("spec") or {}).get("template")
    if isinstance(template, dict):
        pod_spec(template.setdefault("spec", {}), restart_policy=restart_policy)


def _deployment(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _template(obj)


def _job(obj: dict[str, Any], creating: bool) -> None:
    spec = obj.setdefault("spec", {})
    completions = spec.get("completions")
    spec.setdefault("parallelism", 1)
    if completions is None and spec.get("parallelism") == 1:
        spec["completions"] = 1
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    if "podFailurePolicy" not in spec:
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    _template(obj, restart_policy="Never")
    if creating and not spec.get("manualSelector"):
        uid, name = obj["metadata"]["uid"], obj["metadata"]["name"]
        labels = spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
        labels.update({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                       "controller-uid": uid, "job-name": name})
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}


def apply(served: Served, obj: dict[str, Any], *, creating: bool) -> None:
    """Fill in the defaults kube-apiserver gives a built-in object (in place)."""
    if served.custom:
        return
    kind = (served.group, served.kind)
    if kind == ("", "Secret"):
        obj.setdefault("type", "Opaque")
    elif kind == ("", "Pod"):
        pod_spec(obj.setdefault("spec", {}))
        if creating:
            obj["spec"].setdefault("serviceAccountName", "default")  # the ServiceAccount admission plugin
            obj["spec"].setdefault("priority", 0)  # the Priority admission plugin
    elif kind == ("", "PersistentVolumeClaim"):
        obj.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
    elif kind == ("apps", "Deployment"):
        _deployment(obj)
    elif kind == ("batch", "Job"):
        _job(obj, creating)
