"""The Pod Security Standards' "restricted" profile (Kubernetes v1.30, which includes "baseline"), as a checker:
https://kubernetes.io/docs/concepts/security/pod-security-standards/ — each rule below names the control there.
Answers the violations of a pod spec, the way the PodSecurity admission plugin words its refusal.

The operator checks every pod it launches against the level the cluster admin chose (chart value
``workloads.podSecurityLevel``), so a user who may create our resources but not pods gets no pod the namespace's
Pod Security admission would refuse (or, where none is enforced, no privileged pod)."""

from __future__ import annotations

from typing import Any

BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                         "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                      "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}


LEVELS = ("restricted", "baseline", "privileged")


def violations(pod: dict[str, Any], level: str = "restricted") -> list[str]:
    """What the pod spec breaks of ``level`` ("privileged" allows everything)."""
    if level not in LEVELS:
        raise ValueError(f"unknown Pod Security level {level!r} (one of {', '.join(LEVELS)})")
    if level == "privileged":
        return []
    restricted = level == "restricted"
    found: list[str] = []
    pod_ctx = pod.get("securityContext") or {}
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or []),
                  *(pod.get("ephemeralContainers") or [])]
    # baseline
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            found.append(f"host namespaces ({field}=true)")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            found.append(f"hostPath volumes ({volume['name']})")
        if restricted and not kinds <= RESTRICTED_VOLUMES:
            found.append(f"restricted volume types ({volume['name']}: {', '.join(sorted(kinds))})")
    for sysctl in pod_ctx.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            found.append(f"forbidden sysctls ({sysctl.get('name')})")
    pod_seccomp = (pod_ctx.get("seccompProfile") or {}).get("type")
    pod_non_root = pod_ctx.get("runAsNonRoot")
    if restricted and pod_ctx.get("runAsUser") == 0:
        found.append("runAsUser=0 (pod)")
    if pod_seccomp is not None and pod_seccomp not in ("RuntimeDefault", "Localhost") \
            and (restricted or pod_seccomp == "Unconfined"):  # a pod-level value counts even when containers set theirs
        found.append(f"seccompProfile (pod: {pod_seccomp})")
    for c in containers:
        ctx = c.get("securityContext") or {}
        name = c.get("name")
        if ctx.get("privileged"):
            found.append(f"privileged ({name})")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                found.append(f"hostPort ({name})")
        if (ctx.get("procMount") or "Default") != "Default":
            found.append(f"procMount ({name})")
        caps = ctx.get("capabilities") or {}
        if set(caps.get("add") or []) - BASELINE_CAPABILITIES:
            found.append(f"non-default capabilities: adds {sorted(set(caps['add']) - BASELINE_CAPABILITIES)} ({name})")
        for option in ("seLinuxOptions", "appArmorProfile"):
            if _unsafe_option(option, ctx.get(option)) or _unsafe_option(option, pod_ctx.get(option)):
                found.append(f"{option} ({name})")
        if not restricted:
            if (ctx.get("seccompProfile") or {}).get("type", pod_seccomp) == "Unconfined":
                found.append(f"seccompProfile ({name}: Unconfined)")
            continue
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"allowPrivilegeEscalation != false ({name})")
        if "ALL" not in (caps.get("drop") or []):
            found.append(f"unrestricted capabilities: must drop ALL ({name})")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"unrestricted capabilities: adds {sorted(set(caps['add']) - {'NET_BIND_SERVICE'})} ({name})")
        non_root = ctx.get("runAsNonRoot", pod_non_root)
        if non_root is not True:
            found.append(f"runAsNonRoot != true ({name})")
        if ctx.get("runAsUser") == 0:
            found.append(f"runAsUser=0 ({name})")
        seccomp = (ctx.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"seccompProfile ({name}: {seccomp})")
    return found


def _unsafe_option(option: str, value: Any) -> bool:
    """Baseline: SELinux options may set only the container types and level; AppArmor only the runtime default
    or a localhost profile."""
    if not value:
        return False
    if option == "seLinuxOptions":
        return bool(value.get("user") or value.get("role")) or value.get("type", "") not in (
            "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t")
    return value.get("type") not in ("RuntimeDefault", "Localhost")
