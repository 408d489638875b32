"""What kube-apiserver checks on every built-in object before storing it: names, labels, resource quantities.

Messages follow k8s.io/apimachinery's validation (``a lowercase RFC 1123 subdomain must consist of ...``).
"""

from __future__ import annotations

import re
from typing import Any

from kubernetes.utils import parse_quantity

from dpo_operator.kubeemu.errors import Cause, invalid_value

_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")
DNS1123_LABEL = re.compile(_LABEL)
DNS1035_LABEL = re.compile("[a-z]([-a-z0-9]*[a-z0-9])?")
QUALIFIED_NAME = re.compile("([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
LABEL_VALUE = re.compile("(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
QUANTITY = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")

SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and "
                 "must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
                 r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start "
             "and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
             "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
DNS1035_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
               "character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for "
               "validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
QUALIFIED_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                 "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
                 "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
             "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
             "for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
QUANTITY_MSG = f"quantities must match the regular expression '{QUANTITY.pattern}'"

# kind -> (pattern, message, max length) of metadata.name; everything else is a DNS-1123 subdomain
_NAME_RULES = {"Namespace": (DNS1123_LABEL, LABEL_MSG, 63), "Service": (DNS1035_LABEL, DNS1035_MSG, 63)}


# kinds whose names are path segments (``ValidatePathSegmentName``): RBAC names may hold ':' (``system:...``)
PATH_SEGMENT_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}


def path_segment_causes(name: str, field: str) -> list[Cause]:
    if name in (".", ".."):
        return [invalid_value(field, name, f"may not be '{name}'")]
    return [invalid_value(field, name, f"may not contain '{bad}'") for bad in ("/", "%") if bad in name]


def name_causes(kind: str, name: str, field: str = "metadata.name") -> list[Cause]:
    if kind in PATH_SEGMENT_KINDS:
        return path_segment_causes(name, field)
    pattern, message, limit = _NAME_RULES.get(kind, (DNS1123_SUBDOMAIN, SUBDOMAIN_MSG, 253))
    causes = []
    if len(name) > limit:
        causes.append(invalid_value(field, name, f"must be no more than {limit} characters"))
    if not pattern.fullmatch(name):
        causes.append(invalid_value(field, name, message))
    return causes


def qualified_name_causes(key: str, field: str) -> list[Cause]:
    prefix, _, name = key.rpartition("/")
    causes = []
    if "/" in prefix:
        return [invalid_value(field, key, "a qualified name must consist of alphanumeric characters, '-', '_' or "
                                          "'.', with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')")]
    if prefix:
        if len(prefix) > 253:
            causes.append(invalid_value(field, key, "prefix part must be no more than 253 characters"))
        if not DNS1123_SUBDOMAIN.fullmatch(prefix):
            causes.append(invalid_value(field, key, "prefix part " + SUBDOMAIN_MSG))
    if not name:
        causes.append(invalid_value(field, key, "name part must be non-empty"))
    elif len(name) > 63:
        causes.append(invalid_value(field, key, "name part must be no more than 63 characters"))
    elif not QUALIFIED_NAME.fullmatch(name):
        causes.append(invalid_value(field, key, QUALIFIED_MSG))
    return causes


def label_causes(labels: Any, field: str) -> list[Cause]:
    causes: list[Cause] = []
    for key, value in (labels or {}).items():
        causes += qualified_name_causes(str(key), field)
        value = "" if value is None else str(value)
        if len(value) > 63:
            causes.append(invalid_value(field, value, "must be no more than 63 characters"))
        elif not LABEL_VALUE.fullmatch(value):
            causes.append(invalid_value(field, value, VALUE_MSG))
    return causes


def quantity_causes(resources: Any, field: str) -> list[Cause]:
    """``requests``/``limits`` must parse as quantities, be non-negative, and requests must not exceed limits."""
    causes: list[Cause] = []
    parsed: dict[str, dict[str, Any]] = {}
    for part in ("limits", "requests"):
        for name, value in ((resources or {}).get(part) or {}).items():
            where = f"{field}.{part}[{name}]"
            text = str(value)
            try:
                if not QUANTITY.match(text):
                    raise ValueError(text)
                amount = parse_quantity(text)
            except (ValueError, ArithmeticError):
                causes.append(invalid_value(where, text, QUANTITY_MSG))
                continue
            if amount < 0:
                causes.append(invalid_value(where, text, "must be greater than or equal to 0"))
            parsed.setdefault(part, {})[name] = (amount, text)
    for name, (amount, text) in parsed.get("requests", {}).items():
        limit = parsed.get("limits", {}).get(name)
        if limit is not None and amount > limit[0]:
            causes.append(invalid_value(f"{field}.requests[{name}]", text,
                                        f"must be less than or equal to {name} limit of {limit[1]}"))
    return causes


def local_descending_path_causes(path: Any, field: str) -> list[Cause]:
    """kube-apiserver's validateLocalDescendingPath (volumeMount subPath, among others): relative, no ``..``."""
    if not isinstance(path, str) or not path:
        return []
    if path.startswith("/"):
        return [invalid_value(field, path, "must be a relative path")]
    if ".." in path.split("/"):
        return [invalid_value(field, path, "must not contain '..'")]
    return []


def _pod_spec_causes(spec: Any, field: str) -> list[Cause]:
    causes: list[Cause] = []
    for group in ("initContainers", "containers"):
        for index, container in enumerate((spec or {}).get(group) or []):
            if isinstance(container, dict):
                causes += quantity_causes(container.get("resources"), f"{field}.{group}[{index}].resources")
                for m, mount in enumerate(container.get("volumeMounts") or []):
                    if isinstance(mount, dict):
                        causes += local_descending_path_causes(
                            mount.get("subPath"), f"{field}.{group}[{index}].volumeMounts[{m}].subPath")
    return causes


def object_causes(kind: str, obj: dict[str, Any]) -> list[Cause]:
    """Field errors in the parts of a built-in object every kind shares, and in its pod template or claim."""
    meta = obj.get("metadata") or {}
    causes: list[Cause] = []
    if meta.get("name"):
        causes += name_causes(kind, meta["name"])
    causes += label_causes(meta.get("labels"), "metadata.labels")
    for key in meta.get("annotations") or {}:
        causes += qualified_name_causes(str(key), "metadata.annotations")
    spec: dict[str, Any] = obj["spec"] if isinstance(obj.get("spec"), dict) else {}
    if kind == "Pod":
        causes += _pod_spec_causes(spec, "spec")
    template = spec.get("template") if isinstance(spec.get("template"), dict) else None
    if kind in ("Job", "Deployment") and template is not None:
        causes += label_causes((template.get("metadata") or {}).get("labels"), "spec.template.metadata.labels")
        causes += _pod_spec_causes(template.get("spec"), "spec.template.spec")
    if kind == "PersistentVolumeClaim":
        causes += quantity_causes(spec.get("resources"), "spec.resources")
    return causes
