"""The CRDs are generated from the models, are structural, and accept/reject sample CRs like an API server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from dpo_operator import crdgen
from dpo_operator.api import ALL_KINDS
from dpo_operator.kubeemu.schema_validation import InvalidObject, ResourceSchema

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = Path(__file__).resolve().parent / "samples"


def _crds_on_disk() -> dict[str, dict[str, Any]]:
    return {p.name: yaml.safe_load(p.read_text()) for p in (ROOT / "crds").glob("*.yaml")}


def test_checked_in_crds_match_the_models() -> None:
    generated = {crdgen.crd_filename(c): c for c in crdgen.all_crds()}
    on_disk = _crds_on_disk()
    assert set(on_disk) == set(generated), "run `make crds`"
    for name, crd in generated.items():
        assert on_disk[name] == crd, f"crds/{name} is stale: run `make crds`"


def _structural_errors(node: dict[str, Any], path: str = "") -> list[str]:
    """The structural-schema rules of apiextensions.k8s.io/v1 that a real API server enforces."""
    errors = []
    allowed_untyped = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
    if "type" not in node and not allowed_untyped:
        errors.append(f"{path}: missing type")
    if "properties" in node and "additionalProperties" in node:
        errors.append(f"{path}: properties and additionalProperties together")
    if node.get("additionalProperties") is False:
        errors.append(f"{path}: additionalProperties: false is not allowed")
    for key in ("$ref", "$defs", "definitions", "title", "nullable", "anyOf", "oneOf", "allOf", "not"):
        if key in node:  # references are not allowed; the rest has no place in a schema generated from models
            errors.append(f"{path}: {key} is not allowed")
    if node.get("x-kubernetes-int-or-string") and "type" in node:
        errors.append(f"{path}: int-or-string must not set a type")
    if "default" in node:
        try:
            ResourceSchema({"type": "object", "properties": {"v": node}}).admit({"v": node["default"]}, None, strict=True)
        except InvalidObject as exc:
            errors.append(f"{path}: default does not validate: {exc}")
    for name, child in (node.get("properties") or {}).items():
        errors += _structural_errors(child, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        errors += _structural_errors(node["additionalProperties"], f"{path}.*")
    if isinstance(node.get("items"), dict):
        errors += _structural_errors(node["items"], f"{path}[]")
    return errors


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda k: k.kind)
def test_crd_is_structural_and_complete(kind: Any) -> None:
    crd = crdgen.crd_for(kind)
    version = crd["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    OAS30Validator.check_schema(schema)
    assert _structural_errors(schema) == []
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["categories"] == ["dpo"]
    assert crd["spec"]["names"]["shortNames"]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase" and columns["Age"] == ".metadata.creationTimestamp"
    status_props = schema["properties"]["status"]["properties"]
    for field in ("phase", "conditions", "observedGeneration", "startTime", "completionTime"):
        assert field in status_props
    condition = status_props["conditions"]["items"]["properties"]
    assert {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"} <= set(condition)


def _schema_for(kind_name: str) -> ResourceSchema:
    kind = next(k for k in ALL_KINDS if k.kind == kind_name)
    return ResourceSchema(crdgen.crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def _samples(prefix: str) -> list[Path]:
    return sorted(SAMPLES.glob(f"{prefix}-*.yaml"))


@pytest.mark.parametrize("path", _samples("good"), ids=lambda p: p.stem)
def test_good_samples_validate(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        stored = _schema_for(doc["kind"]).admit(doc, None, strict=True)
        kind = next(k for k in ALL_KINDS if k.kind == doc["kind"])
        kind.spec_model.model_validate(stored["spec"])  # what the API server stores, the operator accepts


@pytest.mark.parametrize("path", _samples("bad"), ids=lambda p: p.stem)
def test_bad_samples_are_rejected(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    expected = doc["metadata"]["annotations"]["test/expect-error"]
    with pytest.raises(InvalidObject) as caught:
        _schema_for(doc["kind"]).admit(doc, None, strict=True)
    assert expected in str(caught.value)


def test_defaults_are_filled_like_an_api_server() -> None:
    stored = _schema_for("DPOCollection").admit(
        {"spec": {"llm": {"baseUrl": "http://nim:8000/v1", "model": "m"}, "output": {"pvc": {"claimName": "d"}}}},
        None, strict=True)
    assert stored["spec"]["workflow"] == {"name": "tictactoe", "numExamples": 32}
    # pairing and run settings stay unset (the models' defaults apply) so that a NAT config can fill them in
    assert stored["spec"]["pairing"] == {} and "numRuns" not in stored["spec"]
    assert stored["spec"]["candidatesPerTurn"] == 4
    assert stored["spec"]["job"]["backoffLimit"] == 2
    assert stored["spec"]["output"]["pvc"]["path"] == "/"


def test_immutable_fields_reject_changes_but_allow_suspend() -> None:
    schema = _schema_for("DPOCollection")
    old = schema.admit({"spec": {"llm": {"baseUrl": "http://a/v1", "model": "m"}, "output": {"pvc": {"claimName": "d"}}}},
                       None, strict=True)
    changed = {"spec": {**old["spec"], "llm": {**old["spec"]["llm"], "model": "other"}}}
    with pytest.raises(InvalidObject, match="llm is immutable"):
        schema.admit(changed, old, strict=True)
    suspended = {"spec": {**old["spec"], "suspend": True}}
    assert schema.admit(suspended, old, strict=True)["spec"]["suspend"] is True
