"""What the emulated API server serves: the built-in resources and, once their CRDs exist, the custom ones."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dpo_operator.kubeemu import reviews
from dpo_operator.kubeemu.schema_validation import ResourceSchema

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = ("get", "patch", "update")


@dataclass
class Served:
    """One resource (group/version/plural) with the names and schema discovery and OpenAPI publish."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    status_subresource: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    schema: ResourceSchema | None = None  # custom resources: the CRD's openAPIV3Schema
    printer_columns: list[dict[str, Any]] = field(default_factory=list)
    verbs: tuple[str, ...] = VERBS
    selectable: list[str] | None = None  # custom resources: the CRD's selectableFields (labels, without the dot)
    scale: bool = False  # the scale subresource (built-in workloads)

    def __post_init__(self) -> None:
        self.singular = self.singular or self.kind.lower()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def custom(self) -> bool:
        return self.schema is not None or self.group not in BUILTIN_GROUPS


# (group, version, plural, kind, namespaced, status subresource, short names, categories)
BUILTINS: tuple[tuple[str, str, str, str, bool, bool, tuple[str, ...], tuple[str, ...]], ...] = (
    ("", "v1", "namespaces", "Namespace", False, True, ("ns",), ()),
    ("", "v1", "nodes", "Node", False, True, ("no",), ()),
    ("", "v1", "events", "Event", True, False, ("ev",), ()),
    ("", "v1", "pods", "Pod", True, True, ("po",), ("all",)),
    ("", "v1", "services", "Service", True, True, ("svc",), ("all",)),
    ("", "v1", "configmaps", "ConfigMap", True, False, ("cm",), ()),
    ("", "v1", "secrets", "Secret", True, False, (), ()),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, True, ("pvc",), ()),
    ("", "v1", "serviceaccounts", "ServiceAccount", True, False, ("sa",), ()),
    ("events.k8s.io", "v1", "events", "Event", True, False, ("ev",), ()),
    ("batch", "v1", "jobs", "Job", True, True, (), ("all",)),
    ("apps", "v1", "deployments", "Deployment", True, True, ("deploy",), ("all",)),
    ("coordination.k8s.io", "v1", "leases", "Lease", True, False, (), ()),
    # stored and served, with no controller behind them: what charts and common tools create or discover
    ("", "v1", "endpoints", "Endpoints", True, False, ("ep",), ()),
    ("", "v1", "replicationcontrollers", "ReplicationController", True, True, ("rc",), ("all",)),
    ("", "v1", "persistentvolumes", "PersistentVolume", False, True, ("pv",), ()),
    ("apps", "v1", "statefulsets", "StatefulSet", True, True, ("sts",), ("all",)),
    ("apps", "v1", "replicasets", "ReplicaSet", True, True, ("rs",), ("all",)),
    ("apps", "v1", "daemonsets", "DaemonSet", True, True, ("ds",), ("all",)),
    ("batch", "v1", "cronjobs", "CronJob", True, True, ("cj",), ("all",)),
    ("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, False, ("netpol",), ()),
    ("networking.k8s.io", "v1", "ingresses", "Ingress", True, True, ("ing",), ()),
    ("networking.k8s.io", "v1", "ingressclasses", "IngressClass", False, False, (), ()),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, True, ("pdb",), ()),
    ("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, False, ("sc",), ()),
    ("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True, True, ("hpa",), ("all",)),
    ("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True, False, (), ()),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False, True,
     ("crd", "crds"), ("api-extensions",)),
    # stored and served, not enforced (kubeemu.rbac)
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, False, (), ()),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False, False, (), ()),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", True, False, (), ()),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, False, (), ()),
)
BUILTIN_GROUPS = {b[0] for b in BUILTINS} | {reviews.GROUP}
SCALABLE = {("apps", "deployments"), ("apps", "statefulsets"), ("apps", "replicasets"), ("", "replicationcontrollers")}


def builtin_resources() -> list[Served]:
    served = [Served(group, version, plural, kind, namespaced, status, short_names=short, categories=categories,
                     scale=(group, plural) in SCALABLE)
              for group, version, plural, kind, namespaced, status, short, categories in BUILTINS]
    # create-only access reviews, answered and never stored (kubeemu.reviews)
    return served + [Served(reviews.GROUP, "v1", plural, kind, namespaced, False, verbs=("create",))
                     for plural, kind, namespaced in reviews.KINDS]


def from_crd(crd: dict[str, Any]) -> list[Served]:
    """The served versions of a CustomResourceDefinition."""
    spec, names = crd["spec"], crd["spec"]["names"]
    served = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        open_api = (version.get("schema") or {}).get("openAPIV3Schema")
        served.append(Served(
            spec["group"], version["name"], names["plural"], names["kind"],
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            status_subresource="status" in (version.get("subresources") or {}),
            singular=names.get("singular") or names["kind"].lower(),
            short_names=tuple(names.get("shortNames") or ()), categories=tuple(names.get("categories") or ()),
            schema=ResourceSchema(open_api or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
            printer_columns=list(version.get("additionalPrinterColumns") or []),
            selectable=[f["jsonPath"].lstrip(".") for f in version.get("selectableFields") or []],
        ))
    return served
