"""Server-side printing: ``Accept: application/json;as=Table;g=meta.k8s.io;v=v1`` answers a ``Table``.

Custom resources get their CRD's ``additionalPrinterColumns`` (``priority`` > 0 only with ``-o wide``); the
built-in kinds get the columns kube-apiserver prints for them.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

from dpo_operator.kubeemu.registry import Served

NAME_COLUMN = {"name": "Name", "type": "string", "format": "name", "priority": 0,
               "description": "Name must be unique within a namespace."}
AGE_COLUMN = {"name": "Age", "type": "string", "format": "", "priority": 0,
              "description": "CreationTimestamp is a timestamp representing the server time when this object was created."}


def wants_table(accept: str) -> str | None:
    for part in accept.split(","):
        params = dict(p.strip().split("=", 1) for p in part.split(";")[1:] if "=" in p)
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io" and params.get("v") in ("v1", "v1beta1"):
            return params["v"]
    return None


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    minutes, hours, days = s // 60, s // 3600, s // 86400
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 192:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y{days % 365}d" if days < 365 * 8 else f"{days // 365}y"


def age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    when = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return human_duration((datetime.datetime.now(tz=datetime.UTC) - when).total_seconds())


_STEP = re.compile(r"\.([A-Za-z0-9_\-$]+)|\[(\d+)\]|\['([^']*)'\]|\[\?\(@\.([A-Za-z0-9_.]+)\s*==\s*[\"']([^\"']*)[\"']\)\]")


def json_path(obj: Any, path: str) -> Any:
    """The value of a printer column's simple JSONPath (``.a.b``, ``[0]``, ``['k']``, ``[?(@.type=="X")]``)."""
    node = obj
    position = 0
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    while position < len(path) and node is not None:
        step = _STEP.match(path, position)
        if step is None:
            return None
        key, index, quoted, filter_key, filter_value = step.groups()
        if key is not None or quoted is not None:
            node = node.get(key if key is not None else quoted) if isinstance(node, dict) else None
        elif index is not None:
            node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
        else:
            node = next((item for item in node or [] if isinstance(item, dict)
                         and str(json_path(item, "." + filter_key)) == filter_value), None) \
                if isinstance(node, list) else None
        position = step.end()
    return node


def _cell(column: dict[str, Any], value: Any) -> Any:
    if value is None:
        return None
    if column.get("type") == "date":
        return age(str(value))
    if column.get("type") == "integer" and isinstance(value, (int, float)):
        return int(value)
    if column.get("type") == "string" and not isinstance(value, str):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return value


def _custom_columns(res: Served) -> tuple[list[dict[str, Any]], Callable[[dict[str, Any]], list[Any]]]:
    printer = res.printer_columns or [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
    columns = [NAME_COLUMN] + [
        {"name": c["name"], "type": c.get("type", "string"), "format": c.get("format", ""),
         "description": c.get("description", ""), "priority": c.get("priority", 0)} for c in printer]

    def cells(obj: dict[str, Any]) -> list[Any]:
        return [obj["metadata"]["name"]] + [_cell(c, json_path(obj, c["jsonPath"])) for c in printer]

    return columns, cells


def _col(name: str, priority: int = 0, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "type": kind, "format": "", "description": "", "priority": priority}


def _ready(obj: dict[str, Any]) -> str:
    statuses = (obj.get("status") or {}).get("containerStatuses") or []
    containers = ((obj.get("spec") or {}).get("containers")) or []
    return f"{sum(1 for s in statuses if s.get('ready'))}/{len(containers)}"


def _condition(obj: dict[str, Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in (obj.get("status") or {}).get("conditions") or [])


def pod_status(obj: dict[str, Any]) -> str:
    """The STATUS column of ``kubectl get pods`` (printPod in pkg/printers/internalversion/printers.go): the
    pod's reason, else the last container's waiting/terminated reason (``Completed``, ``Error``), else the phase;
    ``Terminating`` once deleted."""
    status = obj.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Pending"
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        if (waiting := state.get("waiting")) and waiting.get("reason"):
            reason = waiting["reason"]
        elif (terminated := state.get("terminated")) is not None:
            reason = terminated.get("reason") or (f"Signal:{terminated['signal']}" if terminated.get("signal")
                                                  else f"ExitCode:{terminated.get('exitCode', 0)}")
    if obj.get("metadata", {}).get("deletionTimestamp"):
        reason = "Terminating"
    return str(reason)


def _pod_template(obj: dict[str, Any]) -> dict[str, Any]:
    return ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}


def _containers(obj: dict[str, Any]) -> str:
    return ",".join(c.get("name", "") for c in _pod_template(obj).get("containers") or [])


def _images(obj: dict[str, Any]) -> str:
    return ",".join(c.get("image", "") for c in _pod_template(obj).get("containers") or [])


def _selector(obj: dict[str, Any]) -> str:
    """A LabelSelector as kubectl prints it (``<none>`` when empty)."""
    selector = (obj.get("spec") or {}).get("selector") or {}
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        terms.append(f"{expr['key']} {expr['operator'].lower()} ({','.join(expr.get('values') or [])})")
    return ",".join(terms) or "<none>"


def _job_duration(obj: dict[str, Any]) -> str:
    """completionTime - startTime when complete, else now - startTime (printJob); empty before it started."""
    status = obj.get("status") or {}
    if not status.get("startTime"):
        return ""
    start = datetime.datetime.fromisoformat(status["startTime"].replace("Z", "+00:00"))
    end = (datetime.datetime.fromisoformat(status["completionTime"].replace("Z", "+00:00"))
           if status.get("completionTime") else datetime.datetime.now(tz=datetime.UTC))
    return human_duration((end - start).total_seconds())


def _job_status(obj: dict[str, Any]) -> str:
    for kind, shown in (("Complete", "Complete"), ("Failed", "Failed"), ("Suspended", "Suspended")):
        if _condition(obj, kind):
            return shown
    return "Running"


def _ports(obj: dict[str, Any]) -> str:
    ports = (obj.get("spec") or {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


_BUILTIN: dict[str, list[tuple[dict[str, Any], Callable[[dict[str, Any]], Any]]]] = {
    "Namespace": [(_col("Status"), lambda o: (o.get("status") or {}).get("phase", "Active"))],
    "Pod": [(_col("Ready"), _ready), (_col("Status"), pod_status),
            (_col("Restarts", kind="string"), lambda o: str(sum(s.get("restartCount", 0) for s in
                                                                 (o.get("status") or {}).get("containerStatuses") or []))),
            (_col("IP", 1), lambda o: (o.get("status") or {}).get("podIP", "<none>")),
            (_col("Node", 1), lambda o: (o.get("spec") or {}).get("nodeName", "<none>"))],
    "Service": [(_col("Type"), lambda o: (o.get("spec") or {}).get("type", "ClusterIP")),
                (_col("Cluster-IP"), lambda o: (o.get("spec") or {}).get("clusterIP", "<none>")),
                (_col("External-IP"), lambda o: "<none>"), (_col("Port(s)"), _ports),
                (_col("Selector", 1), lambda o: ",".join(f"{k}={v}" for k, v in
                                                       ((o.get("spec") or {}).get("selector") or {}).items()) or "<none>")],
    "ConfigMap": [(_col("Data", kind="integer"), lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {}))],
    "Secret": [(_col("Type"), lambda o: o.get("type", "Opaque")), (_col("Data", kind="integer"), lambda o: len(o.get("data") or {}))],
    "PersistentVolumeClaim": [
        (_col("Status"), lambda o: (o.get("status") or {}).get("phase", "Pending")),
        (_col("Volume"), lambda o: (o.get("spec") or {}).get("volumeName", "")),
        (_col("Capacity"), lambda o: ((o.get("status") or {}).get("capacity") or {}).get("storage", "")),
        (_col("Access Modes"), lambda o: ",".join({"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX",
                                                   "ReadWriteOncePod": "RWOP"}.get(m, m)
                                                  for m in (o.get("status") or {}).get("accessModes") or [])),
        (_col("StorageClass"), lambda o: (o.get("spec") or {}).get("storageClassName") or "<unset>"),
        (_col("VolumeAttributesClass"), lambda o: (o.get("spec") or {}).get("volumeAttributesClassName") or "<unset>"),
        (_col("VolumeMode", 1), lambda o: (o.get("spec") or {}).get("volumeMode", "Filesystem"))],
    "ServiceAccount": [(_col("Secrets", kind="integer"), lambda o: len(o.get("secrets") or []))],
    "Job": [(_col("Status"), _job_status),
            (_col("Completions"), lambda o: f"{(o.get('status') or {}).get('succeeded', 0)}/"
                                            f"{(o.get('spec') or {}).get('completions', 1)}"),
            (_col("Duration"), _job_duration),
            (_col("Containers", 1), _containers), (_col("Images", 1), _images), (_col("Selector", 1), _selector)],
    "Deployment": [(_col("Ready"), lambda o: f"{(o.get('status') or {}).get('readyReplicas', 0)}/"
                                             f"{(o.get('spec') or {}).get('replicas', 1)}"),
                   (_col("Up-to-date", kind="integer"), lambda o: (o.get("status") or {}).get("updatedReplicas", 0)),
                   (_col("Available", kind="integer"), lambda o: (o.get("status") or {}).get("availableReplicas", 0)),
                   (_col("Containers", 1), _containers), (_col("Images", 1), _images),
                   (_col("Selector", 1), _selector)],
    "Lease": [(_col("Holder"), lambda o: (o.get("spec") or {}).get("holderIdentity", ""))],
}


def _subjects(kind: str) -> Callable[[dict[str, Any]], str]:
    """kubectl's ``SubjectsStrings``: the binding's subjects of one kind (service accounts as namespace/name)."""
    def cell(o: dict[str, Any]) -> str:
        subjects = [s for s in o.get("subjects") or [] if s.get("kind") == kind]
        return ", ".join(f"{s['namespace']}/{s.get('name', '')}" if kind == "ServiceAccount" and s.get("namespace")
                         else s.get("name", "") for s in subjects)
    return cell


def _binding_columns() -> tuple[list[dict[str, Any]], Callable[[dict[str, Any]], list[Any]]]:
    """RoleBinding and ClusterRoleBinding: NAME, ROLE, AGE, and with ``-o wide`` USERS, GROUPS, SERVICEACCOUNTS."""
    columns = [NAME_COLUMN, _col("Role"), AGE_COLUMN, _col("Users", 1), _col("Groups", 1), _col("ServiceAccounts", 1)]

    def cells(o: dict[str, Any]) -> list[Any]:
        ref = o.get("roleRef") or {}
        return [o["metadata"]["name"], f"{ref.get('kind', '')}/{ref.get('name', '')}",
                age(o["metadata"].get("creationTimestamp")),
                _subjects("User")(o), _subjects("Group")(o), _subjects("ServiceAccount")(o)]

    return columns, cells


def _event_columns() -> tuple[list[dict[str, Any]], Callable[[dict[str, Any]], list[Any]]]:
    columns = [_col("Last Seen"), _col("Type"), _col("Reason"), _col("Object"), _col("Message")]

    def cells(o: dict[str, Any]) -> list[Any]:
        regarding = o.get("involvedObject") or o.get("regarding") or {}
        when = o.get("lastTimestamp") or o.get("eventTime") or o.get("metadata", {}).get("creationTimestamp")
        return [age(when), o.get("type", ""), o.get("reason", ""),
                f"{str(regarding.get('kind', '')).lower()}/{regarding.get('name', '')}", o.get("message") or o.get("note", "")]

    return columns, cells


def _builtin_columns(res: Served) -> tuple[list[dict[str, Any]], Callable[[dict[str, Any]], list[Any]]]:
    if res.kind == "Event":
        return _event_columns()
    if res.kind in ("RoleBinding", "ClusterRoleBinding"):
        return _binding_columns()
    if res.kind in ("CustomResourceDefinition", "ClusterRole", "Role"):
        return [NAME_COLUMN, _col("Created At")], lambda o: [o["metadata"]["name"], o["metadata"].get("creationTimestamp")]
    extra = _BUILTIN.get(res.kind, [])
    shown = [(c, fn) for c, fn in extra if not c["priority"]]  # AGE comes after these, before the -o wide ones
    wide = [(c, fn) for c, fn in extra if c["priority"]]
    columns = [NAME_COLUMN] + [c for c, _ in shown] + [AGE_COLUMN] + [c for c, _ in wide]
    return columns, lambda o: ([o["metadata"]["name"]] + [fn(o) for _, fn in shown]
                               + [age(o["metadata"].get("creationTimestamp"))] + [fn(o) for _, fn in wide])


def table(res: Served, objects: list[dict[str, Any]], *, include_object: str, version: str,
          resource_version: str | None = None) -> dict[str, Any]:
    """A ``meta.k8s.io`` Table of the objects; rows carry the object, its metadata (the default) or nothing."""
    columns, cells = _custom_columns(res) if res.custom else _builtin_columns(res)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": cells(obj)}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": f"meta.k8s.io/{version}",
                             "metadata": obj.get("metadata", {})}
        rows.append(row)
    meta = {"resourceVersion": resource_version} if resource_version else {}
    return {"kind": "Table", "apiVersion": f"meta.k8s.io/{version}", "metadata": meta,
            "columnDefinitions": columns, "rows": rows}
