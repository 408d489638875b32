"""Pod specs from the PodOptions every kind shares (image, resources, scheduling, env...)."""

from __future__ import annotations

import os
from typing import Any

from dpo_operator.api.common import PodOptions, PvcLocation, SecretKeyRef


def secret_env(name: str, ref: SecretKeyRef | None) -> list[dict[str, Any]]:
    """An env var filled from a Secret by the kubelet: the value never passes through the operator."""
    if ref is None:
        return []
    return [{"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def pvc_volume(volume_name: str, location: PvcLocation, read_only: bool = False) -> dict[str, Any]:
    return {"name": volume_name, "persistentVolumeClaim": {"claimName": location.claim_name, "readOnly": read_only}}


WORKLOAD_UID = 65532  # the user of docker/workload.Dockerfile
NIM_UID = 1000        # the user NIM containers expect (NVIDIA's nim-llm chart runs them as 1000:1000)


def default_pod_security_context(uid: int) -> dict[str, Any]:
    """Meets the 'restricted' Pod Security Standard; fsGroup makes PVCs writable for the uid."""
    return {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": uid, "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"}}


DEFAULT_CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
ALLOWED_SERVICE_ACCOUNTS_ENV = "DPO_ALLOWED_SERVICE_ACCOUNTS"


class ServiceAccountNotAllowed(Exception):
    """``template.serviceAccountName`` names an account the operator was not configured to let workloads use."""

    reason = "ServiceAccountNotAllowed"


def allowed_service_accounts() -> set[str]:
    """What the chart's ``workloads.allowedServiceAccounts`` lists (comma-separated in the environment)."""
    return {name.strip() for name in os.environ.get(ALLOWED_SERVICE_ACCOUNTS_ENV, "").split(",") if name.strip()}


def check_service_account(options: PodOptions) -> None:
    name = options.service_account_name
    if name and name != "default" and name not in allowed_service_accounts():
        allowed = ", ".join(sorted(allowed_service_accounts())) or "none besides default"
        raise ServiceAccountNotAllowed(
            f"template.serviceAccountName {name!r} is not allowed for workloads (allowed: {allowed}); remove it, or "
            "ask the operator's administrator to add it to the chart value workloads.allowedServiceAccounts")


def container(options: PodOptions, *, name: str, default_image: str, command: list[str],
              env: list[dict[str, Any]] = (), volume_mounts: list[dict[str, Any]] = (),
              **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "image": options.image or default_image,
        "imagePullPolicy": options.image_pull_policy,
        "command": command,
        "env": [*env, *(e.to_api() for e in options.env or [])],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": dict(options.container_security_context or DEFAULT_CONTAINER_SECURITY_CONTEXT),
    }
    if options.env_from:
        spec["envFrom"] = list(options.env_from)
    if options.resources is not None:  # quantities travel as strings ("1", "16Gi")
        spec["resources"] = {kind: {name: str(q) for name, q in values.items()}
                             for kind, values in options.resources.to_api().items()}
    if volume_mounts:
        spec["volumeMounts"] = list(volume_mounts)
    spec.update(extra)
    return spec


def pod_spec(options: PodOptions, containers: list[dict[str, Any]], *, volumes: list[dict[str, Any]] = (),
             restart_policy: str = "Never", uid: int = WORKLOAD_UID, **extra: Any) -> dict[str, Any]:
    check_service_account(options)
    spec: dict[str, Any] = {"restartPolicy": restart_policy, "containers": containers,
                            # workloads never talk to the API: no token in their pods
                            "automountServiceAccountToken": False,
                            "securityContext": dict(options.security_context or default_pod_security_context(uid))}
    if volumes:
        spec["volumes"] = list(volumes)
    if options.image_pull_secrets:
        spec["imagePullSecrets"] = [s.to_api() for s in options.image_pull_secrets]
    for field, key in (("node_selector", "nodeSelector"), ("tolerations", "tolerations"), ("affinity", "affinity"),
                       ("priority_class_name", "priorityClassName"), ("service_account_name", "serviceAccountName")):
        value = getattr(options, field)
        if value:
            spec[key] = value
    spec.update(extra)
    return spec


def pod_metadata(options: PodOptions, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": {**(options.labels or {}), **labels}}
    if options.annotations:
        meta["annotations"] = dict(options.annotations)
    return meta
