"""Access reviews (``authorization.k8s.io/v1``) answered as kube-apiserver without an authorizer answers them.

The emulated server authorizes nothing: every request is allowed, as with ``--authorization-mode=AlwaysAllow``.
So a review is allowed, with a reason saying why (``kubectl auth can-i`` prints ``yes``; a client that shows the
reason learns that RBAC is not enforced here), and a rules review lists the all-allowing rules that kube-apiserver's
AlwaysAllow authorizer reports. Reviews are create-only and never stored, as on a real server.
"""

from __future__ import annotations

from typing import Any

from dpo_operator.kubeemu.errors import Cause, error, invalid, invalid_value

GROUP = "authorization.k8s.io"
REASON = ("RBAC is not enforced: the emulated API server has no authorizer and allows every request "
          "(as kube-apiserver with --authorization-mode=AlwaysAllow)")
# (plural, kind, namespaced): the review kinds kube-apiserver serves in authorization.k8s.io/v1
KINDS = (("selfsubjectaccessreviews", "SelfSubjectAccessReview", False),
         ("selfsubjectrulesreviews", "SelfSubjectRulesReview", False),
         ("subjectaccessreviews", "SubjectAccessReview", False),
         ("localsubjectaccessreviews", "LocalSubjectAccessReview", True))

# k8s.io/api/authorization/v1/generated.proto, in the table form of kubeemu.protobuf (kubectl auth can-i sends these)
PROTO_MESSAGES: dict[str, dict[int, tuple[str, str]]] = {
    "SelfSubjectAccessReview": {1: ("metadata", "ObjectMeta"), 2: ("spec", "SelfSubjectAccessReviewSpec")},
    "SelfSubjectAccessReviewSpec": {1: ("resourceAttributes", "ResourceAttributes"),
                                    2: ("nonResourceAttributes", "NonResourceAttributes")},
    "SubjectAccessReview": {1: ("metadata", "ObjectMeta"), 2: ("spec", "SubjectAccessReviewSpec")},
    "LocalSubjectAccessReview": {1: ("metadata", "ObjectMeta"), 2: ("spec", "SubjectAccessReviewSpec")},
    "SubjectAccessReviewSpec": {1: ("resourceAttributes", "ResourceAttributes"),
                                2: ("nonResourceAttributes", "NonResourceAttributes"), 3: ("user", "string"),
                                4: ("groups", "[]string"), 6: ("uid", "string")},
    "ResourceAttributes": {1: ("namespace", "string"), 2: ("verb", "string"), 3: ("group", "string"),
                           4: ("version", "string"), 5: ("resource", "string"), 6: ("subresource", "string"),
                           7: ("name", "string")},
    "NonResourceAttributes": {1: ("path", "string"), 2: ("verb", "string")},
    "SelfSubjectRulesReview": {1: ("metadata", "ObjectMeta"), 2: ("spec", "SelfSubjectRulesReviewSpec")},
    "SelfSubjectRulesReviewSpec": {1: ("namespace", "string")},
}


def _attribute_causes(spec: dict[str, Any], *, local_namespace: str | None) -> list[Cause]:
    """``ValidateSubjectAccessReviewSpec`` and its self and local variants."""
    resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if resource is None and non_resource is None:
        return [Cause("spec.resourceAttributes", "FieldValueRequired", "Required value: exactly one of "
                      "nonResourceAttributes or resourceAttributes must be specified")]
    if resource is not None and non_resource is not None:
        return [invalid_value("spec.nonResourceAttributes", non_resource,
                              "cannot be specified in combination with resourceAttributes")]
    if local_namespace is not None and non_resource is not None:
        return [invalid_value("spec.nonResourceAttributes", non_resource, "disallowed on this kind of request")]
    return []


def answer(method: str, kind: str, namespace: str | None, body: Any) -> dict[str, Any]:
    """The review ``body`` (POSTed as ``kind``) with its status; 405 for any other method, 422 for a bad spec."""
    if method != "POST":
        raise error(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
    if not isinstance(body, dict):
        raise error(400, "BadRequest", "the request body is not a JSON object")
    spec: dict[str, Any] = body["spec"] if isinstance(body.get("spec"), dict) else {}
    metadata = body.get("metadata") or {}
    reply = {"kind": kind, "apiVersion": f"{GROUP}/v1", "metadata": {**metadata, "creationTimestamp": None},
             "spec": spec}
    if kind == "SelfSubjectRulesReview":
        reply["status"] = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                           "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}], "incomplete": False}
        return reply
    local = namespace if kind == "LocalSubjectAccessReview" else None
    causes = _attribute_causes(spec, local_namespace=local)
    if kind != "SelfSubjectAccessReview" and not spec.get("user") and not spec.get("groups"):
        causes.append(invalid_value("spec.user", spec.get("user", ""), "at least one of user or group must be specified"))
    if causes:
        raise invalid(kind, GROUP, str(metadata.get("name", "")), causes)
    if local is not None and (spec.get("resourceAttributes") or {}).get("namespace", "") != local:
        raise error(400, "BadRequest", f"spec.resourceAttributes.namespace must match namespace: {local}")
    reply["status"] = {"allowed": True, "reason": REASON}
    return reply
