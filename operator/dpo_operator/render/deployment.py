"""The ModelDeployment a DPOTrainingJob's ``deployOnCompletion`` creates (pure builder)."""

from __future__ import annotations

from typing import Any

from dpo_operator.api import API_VERSION
from dpo_operator.api import deployment as deployment_api
from dpo_operator.api.training import KIND, DPOTrainingJobSpec
from dpo_operator.kube.naming import labels_for, owner_reference


def deployment_for(body: Any, spec: DPOTrainingJobSpec) -> dict[str, Any] | None:
    if spec.deploy_on_completion is None:
        return None
    name = body["metadata"]["name"]
    deploy_spec = {**spec.deploy_on_completion.deployment_spec(), "model": {"trainingJobRef": {"name": name}}}
    return {"apiVersion": API_VERSION, "kind": deployment_api.KIND.kind,
            "metadata": {"name": name, "namespace": body["metadata"]["namespace"],
                         "labels": labels_for(KIND.kind, name, "deployment"),
                         "ownerReferences": [owner_reference(KIND.kind, body)]},
            "spec": deploy_spec}
