"""Kubernetes label and field selectors, as the API server evaluates them on list and watch."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]

_SET_EXPR = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_terms(selector: str) -> list[str]:
    """Split on commas that are not inside a set expression's parentheses."""
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [t.strip() for t in terms if t.strip()]


def _label_term(term: str) -> Callable[[Mapping[str, str]], bool]:
    if match := _SET_EXPR.match(term):
        key, op, raw_values = match.groups()
        values = {v.strip() for v in raw_values.split(",") if v.strip()}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    for op in ("!=", "==", "="):
        if op in term:
            key, value = (s.strip() for s in term.split(op, 1))
            if op == "!=":
                return lambda labels: labels.get(key) != value
            return lambda labels: labels.get(key) == value
    if term.startswith("!"):
        key = term[1:].strip()
        return lambda labels: key not in labels
    return lambda labels: term in labels


def label_selector(selector: str | None) -> Predicate:
    terms = [_label_term(t) for t in _split_terms(selector or "")]

    def matches(obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(term(labels) for term in terms)

    return matches


# The fields kube-apiserver selects on beyond metadata.name/metadata.namespace, per kind: each resource's
# ``AddFieldLabelConversionFunc`` (pkg/apis/core/v1/conversion.go, pkg/apis/batch/v1/conversion.go,
# pkg/apis/apps/v1/conversion.go, pkg/apis/events/v1/conversion.go) and its strategy's ``ToSelectableFields``.
# A selector on any other field is a 400 ``field label not supported``; custom resources select on
# metadata.name/metadata.namespace and their CRD's ``selectableFields``.
SELECTABLE: dict[tuple[str, str], dict[str, str]] = {
    ("", "Pod"): {f: f for f in ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
                                 "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName")},
    ("", "Event"): {**{f"involvedObject.{f}": f"involvedObject.{f}" for f in (
        "kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")},
        "reason": "reason", "reportingComponent": "reportingComponent", "source": "source.component", "type": "type"},
    ("events.k8s.io", "Event"): {**{f"regarding.{f}": f"regarding.{f}" for f in (
        "kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")},
        "reason": "reason", "reportingController": "reportingController", "type": "type"},
    ("", "Namespace"): {"status.phase": "status.phase"},
    ("", "Secret"): {"type": "type"},
    ("", "Service"): {"spec.clusterIP": "spec.clusterIP", "spec.type": "spec.type"},
    ("batch", "Job"): {"status.successful": "status.succeeded"},
    ("apps", "ReplicaSet"): {"status.replicas": "status.replicas"},
}
_BOOLEAN_FIELDS = {"spec.hostNetwork"}  # printed with strconv.FormatBool: "false" when unset


class UnsupportedField(ValueError):
    """A field selector on a field the resource cannot be selected by (kube-apiserver: 400)."""


def selectable_fields(group: str, kind: str, *, namespaced: bool, custom_fields: list[str] | None = None
                      ) -> dict[str, str]:
    """Field label -> path in the object, for one kind."""
    fields = {"metadata.name": "metadata.name"}
    if namespaced:
        fields["metadata.namespace"] = "metadata.namespace"
    if custom_fields is not None:
        fields.update({f: f for f in custom_fields})
    else:
        fields.update(SELECTABLE.get((group, kind), {}))
    return fields


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if path in _BOOLEAN_FIELDS:
        return "true" if node else "false"
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


def field_selector(selector: str | None, fields: Mapping[str, str] | None = None) -> Predicate:
    """The predicate of a field selector (``a=b,c!=d``); with ``fields``, only those labels are accepted."""
    checks: list[tuple[str, bool, str]] = []
    for term in _split_terms(selector or ""):
        negate = "!=" in term
        operator = "!=" if negate else ("==" if "==" in term else "=")
        if operator not in term:
            raise UnsupportedField(f"invalid selector: '{selector}'; can't understand '{term}'")
        key, value = (s.strip() for s in term.split(operator, 1))
        if fields is not None:
            if key not in fields:
                raise UnsupportedField(f"field label not supported: {key}")
            key = fields[key]
        checks.append((key, negate, value))

    def matches(obj: Mapping[str, Any]) -> bool:
        return all((_field_value(obj, key) != value) if negate else (_field_value(obj, key) == value)
                   for key, negate, value in checks)

    return matches
