"""The OpenAPI v2 document in the protobuf form client-go asks for (gnostic's ``openapi_v2.Document``).

client-go fetches ``/openapi/v2`` only as ``application/com.github.proto-openapi.spec.v2@v1.0+protobuf`` and
decodes it with gnostic's OpenAPIv2.proto (github.com/google/gnostic-models); the field numbers below are that
file's. Values without a fixed type (defaults, enums, vendor extensions) travel as YAML text in ``Any.yaml``.
"""

from __future__ import annotations

import json
import struct
from typing import Any

MEDIA_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"  # as kube-openapi answers (Go cannot parse the "@" form)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _str(field: int, value: Any) -> bytes:
    return _len(field, str(value).encode()) if value not in (None, "") else b""


def _bool(field: int, value: Any) -> bytes:
    return _varint(field << 3) + b"\x01" if value else b""


def _int(field: int, value: Any) -> bytes:
    return _varint(field << 3) + _varint(int(value)) if value is not None else b""


def _double(field: int, value: Any) -> bytes:
    return _varint(field << 3 | 1) + struct.pack("<d", float(value)) if value is not None else b""


def _any(field: int, value: Any) -> bytes:
    return _len(field, _str(2, json.dumps(value) + "\n"))  # JSON is YAML


def _extensions(field: int, node: dict[str, Any]) -> bytes:
    return b"".join(_len(field, _str(1, key) + _any(2, value)) for key, value in node.items() if key.startswith("x-"))


def schema(node: dict[str, Any]) -> bytes:
    out = [_str(1, node.get("$ref")), _str(2, node.get("format")), _str(3, node.get("title")),
           _str(4, node.get("description"))]
    if "default" in node:
        out.append(_any(5, node["default"]))
    out += [_double(6, node.get("multipleOf")), _double(7, node.get("maximum")), _bool(8, node.get("exclusiveMaximum")),
            _double(9, node.get("minimum")), _bool(10, node.get("exclusiveMinimum")), _int(11, node.get("maxLength")),
            _int(12, node.get("minLength")), _str(13, node.get("pattern")), _int(14, node.get("maxItems")),
            _int(15, node.get("minItems")), _bool(16, node.get("uniqueItems")), _int(17, node.get("maxProperties")),
            _int(18, node.get("minProperties"))]
    out += [_str(19, name) for name in node.get("required") or []]
    out += [_any(20, value) for value in node.get("enum") or []]
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        out.append(_len(21, _len(1, schema(extra))))
    elif isinstance(extra, bool):
        out.append(_len(21, _varint(2 << 3) + (b"\x01" if extra else b"\x00")))
    kinds = node.get("type")
    if kinds:
        out.append(_len(22, b"".join(_str(1, k) for k in ([kinds] if isinstance(kinds, str) else kinds))))
    if isinstance(node.get("items"), dict):
        out.append(_len(23, _len(1, schema(node["items"]))))
    out += [_len(24, schema(sub)) for sub in node.get("allOf") or []]
    if node.get("properties"):
        out.append(_len(25, b"".join(_len(1, _str(1, name) + _len(2, schema(sub)))
                                     for name, sub in node["properties"].items())))
    out.append(_extensions(31, node))
    return b"".join(out)


def _parameter(param: dict[str, Any]) -> bytes:
    if param.get("in") == "body":
        body = _str(1, param.get("description")) + _str(2, param["name"]) + _str(3, "body") + _bool(4, param.get("required")) \
            + _len(5, schema(param.get("schema") or {}))
        return _len(1, _len(1, body))
    sub = 4 if param.get("in") == "path" else 3
    fields = (_bool(1, param.get("required")) + _str(2, param.get("in")) + _str(3, param.get("description"))
              + _str(4, param["name"]) + _str(5 if sub == 4 else 6, param.get("type")))
    return _len(1, _len(2, _len(sub, fields)))


def _operation(op: dict[str, Any]) -> bytes:
    out = [_str(3, op.get("description")), _str(5, op.get("operationId"))]
    out += [_str(6, t) for t in op.get("produces") or []] + [_str(7, t) for t in op.get("consumes") or []]
    out += [_len(8, _parameter(p)) for p in op.get("parameters") or []]
    responses = b"".join(_len(1, _str(1, code) + _len(2, _len(1, _str(1, r.get("description"))
                                                              + (_len(2, _len(1, schema(r["schema"]))) if "schema" in r else b""))))
                         for code, r in (op.get("responses") or {}).items())
    out.append(_len(9, responses))
    out.append(_extensions(13, op))
    return b"".join(out)


_METHODS = {"get": 2, "put": 3, "post": 4, "delete": 5, "patch": 8}


def document(doc: dict[str, Any]) -> bytes:
    """A swagger 2.0 document (as :func:`dpo_operator.kubeemu.openapi.v2` builds it) as gnostic protobuf."""
    info = doc.get("info") or {}
    paths = b""
    for path, item in (doc.get("paths") or {}).items():
        body = b"".join(_len(number, _operation(item[method])) for method, number in _METHODS.items() if method in item)
        body += b"".join(_len(9, _parameter(p)) for p in item.get("parameters") or [])
        paths += _len(2, _str(1, path) + _len(2, body))
    definitions = b"".join(_len(1, _str(1, name) + _len(2, schema(node))) for name, node in (doc.get("definitions") or {}).items())
    return (_str(1, doc.get("swagger", "2.0")) + _len(2, _str(1, info.get("title")) + _str(2, info.get("version")))
            + _len(8, paths) + _len(9, definitions))
