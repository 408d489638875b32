"""What the cluster's nodes offer: a pod asking for more GPUs than any node has can never be scheduled."""

from __future__ import annotations

from kubernetes.client.exceptions import ApiException

from dpo_operator.kube import client

GPU_RESOURCE = "nvidia.com/gpu"


def most_gpus_per_node(resource: str = GPU_RESOURCE) -> int | None:
    """The most ``resource`` any node can give one pod (its allocatable); None when not known: the operator may not
    list nodes, or no node offers any (a cluster autoscaler may add GPU nodes on demand)."""
    try:
        nodes = client.core().list_node()
    except ApiException as exc:
        if exc.status in (401, 403, 404):
            return None
        raise
    counts = []
    for node in nodes.items or []:
        allocatable = (node.status.allocatable if node.status else None) or {}
        try:
            counts.append(int(float(allocatable.get(resource, "0"))))
        except ValueError:
            continue
    return max(counts) if counts and max(counts) > 0 else None
