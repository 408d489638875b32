"""Strategic merge patch and server-side apply, driven by the kind's OpenAPI schema.

Strategic merge (built-in kinds): lists whose schema says ``x-kubernetes-patch-strategy: merge`` merge by
``x-kubernetes-patch-merge-key``; ``$patch: replace|delete``, ``$retainKeys`` and ``$deleteFromPrimitiveList``
directives; ``$setElementOrder`` is accepted (order is kept as patched).

Server-side apply: every write records which manager owns which fields (``metadata.managedFields``, FieldsV1).
An apply merges the applied configuration (map lists by their ``x-kubernetes-list-map-keys``, other lists
atomically), removes the fields the same manager applied before and no longer applies (unless someone else owns
them), and refuses to change a field another manager owns to a different value unless ``force=true`` (409).
"""

from __future__ import annotations

import copy
import datetime
import json
from collections.abc import Callable
from typing import Any

Schema = dict[str, Any]
Resolve = Callable[[Schema | None], Schema]  # follows $ref
Path = tuple[str, ...]


class ApplyConflict(Exception):
    def __init__(self, conflicts: list[tuple[str, str]]) -> None:
        self.conflicts = conflicts  # (manager, field path)
        listed = "\n".join(f'- conflict with "{manager}": {path}' for manager, path in conflicts)
        super().__init__(f"Apply failed with {len(conflicts)} conflict{'s' if len(conflicts) != 1 else ''}: "
                         + (listed.lstrip("- ") if len(conflicts) == 1 else "\n" + listed))


def _child(schema: Schema, key: str, resolve: Resolve) -> Schema:
    schema = resolve(schema)
    props = schema.get("properties") or {}
    if key in props:
        return resolve(props[key])
    extra = schema.get("additionalProperties")
    return resolve(extra) if isinstance(extra, dict) else {}


def _items(schema: Schema, resolve: Resolve) -> Schema:
    items = resolve(schema).get("items")
    return resolve(items) if isinstance(items, dict) else {}


# ---------------------------------------------------------------- strategic merge patch


def strategic_merge(original: Any, patch: Any, schema: Schema, resolve: Resolve) -> Any:
    schema = resolve(schema)
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            result[name] = [v for v in result.get(name) or [] if v not in value]
            continue
        child = _child(schema, key, resolve)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, child, resolve)
        elif isinstance(value, dict) and value.get("$patch") == "delete":
            result.pop(key, None)
        else:
            result[key] = strategic_merge(result.get(key), value, child, resolve)
    if isinstance(patch.get("$retainKeys"), list):
        result = {k: v for k, v in result.items() if k in patch["$retainKeys"]}
    return result


def _merge_list(original: Any, patch: list[Any], schema: Schema, resolve: Resolve) -> list[Any]:
    strategy = str(schema.get("x-kubernetes-patch-strategy") or "")
    if "merge" not in strategy.split(","):
        return [_strip(v) for v in patch if not (isinstance(v, dict) and v.get("$patch"))]
    current = list(original) if isinstance(original, list) else []
    key = schema.get("x-kubernetes-patch-merge-key")
    if key is None:  # a set of primitives
        return current + [v for v in patch if v not in current]
    if any(isinstance(v, dict) and v.get("$patch") == "replace" for v in patch):
        return [_strip(v) for v in patch if not (isinstance(v, dict) and v.get("$patch"))]
    item_schema = _items(schema, resolve)
    for item in patch:
        if not isinstance(item, dict):
            continue
        index = next((i for i, c in enumerate(current) if isinstance(c, dict) and c.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if index is not None:
                current.pop(index)
        elif index is None:
            current.append(_strip(item))
        else:
            current[index] = strategic_merge(current[index], item, item_schema, resolve)
    return current


def _strip(value: Any) -> Any:
    """A patch value without its directives, as stored."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


# ---------------------------------------------------------------- field sets


def _list_keys(schema: Schema) -> list[str] | None:
    if schema.get("x-kubernetes-list-type") == "map" and schema.get("x-kubernetes-list-map-keys"):
        return list(schema["x-kubernetes-list-map-keys"])
    if schema.get("x-kubernetes-patch-merge-key") and "merge" in str(schema.get("x-kubernetes-patch-strategy")):
        return [schema["x-kubernetes-patch-merge-key"]]
    return None


def _key_element(item: dict[str, Any], keys: list[str]) -> str:
    return "k:" + json.dumps({k: item.get(k) for k in keys if k in item}, separators=(",", ":"), sort_keys=True)


def field_paths(obj: Any, schema: Schema, resolve: Resolve, prefix: Path = ()) -> set[Path]:
    """The leaf fields of ``obj`` as FieldsV1 paths (``f:spec``, ``k:{"name":"x"}``, ``v:"a"``)."""
    schema = resolve(schema)
    found: set[Path] = set()
    if not isinstance(obj, dict):
        return found
    for key, value in obj.items():
        path = (*prefix, f"f:{key}")
        child = _child(schema, key, resolve)
        if isinstance(value, dict) and value and child.get("x-kubernetes-map-type") != "atomic":
            found |= field_paths(value, child, resolve, path)
        elif isinstance(value, list) and value and (keys := _list_keys(child)) and all(isinstance(v, dict) for v in value):
            item_schema = _items(child, resolve)
            for item in value:
                item_path = (*path, _key_element(item, keys))
                found.add((*item_path, "."))
                found |= field_paths(item, item_schema, resolve, item_path)
        elif isinstance(value, list) and value and child.get("x-kubernetes-list-type") == "set":
            found |= {(*path, "v:" + json.dumps(v, separators=(",", ":"))) for v in value}
        else:
            found.add(path)
    return found


def value_at(obj: Any, path: Path) -> Any:
    node = obj
    for element in path:
        if element == ".":
            return node
        kind, _, rest = element.partition(":")
        if kind == "f":
            node = node.get(rest) if isinstance(node, dict) else None
        elif kind == "k":
            wanted = json.loads(rest)
            node = next((i for i in node or [] if isinstance(i, dict)
                         and all(i.get(k) == v for k, v in wanted.items())), None) if isinstance(node, list) else None
        elif kind == "v":
            return json.loads(rest) if isinstance(node, list) and json.loads(rest) in node else None
        if node is None:
            return None
    return node


def _remove(obj: Any, path: Path) -> None:
    *parents, last = path
    node = obj
    for element in parents:
        if element == ".":
            return
        node = value_at(node, (element,))
        if node is None:
            return
    kind, _, rest = last.partition(":")
    if kind == "f" and isinstance(node, dict):
        node.pop(rest, None)
    elif last == "." and len(parents) >= 2:
        container = value_at(obj, tuple(parents[:-1]))
        item = value_at(obj, tuple(parents))
        if isinstance(container, list) and item in container:
            container.remove(item)
    elif kind == "v" and isinstance(node, list) and json.loads(rest) in node:
        node.remove(json.loads(rest))


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        for element in path:
            node = node.setdefault(element, {})
    return tree


def from_fields_v1(tree: dict[str, Any], prefix: Path = ()) -> set[Path]:
    found: set[Path] = set()
    for element, child in tree.items():
        path = (*prefix, element)
        if child:
            found |= from_fields_v1(child, path)
        else:
            found.add(path)
    return found


def show_path(path: Path) -> str:
    """``.spec.containers[name="x"].image`` as the API server prints a conflicting field."""
    out = ""
    for element in path:
        kind, _, rest = element.partition(":")
        if kind == "f":
            out += f".{rest}"
        elif kind == "k":
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in json.loads(rest).items()) + "]"
        elif kind == "v":
            out += f"[={rest}]"
    return out


# ---------------------------------------------------------------- apply and managed fields


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tracked(obj: dict[str, Any], with_status: bool) -> dict[str, Any]:
    """The part of an object whose fields have managers: spec-like fields, labels, annotations (and status)."""
    meta = obj.get("metadata") or {}
    tracked = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata") and (with_status or k != "status")}
    kept = {k: meta[k] for k in ("labels", "annotations") if meta.get(k)}
    if kept:
        tracked["metadata"] = kept
    return tracked


def _managers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list((obj.get("metadata") or {}).get("managedFields") or [])


def _entry(manager: str, operation: str, api_version: str, paths: set[Path], subresource: str) -> dict[str, Any]:
    entry = {"manager": manager, "operation": operation, "apiVersion": api_version, "time": _now(),
             "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(paths)}
    if subresource:
        entry["subresource"] = subresource
    return entry


def record_update(old: dict[str, Any] | None, new: dict[str, Any], schema: Schema, resolve: Resolve, manager: str,
                  api_version: str, subresource: str = "") -> None:
    """After a create, update or patch: the manager owns what it changed; nobody owns what is gone."""
    with_status = subresource == "status"
    new_paths = field_paths(_tracked(new, with_status), schema, resolve)
    old_paths = field_paths(_tracked(old, with_status), schema, resolve) if old else set()
    old_obj = _tracked(old, with_status) if old else {}
    new_obj = _tracked(new, with_status)
    changed = {p for p in new_paths if p not in old_paths or value_at(new_obj, p) != value_at(old_obj, p)}
    entries = []
    mine: set[Path] = set(changed)
    for entry in _managers(old or {}) if old else []:
        paths = from_fields_v1(entry.get("fieldsV1") or {})
        same_entry = entry["manager"] == manager and entry["operation"] == "Update" \
            and entry.get("subresource", "") == subresource
        if entry.get("subresource", "") == subresource:
            paths = {p for p in paths if p in new_paths or p[-1] == "."}
        if same_entry:
            mine |= paths
            continue
        if entry.get("subresource", "") == subresource:
            paths -= changed
        if paths:
            entries.append({**entry, "fieldsV1": to_fields_v1(paths)})
    if mine:
        entries.append(_entry(manager, "Update", api_version, mine, subresource))
    new.setdefault("metadata", {})["managedFields"] = entries


def _merge_applied(live: Any, applied: Any, schema: Schema, resolve: Resolve) -> Any:
    schema = resolve(schema)
    if isinstance(applied, dict) and isinstance(live, dict) and schema.get("x-kubernetes-map-type") != "atomic":
        out = dict(live)
        for key, value in applied.items():
            out[key] = _merge_applied(live.get(key), value, _child(schema, key, resolve), resolve)
        return out
    if isinstance(applied, list) and isinstance(live, list) and (keys := _list_keys(schema)):
        item_schema = _items(schema, resolve)
        out_list = list(live)
        for item in applied:
            if not isinstance(item, dict):
                return copy.deepcopy(applied)
            index = next((i for i, c in enumerate(out_list) if isinstance(c, dict)
                          and all(c.get(k) == item.get(k) for k in keys)), None)
            if index is None:
                out_list.append(copy.deepcopy(item))
            else:
                out_list[index] = _merge_applied(out_list[index], item, item_schema, resolve)
        return out_list
    return copy.deepcopy(applied)


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _allowed_by_last_applied(live: dict[str, Any], live_tracked: dict[str, Any], schema: Schema,
                             resolve: Resolve) -> set[Path]:
    """The conflicts ``kubectl apply --server-side`` may take over from client-side apply: the fields of the
    last-applied annotation that still hold their last-applied value (kube-apiserver's lastAppliedManager,
    k8s.io/apimachinery/pkg/util/managedfields/internal/lastappliedmanager.go, which then forces the apply)."""
    raw = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    try:
        last = json.loads(raw) if raw else None
    except ValueError:
        last = None
    if not isinstance(last, dict):
        return set()
    last_tracked = _tracked(last, False)
    return {p for p in field_paths(last_tracked, schema, resolve)
            if value_at(last_tracked, p) == value_at(live_tracked, p)}


def server_side_apply(live: dict[str, Any] | None, applied: dict[str, Any], schema: Schema, resolve: Resolve,
                      manager: str, api_version: str, *, force: bool, subresource: str = "") -> dict[str, Any]:
    """The object after ``manager`` applies ``applied`` to ``live`` (None: it does not exist yet)."""
    with_status = subresource == "status"
    applied_tracked = _tracked(applied, with_status)
    applied_paths = field_paths(applied_tracked, schema, resolve)
    base = copy.deepcopy(live) if live is not None else {"apiVersion": applied.get("apiVersion"),
                                                         "kind": applied.get("kind"), "metadata": {}}
    live_tracked = _tracked(base, with_status)
    previous: set[Path] = set()
    others: list[tuple[dict[str, Any], set[Path]]] = []
    for entry in _managers(base):
        paths = from_fields_v1(entry.get("fieldsV1") or {})
        if entry["manager"] == manager and entry["operation"] == "Apply" and entry.get("subresource", "") == subresource:
            previous = paths
        else:
            others.append((entry, paths))
    clashes = [(entry["manager"], p) for entry, paths in others
               if entry.get("subresource", "") == subresource
               for p in sorted(paths & applied_paths) if p[-1] != "."
               and value_at(live_tracked, p) != value_at(applied_tracked, p)]
    if clashes and not force and manager == "kubectl":
        allowed = _allowed_by_last_applied(base, live_tracked, schema, resolve)
        force = all(p in allowed for _, p in clashes)
    if clashes and not force:
        raise ApplyConflict([(m, show_path(p)) for m, p in clashes])
    owned_by_others = set().union(*(paths for _, paths in others)) if others else set()
    for path in sorted(previous - applied_paths - owned_by_others, key=len, reverse=True):
        _remove(base, path)
        for depth in range(len(path) - 1, 0, -1):  # a map emptied by the removal goes with it
            parent = path[:depth]
            if parent[-1].startswith("f:") and value_at(base, parent) == {} and parent not in owned_by_others:
                _remove(base, parent)
            else:
                break
    merged = _merge_applied(_tracked(base, with_status), applied_tracked, schema, resolve)
    meta = base.setdefault("metadata", {})
    for key in ("labels", "annotations"):
        if key in (merged.get("metadata") or {}):
            meta[key] = merged["metadata"][key]
        elif key in meta and not meta[key]:
            meta.pop(key)
    for key, value in merged.items():
        if key != "metadata":
            base[key] = value
    for key in list(base):
        if key not in ("apiVersion", "kind", "metadata") and key not in merged and (with_status or key != "status"):
            base.pop(key)
    entries = []
    for entry, paths in others:
        if force and entry.get("subresource", "") == subresource:
            paths = paths - applied_paths
        if paths:
            entries.append({**entry, "fieldsV1": to_fields_v1(paths)})
    entries.append(_entry(manager, "Apply", api_version, applied_paths, subresource))
    meta["managedFields"] = entries
    for key in ("name", "namespace", "generateName"):
        if key in (applied.get("metadata") or {}) and key not in meta:
            meta[key] = applied["metadata"][key]
    return base
