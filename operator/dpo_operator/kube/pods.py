"""Pod specs from the PodOptions every kind shares (image, resources, scheduling, env...)."""

from __future__ import annotations

import os
from typing import Any

from dpo_operator.api.common import PodOptions, PvcLocation, SecretKeyRef
from dpo_operator.config import OperatorConfig
from dpo_operator.kube.pss import violations
from dpo_operator.api.reasons import Reason
from dpo_operator.kube.secrets import DESTINATIONS_ANNOTATION, destinations_annotation


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


class WorkloadNotAllowed(Exception):
    """A template asks for more than the operator's administrator lets workloads have: the resource fails with
    ``reason`` (no retry helps until the spec or the chart changes)."""

    reason = Reason.WorkloadNotAllowed


class ServiceAccountNotAllowed(WorkloadNotAllowed):
    """``template.serviceAccountName`` names an account the operator was not configured to let workloads use."""

    reason = Reason.ServiceAccountNotAllowed


class PodSecurityNotAllowed(WorkloadNotAllowed):
    """The pod (with the template's securityContext overrides) breaks the configured Pod Security level."""

    reason = Reason.PodSecurityNotAllowed


class EnvNotAllowed(WorkloadNotAllowed):
    """``template.env`` sets a variable the operator sets itself (the spec, a key's destination...)."""

    reason = Reason.EnvNotAllowed


class SchedulingNotAllowed(WorkloadNotAllowed):
    """``template.tolerations`` or ``template.nodeSelector`` reach nodes the administrator did not allow."""

    reason = Reason.SchedulingNotAllowed


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


def _allows(allowed: tuple[str, ...], key: str, value: str | None) -> bool:
    return "*" in allowed or (bool(key) and (key in allowed or (value is not None and f"{key}={value}" in allowed)))


def check_scheduling(options: PodOptions, config: OperatorConfig) -> None:
    """Tolerations and node selectors only from the administrator's allow-lists: a toleration without a key
    tolerates every taint (the control plane's included), so it needs ``*``."""
    refused = [f"nodeSelector {key}={value}" for key, value in (options.node_selector or {}).items()
               if not _allows(config.allowed_node_selectors, key, value)]
    for toleration in options.tolerations or []:
        key, value = str(toleration.get("key") or ""), toleration.get("value")
        if not _allows(config.allowed_tolerations, key, None if value is None else str(value)):
            refused.append(f"toleration {key or '(any taint)'}" + (f"={value}" if value is not None else ""))
    if refused:
        raise SchedulingNotAllowed(
            f"template asks for {', '.join(refused)}, which the operator's administrator does not allow (allowed "
            f"toleration keys: {', '.join(config.allowed_tolerations) or 'none'}; node selector labels: "
            f"{', '.join(config.allowed_node_selectors) or 'none'}); remove them, or ask for them to be added to "
            "the chart values workloads.allowedTolerations / workloads.allowedNodeSelectors")


def check_pod_security(spec: dict[str, Any], config: OperatorConfig) -> None:
    """The whole pod, template overrides included, against the configured Pod Security Standard level."""
    found = violations(spec, config.pod_security_level)
    if found:
        raise PodSecurityNotAllowed(
            f"the pod would break the {config.pod_security_level!r} Pod Security Standard, the most the operator's "
            f"administrator allows: {'; '.join(found)}. Change template.securityContext / "
            "template.containerSecurityContext (or leave them unset for the compliant defaults), or ask for the "
            "chart value workloads.podSecurityLevel")


def container(options: PodOptions, *, name: str, default_image: str, command: list[str],
              env: list[dict[str, Any]] = (), volume_mounts: list[dict[str, Any]] = (),
              **extra: Any) -> dict[str, Any]:
    ours = {var["name"] for var in env}
    clashes = sorted(ours & {var.name for var in options.env or []})
    if clashes:  # the later one would win: the pod would not run what the spec (and its Secret checks) say
        raise EnvNotAllowed(f"template.env sets {', '.join(clashes)}, which the operator sets itself; remove them")
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
             restart_policy: str = "Never", uid: int = WORKLOAD_UID, config: OperatorConfig,
             **extra: Any) -> dict[str, Any]:
    """The pod spec, checked against the administrator's policy (``config``: the operator's, loaded at start-up)."""
    check_service_account(options)
    check_scheduling(options, config)
    spec: dict[str, Any] = {"restartPolicy": restart_policy, "containers": containers,
                            # workloads never talk to the API: no token in their pods
                            "automountServiceAccountToken": False,
                            "securityContext": dict(options.security_context or default_pod_security_context(uid))}
    if volumes:
        spec["volumes"] = list(volumes)
    if options.image_pull_secrets:
        spec["imagePullSecrets"] = [s.to_api() for s in options.image_pull_secrets]
    for field, key in (("node_selector", "nodeSelector"), ("tolerations", "tolerations"), ("affinity", "affinity"),
                       ("priority_class_name", "priorityClassName"), ("service_account_name", "serviceAccountName"),
                       ("termination_grace_period_seconds", "terminationGracePeriodSeconds")):
        value = getattr(options, field)
        if value or (value == 0 and field == "termination_grace_period_seconds"):
            spec[key] = value
    spec.update(extra)
    check_pod_security(spec, config)
    return spec


def pod_metadata(options: PodOptions, labels: dict[str, str],
                 secret_destinations: dict[str, str | None] | None = None) -> dict[str, Any]:
    """Labels and annotations of a pod template; ``secret_destinations`` (env var -> the URL the pod sends that
    Secret to) becomes the annotation the Secret check reads, which a template cannot set."""
    annotations = {k: v for k, v in (options.annotations or {}).items() if k != DESTINATIONS_ANNOTATION}
    annotations.update(destinations_annotation(secret_destinations or {}))
    meta: dict[str, Any] = {"labels": {**(options.labels or {}), **labels}}
    if annotations:
        meta["annotations"] = annotations
    return meta
