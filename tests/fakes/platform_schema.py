"""NVIDIA's NeMo platform (v2) definitions as a request/answer validator for the strict fake (tests/fakes/platform.py).

The operations come from the vendored OpenAPI document (tests/fixtures/nemo_platform/openapi.yaml, OAS 3.1) and,
for the customization router the document does not describe, from the JSON Schema generated from NVIDIA's pydantic
models (customization.schema.json; see SOURCE.md there). Every schema is validated by reference into its own
document (``urn:nemo-platform:openapi#/...``, ``urn:nemo-platform:customization#/$defs/...``) so the documents'
own ``$ref`` s resolve as written.

- A request: path parameters, every query parameter and the JSON body, strictly: an unknown query parameter or body
  field is refused although the platform would ignore it, so that we never believe it is honoured. Problems come back as FastAPI's validation detail
  (``[{loc, msg, type}]``), the 422 shape the platform answers.
- An answer: validated against the operation's schema for its status. Answers are checked *strictly*: an object
  with declared ``properties`` accepts no other key (the fake may not invent fields the platform never sends).
  An undocumented error status must carry FastAPI's ``{"detail": ...}``.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema.exceptions import ValidationError, best_match
from openapi_schema_validator import OAS31Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nemo_platform"
OPENAPI_URN = "urn:nemo-platform:openapi"
CUSTOMIZATION_URN = "urn:nemo-platform:customization"
STRICT = ":strict"  # suffix of the strict (answer) copy of each document
# customization backends and the JSON Schema of the ``spec`` each one's job collection accepts
BACKEND_SPECS = {"rl": "RlJobInput"}
ERROR_ANSWER = {"type": "object", "required": ["detail"], "properties": {"detail": {}}}


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@dataclass
class Operation:
    """One (method, path template) with references to the schemas of its parts."""

    method: str
    template: str
    pattern: re.Pattern[str]
    params: dict[tuple[str, str], tuple[str, bool]] = field(default_factory=dict)  # (in, name) -> (ref, required)
    deep_objects: set[str] = field(default_factory=set)  # style: deepObject query parameters (filter[...])
    body: str | None = None  # ref of the JSON request body schema
    body_required: bool = False
    binary_body: bool = False
    answers: dict[str, str | None] = field(default_factory=dict)  # status -> ref (None: no content declared)
    name: str = ""


def _pattern(template: str) -> re.Pattern[str]:
    """A regex for a path template; a ``{path}`` after ``/-/`` and a ``{trailing_uri}`` take the rest (slashes)."""
    out, pos = "", 0
    for match in re.finditer(r"\{([^}]+)\}", template):
        out += re.escape(template[pos:match.start()])
        greedy = match.group(1) in ("trailing_uri",) or template[:match.start()].endswith("/-/")
        out += f"(?P<{match.group(1)}>{'.+' if greedy else '[^/]+'})"
        pos = match.end()
    return re.compile("^" + out + re.escape(template[pos:]) + "$")


def _strict(schema: Any) -> Any:
    """Each object schema that lists properties accepts no others (for checking the fake's own answers)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out and out.get("type", "object") == "object":
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


class PlatformSchema:
    """The platform's operations and the validators for their requests and answers."""

    def __init__(self) -> None:
        self.openapi = yaml.safe_load((FIXTURES / "openapi.yaml").read_text())
        self.customization = json.loads((FIXTURES / "customization.schema.json").read_text())
        docs = {OPENAPI_URN: self.openapi, CUSTOMIZATION_URN: self.customization}
        self.registry: Registry = Registry().with_resources(
            [(urn, Resource.from_contents(doc, default_specification=DRAFT202012)) for urn, doc in docs.items()]
            + [(urn + STRICT, Resource.from_contents(_strict(doc), default_specification=DRAFT202012))
               for urn, doc in docs.items()])
        self.operations: list[Operation] = []
        for template, item in self.openapi["paths"].items():
            for method, op in item.items():
                if method in ("get", "put", "post", "patch", "delete", "head"):
                    self.operations.append(self._from_openapi(template, method, op))
        self.operations += self._customization_operations()
        # a literal segment wins over a parameter (".../jobs/{name}/status" over ".../{step}/...")
        self.operations.sort(key=lambda o: (o.template.count("{"), -len(o.template)))

    def _from_openapi(self, template: str, method: str, op: dict[str, Any]) -> Operation:
        base = f"{OPENAPI_URN}#/paths/{_escape(template)}/{method}"
        result = Operation(method.upper(), template, _pattern(template), name=op.get("operationId", ""))
        for i, param in enumerate(op.get("parameters", [])):
            result.params[(param["in"], param["name"])] = (f"{base}/parameters/{i}/schema", param.get("required",
                                                                                                       False))
            if param.get("style") == "deepObject":
                result.deep_objects.add(param["name"])
        body = op.get("requestBody")
        if body:
            result.body_required = body.get("required", False)
            if "application/json" in body["content"]:
                result.body = f"{base}/requestBody/content/application~1json/schema"
            else:
                result.binary_body = True
        for status, answer in op.get("responses", {}).items():
            content = (answer.get("content") or {}).get("application/json")
            result.answers[status] = (f"{base}/responses/{status}/content/application~1json/schema"
                                      if content and content.get("schema") else None)
        return result

    def _customization_operations(self) -> list[Operation]:
        """The customization router's job collections (NVIDIA's SDK endpoints, customization/sdk/endpoints.py)."""
        ref = f"{CUSTOMIZATION_URN}#/$defs/"
        collection = "/apis/customization/v2/workspaces/{workspace}/{backend}/jobs"
        query = {("query", "page"): ({"type": "integer", "exclusiveMinimum": 0}, False),
                 ("query", "page_size"): ({"type": "integer", "exclusiveMinimum": 0}, False),
                 ("query", "sort"): ({"type": "string"}, False)}
        self.inline = {f"inline:{k[1]}": v[0] for k, v in query.items()}
        return [
            Operation("GET", "/apis/customization/v2/healthz", _pattern("/apis/customization/v2/healthz"),
                      answers={"200": ref + "CustomizationHealthResponse"}, name="customization_health"),
            Operation("POST", collection, _pattern(collection), body=ref + "CustomizationJobCreateRequest",
                      body_required=True, answers={"200": ref + "CustomizationJob", "422": None},
                      name="create_customization_job"),
            Operation("GET", collection, _pattern(collection), deep_objects={"filter"},
                      params={k: (f"inline:{k[1]}", False) for k in query},
                      answers={"200": ref + "CustomizationJobsPage", "422": None}, name="list_customization_jobs"),
            Operation("GET", collection + "/{name}", _pattern(collection + "/{name}"),
                      answers={"200": ref + "CustomizationJob", "404": None}, name="get_customization_job"),
        ]

    def match(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        for op in self.operations:
            if op.method == method and (found := op.pattern.match(path)):
                return op, found.groupdict()
        return None

    # ------------------------------------------------------------------ validation

    def errors(self, ref: str, value: Any, strict: bool = False) -> list[ValidationError]:
        if ref.startswith("inline:"):
            schema: dict[str, Any] = self.inline[ref]
        else:
            urn, _, pointer = ref.partition("#")
            schema = {"$ref": f"{urn}{STRICT if strict else ''}#{pointer}"}
        validator = OAS31Validator(schema, registry=self.registry, format_checker=OAS31Validator.FORMAT_CHECKER)
        return sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))

    @staticmethod
    def _detail(where: list[str | int], errors: list[ValidationError]) -> list[dict[str, Any]]:
        """FastAPI's detail entries; for a union (oneOf/anyOf) the branch the value was meant for (a discriminated
        union's: the one whose ``const`` tag it matches) says what is wrong."""
        out = []
        for e in errors:
            while e.context:
                branches: dict[Any, list[ValidationError]] = {}
                for sub in e.context:
                    branches.setdefault(sub.relative_schema_path[0], []).append(sub)
                tagged = [errs for errs in branches.values() if not any(x.validator == "const" for x in errs)]
                candidates = [x for errs in (tagged or list(branches.values())) for x in errs]
                e = best_match(candidates) or e
            out.append({"loc": [*where, *e.absolute_path], "msg": e.message, "type": str(e.validator)})
        return out

    def check_request(self, op: Operation, path_params: dict[str, str], query: list[tuple[str, str]],
                      body: bytes, content_type: str) -> tuple[list[dict[str, Any]], Any]:
        """FastAPI-style problems with a request (empty: valid), and its decoded JSON body (or the raw bytes)."""
        problems: list[dict[str, Any]] = []
        for name, value in path_params.items():
            ref, _ = op.params.get(("path", name), (None, True))
            if ref is not None:
                problems += self._detail(["path", name], self.errors(ref, value))
        seen: dict[str, list[str]] = {}
        for key, value in query:
            deep = re.match(r"^([^\[]+)\[", key)
            name = deep.group(1) if deep and deep.group(1) in op.deep_objects else key
            seen.setdefault(name, []).append(value)
        for name, values in seen.items():
            if ("query", name) not in op.params:
                problems.append({"loc": ["query", name], "msg": f"unknown query parameter {name!r} (the platform "
                                 "ignores it)", "type": "extra_forbidden"})
            elif name not in op.deep_objects:
                ref, _ = op.params[("query", name)]
                problems += self._detail(["query", name], self.errors(ref, _coerce(self._schema_of(ref), values[-1])))
        for (where, name), (_, required) in op.params.items():
            if where == "query" and required and name not in seen:
                problems.append({"loc": ["query", name], "msg": "Field required", "type": "missing"})
        decoded: Any = body
        if op.body is not None and (body or op.body_required):
            try:
                decoded = json.loads(body or b"null")
            except ValueError as exc:
                return [{"loc": ["body"], "msg": f"JSON decode error: {exc}", "type": "json_invalid"}], None
            if "json" not in content_type:
                problems.append({"loc": ["body"], "msg": f"content type {content_type!r} is not application/json",
                                 "type": "model_attributes_type"})
            problems += self._detail(["body"], self.errors(op.body, decoded, strict=True))
            backend = path_params.get("backend")
            if op.name == "create_customization_job" and isinstance(decoded, dict) and backend is not None:
                spec = BACKEND_SPECS.get(backend)
                if spec is None:
                    problems.append({"loc": ["path", "backend"], "msg": f"no customization backend {backend!r} "
                                     f"(installed: {', '.join(BACKEND_SPECS)})", "type": "not_found"})
                else:
                    problems += self._detail(["body", "spec"], self.errors(f"{CUSTOMIZATION_URN}#/$defs/{spec}",
                                                                           decoded.get("spec"), strict=True))
        return problems, decoded

    def _schema_of(self, ref: str) -> Any:
        if ref.startswith("inline:"):
            return self.inline[ref]
        node: Any = self.openapi
        for token in ref.partition("#/")[2].split("/"):
            token = token.replace("~1", "/").replace("~0", "~")
            node = node[int(token)] if isinstance(node, list) else node[token]
        return node

    def check_answer(self, op: Operation, status: int, payload: Any) -> list[str]:
        """What is wrong with an answer the fake is about to send (empty: it may be sent)."""
        declared = op.answers.get(str(status), op.answers.get(f"{str(status)[0]}XX", op.answers.get("default", "")))
        if declared == "" and status >= 400 or declared is None and status >= 400:
            return [f"{e.message} at {list(e.absolute_path)}" for e in
                    OAS31Validator(ERROR_ANSWER).iter_errors(payload)]
        if declared == "":
            return [f"status {status} is not an answer {op.method} {op.template} gives "
                    f"(declared: {', '.join(op.answers)})"]
        if declared is None:
            return []
        return [f"{e.message} at {list(e.absolute_path)}" for e in self.errors(declared, payload, strict=True)]


def _coerce(schema: Any, value: str) -> Any:
    """A query string value as the type its schema names (FastAPI's coercion), else the string."""
    kinds: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("type"), str):
                kinds.add(node["type"])
            for key in ("anyOf", "oneOf", "allOf"):
                for sub in node.get(key, []):
                    collect(sub)
    collect(schema)
    try:
        if "integer" in kinds and re.fullmatch(r"-?\d+", value):
            return int(value)
        if "number" in kinds:
            return float(value)
        if "boolean" in kinds and value.lower() in ("true", "false"):
            return value.lower() == "true"
    except ValueError:
        pass
    return value


@functools.lru_cache(maxsize=1)
def platform_schema() -> PlatformSchema:
    """Parsed once per test session (the document is large)."""
    return PlatformSchema()


