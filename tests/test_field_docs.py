"""Every spec field of the generated CRDs has a description, so `kubectl explain` documents it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CRD_FILES = sorted((ROOT / "crds").glob("*.yaml"))


def fields(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each field under ``node`` (its own path included), as `kubectl explain --recursive` lists them.

    A pass-through object (x-kubernetes-preserve-unknown-fields) counts as one field; array items and map values
    are not fields of their own, but their properties are.
    """
    yield path, node
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return
    for element in (node.get("items"), node.get("additionalProperties")):
        if isinstance(element, dict):
            for name, child in (element.get("properties") or {}).items():
                yield from fields(child, f"{path}[].{name}")
    for name, child in (node.get("properties") or {}).items():
        yield from fields(child, f"{path}.{name}")


def undocumented(schema: dict[str, Any], root: str) -> list[str]:
    return [path for path, node in fields(schema, root) if not str(node.get("description") or "").strip()]


@pytest.mark.parametrize("crd_file", CRD_FILES, ids=lambda p: p.stem)
def test_every_spec_field_has_a_description(crd_file: Path) -> None:
    schema = yaml.safe_load(crd_file.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    missing = undocumented(schema["properties"]["spec"], "spec")
    assert missing == [], f"{crd_file.name}: spec fields without a description: {', '.join(missing)}"


@pytest.mark.parametrize("crd_file", CRD_FILES, ids=lambda p: p.stem)
def test_every_status_field_has_a_description(crd_file: Path) -> None:
    schema = yaml.safe_load(crd_file.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    missing = undocumented(schema["properties"]["status"], "status")
    assert missing == [], f"{crd_file.name}: status fields without a description: {', '.join(missing)}"


def test_the_walk_finds_fields_without_a_description() -> None:
    schema = {"type": "object", "description": "root", "properties": {
        "documented": {"type": "integer", "description": "a number"},
        "bare": {"type": "string"},
        "list": {"type": "array", "description": "items", "items": {"type": "object", "properties": {
            "inner": {"type": "string"}}}},
        "free": {"type": "object", "description": "passed through", "x-kubernetes-preserve-unknown-fields": True},
        "map": {"type": "object", "additionalProperties": {"type": "string"}},
    }}
    assert undocumented(schema, "spec") == ["spec.bare", "spec.list[].inner", "spec.map"]
