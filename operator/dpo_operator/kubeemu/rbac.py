"""RBAC objects (``rbac.authorization.k8s.io/v1``), stored and served, never enforced.

What kube-apiserver does with them before storing: the defaults of ``SetDefaults_Subject`` and the checks of
``pkg/apis/rbac/validation`` (rules need verbs, api groups and resources; a binding's ``roleRef`` names a Role or
ClusterRole of this group and cannot change; subjects are ServiceAccounts, Users or Groups). Nothing reads them to
allow or deny a request: the emulated server has no authorizer (see :mod:`dpo_operator.kubeemu.reviews`).
"""

from __future__ import annotations

from typing import Any

from dpo_operator.kubeemu.errors import Cause, invalid_value, not_supported
from dpo_operator.kubeemu.names import DNS1123_SUBDOMAIN, SUBDOMAIN_MSG, path_segment_causes

GROUP = "rbac.authorization.k8s.io"
ROLES = ("Role", "ClusterRole")
BINDINGS = ("RoleBinding", "ClusterRoleBinding")
SUBJECT_KINDS = ["ServiceAccount", "User", "Group"]

# k8s.io/api/rbac/v1/generated.proto, in the table form of kubeemu.protobuf (``kubectl create role|rolebinding|...``)
PROTO_MESSAGES: dict[str, dict[int, tuple[str, str]]] = {
    "Role": {1: ("metadata", "ObjectMeta"), 2: ("rules", "[]PolicyRule")},
    "ClusterRole": {1: ("metadata", "ObjectMeta"), 2: ("rules", "[]PolicyRule"), 3: ("aggregationRule", "AggregationRule")},
    "PolicyRule": {1: ("verbs", "[]string"), 2: ("apiGroups", "[]string"), 3: ("resources", "[]string"),
                   4: ("resourceNames", "[]string"), 5: ("nonResourceURLs", "[]string")},
    "AggregationRule": {1: ("clusterRoleSelectors", "[]LabelSelector")},
    "LabelSelector": {1: ("matchLabels", "map<string,string>"), 2: ("matchExpressions", "[]LabelSelectorRequirement")},
    "LabelSelectorRequirement": {1: ("key", "string"), 2: ("operator", "string"), 3: ("values", "[]string")},
    "RoleBinding": {1: ("metadata", "ObjectMeta"), 2: ("subjects", "[]Subject"), 3: ("roleRef", "RoleRef")},
    "ClusterRoleBinding": {1: ("metadata", "ObjectMeta"), 2: ("subjects", "[]Subject"), 3: ("roleRef", "RoleRef")},
    "Subject": {1: ("kind", "string"), 2: ("apiGroup", "string"), 3: ("name", "string"), 4: ("namespace", "string")},
    "RoleRef": {1: ("apiGroup", "string"), 2: ("kind", "string"), 3: ("name", "string")},
}


def _required(field: str, detail: str = "") -> Cause:
    return Cause(field, "FieldValueRequired", f"Required value: {detail}" if detail else "Required value")


def _rule_causes(rule: Any, namespaced: bool, field: str) -> list[Cause]:
    rule = rule if isinstance(rule, dict) else {}
    causes = [] if rule.get("verbs") else [_required(f"{field}.verbs", "verbs must contain at least one value")]
    if rule.get("nonResourceURLs"):
        urls = rule["nonResourceURLs"]
        if namespaced:
            causes.append(invalid_value(f"{field}.nonResourceURLs", urls,
                                        "namespaced rules cannot apply to non-resource URLs"))
        if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
            causes.append(invalid_value(f"{field}.nonResourceURLs", urls,
                                        "rules cannot apply to both regular resources and non-resource URLs"))
        return causes
    if not rule.get("apiGroups"):
        causes.append(_required(f"{field}.apiGroups", "resource rules must supply at least one api group"))
    if not rule.get("resources"):
        causes.append(_required(f"{field}.resources", "resource rules must supply at least one resource"))
    return causes


def _subject_causes(subject: Any, namespaced: bool, field: str) -> list[Cause]:
    subject = subject if isinstance(subject, dict) else {}
    name, kind, api_group = subject.get("name") or "", subject.get("kind") or "", subject.get("apiGroup") or ""
    causes = [] if name else [_required(f"{field}.name")]
    if kind == "ServiceAccount":
        if name and (len(name) > 253 or not DNS1123_SUBDOMAIN.fullmatch(name)):
            causes.append(invalid_value(f"{field}.name", name, SUBDOMAIN_MSG))
        if api_group:
            causes.append(not_supported(f"{field}.apiGroup", api_group, [""]))
        if not namespaced and not subject.get("namespace"):
            causes.append(_required(f"{field}.namespace"))
    elif kind in ("User", "Group"):
        if api_group != GROUP:
            causes.append(not_supported(f"{field}.apiGroup", api_group, [GROUP]))
    else:
        causes.append(not_supported(f"{field}.kind", kind, SUBJECT_KINDS))
    return causes


def _binding_causes(kind: str, obj: dict[str, Any]) -> list[Cause]:
    ref: dict[str, Any] = obj["roleRef"] if isinstance(obj.get("roleRef"), dict) else {}
    causes: list[Cause] = []
    if ref.get("apiGroup", "") != GROUP:
        causes.append(not_supported("roleRef.apiGroup", ref.get("apiGroup", ""), [GROUP]))
    allowed = list(ROLES) if kind == "RoleBinding" else ["ClusterRole"]
    if ref.get("kind", "") not in allowed:
        causes.append(not_supported("roleRef.kind", ref.get("kind", ""), allowed))
    if not ref.get("name"):
        causes.append(_required("roleRef.name"))
    else:
        causes += path_segment_causes(str(ref["name"]), "roleRef.name")
    for index, subject in enumerate(obj.get("subjects") or []):
        causes += _subject_causes(subject, kind == "RoleBinding", f"subjects[{index}]")
    return causes


def default(obj: dict[str, Any]) -> None:
    """``SetDefaults_Subject``: a User or Group subject without an apiGroup gets the RBAC group."""
    for subject in obj.get("subjects") or []:
        if isinstance(subject, dict) and not subject.get("apiGroup") and subject.get("kind") in ("User", "Group"):
            subject["apiGroup"] = GROUP


def causes(kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> list[Cause]:
    """Field errors of an RBAC object (after :func:`default`); ``old`` is the stored object on an update."""
    found: list[Cause] = []
    if kind in ROLES:
        for index, rule in enumerate(obj.get("rules") or []):
            found += _rule_causes(rule, kind == "Role", f"rules[{index}]")
        aggregation = obj.get("aggregationRule")
        if kind == "ClusterRole" and aggregation is not None and not (aggregation or {}).get("clusterRoleSelectors"):
            found.append(_required("aggregationRule.clusterRoleSelectors",
                                   "at least one clusterRoleSelector required if aggregationRule is non-nil"))
    elif kind in BINDINGS:
        found += _binding_causes(kind, obj)
        if old is not None and old.get("roleRef") != obj.get("roleRef"):
            found.append(invalid_value("roleRef", obj.get("roleRef"), "cannot change roleRef"))
    return found
