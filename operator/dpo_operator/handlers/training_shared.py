"""What both DPOTrainingJob backends share: finding the dataset, volume paths, and deploy-on-completion."""

from __future__ import annotations

from typing import Any

from dpo_operator.api import collection as collection_api
from dpo_operator.api import deployment as deployment_api
from dpo_operator.api.common import Phase, StorageLocation
from dpo_operator.api.reasons import Reason
from dpo_operator.api.training import DPOTrainingJobSpec, DPOTrainingJobStatus
from dpo_operator.kube import custom_objects
from dpo_operator.kube.status import Outcome
from dpo_operator.render.deployment import deployment_for
from dpo_operator.render.paths import MOUNT_ROOT, mounted  # noqa: F401  (used by the backends)
from dpo_operator.runtime.errors import InvalidSpec, PermanentFailure


def resolve_dataset(body: Any, spec: DPOTrainingJobSpec) -> StorageLocation | Outcome:
    """The dataset's location, or the outcome to report while the referenced collection is not done."""
    if spec.dataset.location is not None:
        return spec.dataset.location
    assert spec.dataset.collection_ref is not None
    ref, namespace = spec.dataset.collection_ref.name, body["metadata"]["namespace"]
    if spec.dataset.collection_ref.namespace not in (None, namespace):
        raise InvalidSpec(f"spec.dataset.collectionRef.namespace {spec.dataset.collection_ref.namespace!r}: a "
                          f"DPOTrainingJob uses collections of its own namespace ({namespace}) only, whose PVC its pods "
                          "can mount; create the DPOTrainingJob there, or give the dataset's location "
                          "(spec.dataset.location, e.g. a Hub repo)")
    collection = custom_objects.read(collection_api.KIND, namespace, ref)
    if collection is None:
        return Outcome(Phase.PENDING.value, Reason.WaitingForDataset, f"DPOCollection {ref} does not exist (yet)")
    phase = (collection.get("status") or {}).get("phase")
    if phase in (Phase.FAILED.value, Phase.CANCELLED.value):
        raise PermanentFailure(Reason.DatasetFailed, f"DPOCollection {ref} ended {phase}: "
                                                f"{(collection.get('status') or {}).get('message', '')}")
    if phase != Phase.SUCCEEDED.value:
        return Outcome(Phase.PENDING.value, Reason.WaitingForDataset, f"waiting for DPOCollection {ref} (phase {phase or 'unknown'})")
    return collection_api.DPOCollectionSpec.model_validate(collection["spec"]).output


def deploy_if_requested(body: Any, spec: DPOTrainingJobSpec, status: DPOTrainingJobStatus) -> None:
    """Create the ModelDeployment of ``deployOnCompletion`` (once), and record its name in ``status``."""
    deployment = deployment_for(body, spec)
    if deployment is None:
        return
    custom_objects.ensure(deployment_api.KIND, body["metadata"]["namespace"], deployment)
    status.deployment_name = deployment["metadata"]["name"]
