"""The subresources beyond ``status``: ``scale`` on the built-in workloads, ``pods/log`` from the files the local
executor writes, and a plain refusal for what a kubelet would stream (exec, attach, cp, port-forward)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dpo_operator.kubeemu.errors import error

STREAMED = ("exec", "attach", "portforward", "proxy")


def selector_string(selector: dict[str, Any] | None) -> str:
    """A LabelSelector as the string ``Scale.status.selector`` carries (``metav1.FormatLabelSelector``)."""
    if not selector:
        return ""
    if not {"matchLabels", "matchExpressions"} & selector.keys():  # a ReplicationController's plain map
        selector = {"matchLabels": selector}
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr["operator"], expr["key"], ",".join(sorted(expr.get("values") or []))
        terms.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": key,
                      "DoesNotExist": f"!{key}"}.get(op, key))
    return ",".join(terms)


def scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    """The ``autoscaling/v1`` Scale of a Deployment, StatefulSet or ReplicaSet."""
    meta = obj["metadata"]
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": selector_string((obj.get("spec") or {}).get("selector"))}}


def pod_log(log_root: Path | None, pod: dict[str, Any], params: Mapping[str, str]) -> tuple[bytes, int]:
    """A pod's output (``?tailLines=``, ``?limitBytes=``), read from ``<log_root>/<namespace>/<pod>/output.log``,
    and how far into the file that read went (where a follow goes on)."""
    meta = pod["metadata"]
    containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
    container = params.get("container") or (containers[0] if len(containers) == 1 else "")
    if not container:
        raise error(400, "BadRequest", f"a container name must be specified for pod {meta['name']}, choose one of: "
                                       f"[{' '.join(containers)}]")
    if container not in containers:
        raise error(400, "BadRequest", f"container {container} is not valid for pod {meta['name']}")
    path = None if log_root is None else log_root / meta["namespace"] / meta["name"] / "output.log"
    if path is None or not path.is_file():
        raise error(400, "BadRequest", f'container "{container}" in pod "{meta["name"]}" is waiting to start: '
                                       "ContainerCreating")
    data = path.read_bytes()
    end = len(data)
    if tail := params.get("tailLines"):
        lines = data.splitlines(keepends=True)
        data = b"".join(lines[-int(tail):]) if int(tail) > 0 else b""
    if limit := params.get("limitBytes"):
        data = data[:int(limit)]
    return data, end


def refuse_streaming(subresource: str, pod: dict[str, Any], log_root: Path | None) -> Exception:
    """What the dev cluster answers for exec/attach/cp/port-forward: where the local process and its files are."""
    meta = pod["metadata"]
    where = f"{log_root / meta['namespace'] / meta['name']}" if log_root is not None else "the executor's work directory"
    ports = [str(p["containerPort"]) for c in (pod.get("spec") or {}).get("containers") or []
             for p in c.get("ports") or [] if "containerPort" in p]
    if subresource == "portforward":
        listen = f"it listens on 127.0.0.1:{', 127.0.0.1:'.join(ports)}" if ports else "it listens on 127.0.0.1"
        return error(400, "BadRequest", f"port-forward is not emulated by the dpo dev cluster: pod {meta['name']} runs "
                                        f"as a local process on this machine and {listen}; connect there directly")
    verb = {"exec": "exec and cp are", "attach": "attach is", "proxy": "the proxy is"}[subresource]
    return error(400, "BadRequest", f"{verb} not emulated by the dpo dev cluster: pod {meta['name']} runs as a "
                                    f"local process on this machine; its working directory and output.log are in {where} "
                                    "(PVC volumes under pvc/ next to pods/)")
