"""The Kubernetes protobuf bodies kubectl sends for built-in kinds (``kubectl create namespace|configmap|secret``).

kubectl's typed clients write ``application/vnd.kubernetes.protobuf``: the ``k8s\\x00`` magic, a
``runtime.Unknown`` envelope with the TypeMeta, and the object in the field numbers of k8s.io/api's
``generated.proto``. This decodes the kinds those commands create into the JSON form; any other kind is
answered 415 by the server, so the client can be told to send JSON.
"""

from __future__ import annotations

import base64
from typing import Any

from dpo_operator.kubeemu import rbac, reviews

MAGIC = b"k8s\x00"
# message -> field number -> (json name, type); type is a message name, "string", "bytes", "int64", "bool",
# "map<string,string>", "map<string,bytes>", or "[]<type>" for repeated fields
_MESSAGES: dict[str, dict[int, tuple[str, str]]] = {
    "Unknown": {1: ("typeMeta", "TypeMeta"), 2: ("raw", "bytes"), 3: ("contentEncoding", "string"),
                4: ("contentType", "string")},
    "TypeMeta": {1: ("apiVersion", "string"), 2: ("kind", "string")},
    "ObjectMeta": {1: ("name", "string"), 2: ("generateName", "string"), 3: ("namespace", "string"),
                   6: ("resourceVersion", "string"), 11: ("labels", "map<string,string>"),
                   12: ("annotations", "map<string,string>"), 14: ("finalizers", "[]string")},
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec")},
    "NamespaceSpec": {1: ("finalizers", "[]string")},
    "ConfigMap": {1: ("metadata", "ObjectMeta"), 2: ("data", "map<string,string>"),
                  3: ("binaryData", "map<string,bytes>"), 4: ("immutable", "bool")},
    "Secret": {1: ("metadata", "ObjectMeta"), 2: ("data", "map<string,bytes>"), 3: ("type", "string"),
               4: ("stringData", "map<string,string>"), 5: ("immutable", "bool")},
    "ServiceAccount": {1: ("metadata", "ObjectMeta")},
    "Service": {1: ("metadata", "ObjectMeta"), 2: ("spec", "ServiceSpec")},
    "ServiceSpec": {1: ("ports", "[]ServicePort"), 2: ("selector", "map<string,string>"), 3: ("clusterIP", "string"),
                    4: ("type", "string"), 5: ("externalIPs", "[]string"), 7: ("sessionAffinity", "string"),
                    10: ("externalName", "string"), 18: ("clusterIPs", "[]string")},
    "ServicePort": {1: ("name", "string"), 2: ("protocol", "string"), 3: ("port", "int64"),
                    4: ("targetPort", "IntOrString"), 5: ("nodePort", "int64"), 6: ("appProtocol", "string")},
    "IntOrString": {1: ("type", "int64"), 2: ("intVal", "int64"), 3: ("strVal", "string")},
    # what ``kubectl create deployment|job`` sends (kubectl >= 1.32 writes these kinds as protobuf too), with the
    # field numbers of k8s.io/api apps/v1, batch/v1 and core/v1 generated.proto; "int" and "bool" are pointer
    # fields (kept when zero), "flag" a plain bool (omitted when false, as its JSON form is)
    "Deployment": {1: ("metadata", "ObjectMeta"), 2: ("spec", "DeploymentSpec")},
    "DeploymentSpec": {1: ("replicas", "int"), 2: ("selector", "LabelSelector"), 3: ("template", "PodTemplateSpec"),
                       4: ("strategy", "DeploymentStrategy"), 5: ("minReadySeconds", "int64"),
                       6: ("revisionHistoryLimit", "int"), 7: ("paused", "flag"), 9: ("progressDeadlineSeconds", "int")},
    "DeploymentStrategy": {1: ("type", "string"), 2: ("rollingUpdate", "RollingUpdateDeployment")},
    "RollingUpdateDeployment": {1: ("maxUnavailable", "IntOrString"), 2: ("maxSurge", "IntOrString")},
    "Job": {1: ("metadata", "ObjectMeta"), 2: ("spec", "JobSpec")},
    "JobSpec": {1: ("parallelism", "int"), 2: ("completions", "int"), 3: ("activeDeadlineSeconds", "int"),
                4: ("selector", "LabelSelector"), 5: ("manualSelector", "bool"), 6: ("template", "PodTemplateSpec"),
                7: ("backoffLimit", "int"), 8: ("ttlSecondsAfterFinished", "int"), 9: ("completionMode", "string"),
                10: ("suspend", "bool")},
    "LabelSelector": {1: ("matchLabels", "map<string,string>"), 2: ("matchExpressions", "[]LabelSelectorRequirement")},
    "LabelSelectorRequirement": {1: ("key", "string"), 2: ("operator", "string"), 3: ("values", "[]string")},
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodSpec")},
    "PodSpec": {2: ("containers", "[]Container"), 3: ("restartPolicy", "string"),
                4: ("terminationGracePeriodSeconds", "int"), 5: ("activeDeadlineSeconds", "int"),
                6: ("dnsPolicy", "string"), 7: ("nodeSelector", "map<string,string>"),
                8: ("serviceAccountName", "string"), 10: ("nodeName", "string"), 19: ("schedulerName", "string"),
                20: ("initContainers", "[]Container")},
    "Container": {1: ("name", "string"), 2: ("image", "string"), 3: ("command", "[]string"), 4: ("args", "[]string"),
                  5: ("workingDir", "string"), 6: ("ports", "[]ContainerPort"), 7: ("env", "[]EnvVar"),
                  8: ("resources", "ResourceRequirements"), 9: ("volumeMounts", "[]VolumeMount"),
                  13: ("terminationMessagePath", "string"), 14: ("imagePullPolicy", "string"),
                  20: ("terminationMessagePolicy", "string")},
    "ContainerPort": {1: ("name", "string"), 2: ("hostPort", "int64"), 3: ("containerPort", "int64"),
                      4: ("protocol", "string"), 5: ("hostIP", "string")},
    "EnvVar": {1: ("name", "string"), 2: ("value", "string")},
    "ResourceRequirements": {1: ("limits", "map<string,Quantity>"), 2: ("requests", "map<string,Quantity>")},
    "VolumeMount": {1: ("name", "string"), 2: ("readOnly", "flag"), 3: ("mountPath", "string"), 4: ("subPath", "string")},
}
SUPPORTED_KINDS = {"Namespace", "ConfigMap", "Secret", "ServiceAccount", "Service", "Deployment", "Job"}
# kubectl create role|clusterrole|rolebinding|clusterrolebinding, kubectl auth can-i
_MESSAGES.update(rbac.PROTO_MESSAGES | reviews.PROTO_MESSAGES)
SUPPORTED_KINDS |= {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"} | {k for _, k, _ in reviews.KINDS}


class Undecodable(ValueError):
    """Not a protobuf body this server can read."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise Undecodable("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = _varint(data, pos)
            out.append((number, data[pos:pos + length]))
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise Undecodable(f"unsupported wire type {wire}")
    return out


def _value(kind: str, raw: int | bytes) -> Any:
    if kind == "string":
        return bytes(raw).decode() if isinstance(raw, bytes) else str(raw)
    if kind == "bytes":
        return bytes(raw) if isinstance(raw, bytes) else b""
    if kind in ("bool", "flag"):
        return bool(raw)
    if kind in ("int64", "int"):
        return int(raw) if isinstance(raw, int) else 0
    if not isinstance(raw, bytes):
        raise Undecodable(f"expected a message for {kind}")
    if kind == "IntOrString":  # the JSON form is the bare int or string
        value = decode_message(kind, raw)
        return value.get("strVal", "") if value.get("type") == 1 else value.get("intVal", 0)
    return decode_message(kind, raw)


def decode_message(message: str, data: bytes) -> dict[str, Any]:
    schema = _MESSAGES[message]
    out: dict[str, Any] = {}
    for number, raw in _fields(data):
        if number not in schema:
            continue
        name, kind = schema[number]
        if kind.startswith("map<"):
            entry = dict(_fields(bytes(raw))) if isinstance(raw, bytes) else {}
            value = entry.get(2, b"")
            if kind.endswith("Quantity>"):  # resource.Quantity: a message with the string form in field 1
                value = dict(_fields(bytes(value))).get(1, b"")
            text = base64.b64encode(value).decode() if kind.endswith("bytes>") else bytes(value).decode()  # type: ignore[arg-type]
            out.setdefault(name, {})[bytes(entry.get(1, b"")).decode()] = text
        elif kind.startswith("[]"):
            out.setdefault(name, []).append(_value(kind[2:], raw))
        else:
            out[name] = _value(kind, raw)
    # Go writes zero values of non-pointer fields; their JSON form omits them
    kinds = {name: kind for name, kind in schema.values()}
    return {k: v for k, v in out.items() if not (isinstance(v, str) and v == "") and v != b""
            and not (v == 0 and kinds[k] == "int64") and not (v is False and kinds[k] == "flag")}


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf-encoded object as its JSON form; :class:`Undecodable` for anything not in the table."""
    if not body.startswith(MAGIC):
        raise Undecodable("the body does not start with the Kubernetes protobuf magic")
    envelope = decode_message("Unknown", body[len(MAGIC):])
    type_meta = envelope.get("typeMeta") or {}
    kind = type_meta.get("kind", "")
    if kind not in SUPPORTED_KINDS:
        raise Undecodable(f"protobuf bodies of kind {kind!r} are not supported; send JSON")
    obj = decode_message(kind, envelope.get("raw", b""))
    return {"apiVersion": type_meta.get("apiVersion", "v1"), "kind": kind, **obj}
