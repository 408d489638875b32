"""API discovery as kube-apiserver serves it: the legacy documents and the aggregated ``apidiscovery.k8s.io/v2``.

kubectl asks for the aggregated form first (``Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=
APIGroupDiscoveryList``) and reads the legacy ``/api``, ``/apis``, ``/apis/<group>/<version>`` otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from dpo_operator.kubeemu.registry import SUBRESOURCE_VERBS, Served

AGGREGATED = "application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"


def wants_aggregated(accept: str) -> str | None:
    """The aggregated discovery version the client accepts first (v2 or v2beta1), if any."""
    for part in accept.split(","):
        params = dict(p.strip().split("=", 1) for p in part.split(";")[1:] if "=" in p)
        if params.get("g") == "apidiscovery.k8s.io" and params.get("as") == "APIGroupDiscoveryList":
            if params.get("v") in ("v2", "v2beta1"):
                return params["v"]
    return None


def _groups(resources: Iterable[Served]) -> dict[str, dict[str, list[Served]]]:
    groups: dict[str, dict[str, list[Served]]] = {}
    for res in sorted(resources, key=lambda r: (r.group, r.version, r.plural)):
        groups.setdefault(res.group, {}).setdefault(res.version, []).append(res)
    return groups


def _preferred(versions: Iterable[str]) -> list[str]:
    """Versions in Kubernetes priority order: GA, then beta, then alpha, newest first."""
    def rank(v: str) -> tuple[int, int, int]:
        m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", v)
        if not m:
            return (3, 0, 0)
        stage = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
        return (stage, -int(m.group(1)), -int(m.group(3) or 0))
    return sorted(versions, key=rank)


def api_versions() -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}


def _group_entry(name: str, versions: list[str]) -> dict[str, Any]:
    ordered = _preferred(versions)
    listed = [{"groupVersion": f"{name}/{v}", "version": v} for v in ordered]
    return {"name": name, "versions": listed, "preferredVersion": listed[0]}


def api_group_list(resources: Iterable[Served]) -> dict[str, Any]:
    groups = _groups(resources)
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group_entry(name, list(versions)) for name, versions in groups.items() if name]}


def api_group(resources: Iterable[Served], group: str) -> dict[str, Any] | None:
    versions = _groups(resources).get(group)
    return None if not versions or not group else {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(group, list(versions))}


def api_resource_list(resources: Iterable[Served], group: str, version: str) -> dict[str, Any] | None:
    served = _groups(resources).get(group, {}).get(version)
    if not served:
        return None
    listed: list[dict[str, Any]] = []
    for res in served:
        main = {"name": res.plural, "singularName": res.singular, "namespaced": res.namespaced, "kind": res.kind,
                "verbs": list(res.verbs)}
        if res.short_names:
            main["shortNames"] = list(res.short_names)
        if res.categories:
            main["categories"] = list(res.categories)
        listed.append(main)
        if res.status_subresource:
            listed.append({"name": f"{res.plural}/status", "singularName": "", "namespaced": res.namespaced,
                           "kind": res.kind, "verbs": list(SUBRESOURCE_VERBS)})
        if res.scale:
            listed.append({"name": f"{res.plural}/scale", "singularName": "", "namespaced": res.namespaced,
                           "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": list(SUBRESOURCE_VERBS)})
        if res.kind == "Pod" and not res.group:
            listed.append({"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]})
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": served[0].group_version,
            "resources": listed}


def _aggregated_resource(res: Served) -> dict[str, Any]:
    kind = {"group": res.group, "version": res.version, "kind": res.kind}
    entry: dict[str, Any] = {"resource": res.plural, "responseKind": kind, "scope":
                             "Namespaced" if res.namespaced else "Cluster", "singularResource": res.singular,
                             "verbs": list(res.verbs)}
    if res.short_names:
        entry["shortNames"] = list(res.short_names)
    if res.categories:
        entry["categories"] = list(res.categories)
    subresources = []
    if res.status_subresource:
        subresources.append({"subresource": "status", "responseKind": kind, "verbs": list(SUBRESOURCE_VERBS)})
    if res.scale:
        subresources.append({"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1",
                                                                      "kind": "Scale"}, "verbs": list(SUBRESOURCE_VERBS)})
    if res.kind == "Pod" and not res.group:
        subresources.append({"subresource": "log", "responseKind": kind, "verbs": ["get"]})
    if subresources:
        entry["subresources"] = subresources
    return entry


def aggregated(resources: Iterable[Served], *, legacy: bool, version: str = "v2") -> dict[str, Any]:
    """``/api`` (legacy=True: the core group only) or ``/apis`` (every named group) as an APIGroupDiscoveryList."""
    items = []
    for name, versions in _groups(resources).items():
        if (name == "") != legacy:
            continue
        items.append({"metadata": {"name": name} if name else {},
                      "versions": [{"version": v, "freshness": "Current",
                                    "resources": [_aggregated_resource(r) for r in versions[v]]}
                                   for v in _preferred(versions)]})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": f"apidiscovery.k8s.io/{version}", "metadata": {},
            "items": items}
