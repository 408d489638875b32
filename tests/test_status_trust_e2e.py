"""Status you can trust: spec changes that cannot reach a running Job are reported (SpecApplied), the observed
generation always catches up (also after the resource finished), a DPOTrainingJob whose invalid spec is fixed is
retried, and a terminal status is never written over a change it did not see."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.kubehelpers import Kube, conditions_of, status_of, wait_for
from tests.test_collection_e2e import RESULT, SPEC
from tests.test_training_e2e import NO_CHECK, TRAINING

pytestmark = pytest.mark.e2e


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj["status"]["conditions"]}


def observed(obj: dict[str, Any]) -> bool:
    """The operator's status is about the object's current generation."""
    return status_of(obj).get("observedGeneration") == obj["metadata"]["generation"]


def caught_up(kube: Kube, kind: str, namespace: str, name: str) -> dict[str, Any]:
    return wait_for(lambda: (o := kube.get(kind, namespace, name)) and observed(o) and o,
                    what=f"{name} observing its generation")


def test_a_change_a_running_job_cannot_take_is_reported(kube: Kube, namespace: str, operator: None) -> None:
    kube.require_emulated()
    kube.create("DPOCollection", namespace, "live", SPEC)
    wait_for(lambda: kube.job(namespace, "live-collect"), what="collection job")
    kube.start_job(namespace, "live-collect")
    running = kube.wait_phase("DPOCollection", namespace, "live", "Running")
    assert conditions(running)["SpecApplied"]["status"] == "True"
    kube.patch_spec("DPOCollection", namespace, "live", {"candidatesPerTurn": 6, "template": {"image": "other:2"}})
    changed = wait_for(lambda: (o := kube.get("DPOCollection", namespace, "live")) and observed(o)
                       and conditions_of(o).get("SpecApplied", {}).get("status") == "False" and o, what="ChangeNotApplied")
    applied = conditions(changed)["SpecApplied"]
    assert applied["reason"] == "ChangeNotApplied" and "candidatesPerTurn, template" in applied["message"]
    assert applied["observedGeneration"] == changed["metadata"]["generation"]
    assert changed["status"]["phase"] == "Running"


def test_a_finished_resource_still_observes_spec_edits(kube: Kube, namespace: str, operator: None) -> None:
    kube.require_emulated()
    kube.create("DPOCollection", namespace, "done", SPEC)
    wait_for(lambda: kube.job(namespace, "done-collect"), what="collection job")
    kube.finish_job(namespace, "done-collect", succeeded=True, message=json.dumps(RESULT))
    kube.wait_phase("DPOCollection", namespace, "done", "Succeeded")
    kube.patch_spec("DPOCollection", namespace, "done", {"numRuns": 3})
    after = caught_up(kube, "DPOCollection", namespace, "done")
    assert after["status"]["phase"] == "Succeeded"
    assert conditions(after)["SpecApplied"]["reason"] == "ResourceFinished"
    assert conditions(after)["Succeeded"]["observedGeneration"] == after["metadata"]["generation"]


def test_a_fixed_invalid_training_spec_is_retried(kube: Kube, namespace: str, operator: None) -> None:
    spec = {**TRAINING, "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/ds"}}, **NO_CHECK},
            "local": {"gpusPerNode": 1}}  # no output: InvalidSpec
    kube.create("DPOTrainingJob", namespace, "fixme", spec)
    failed = kube.wait_phase("DPOTrainingJob", namespace, "fixme", "Failed")
    assert conditions(failed)["Failed"]["reason"] == "InvalidSpec"
    kube.patch_spec("DPOTrainingJob", namespace, "fixme", {"local": {"output": {"claimName": "dpo-data", "path": "/m"}}})
    wait_for(lambda: kube.job(namespace, "fixme-train"), what="the job after the fix")
    pending = kube.wait_phase("DPOTrainingJob", namespace, "fixme", "Pending")
    assert conditions(pending)["Failed"]["status"] == "False"


def test_a_terminal_status_is_not_written_over_a_change_it_did_not_see(kube: Kube, namespace: str) -> None:
    kube.require_emulated()  # calls the operator's status writer directly
    from dpo_operator.api.collection import KIND
    from dpo_operator.kube import client
    from dpo_operator.kube.status import Outcome, write_status

    client.load()
    created = kube.create("DPOCollection", namespace, "raced", SPEC)
    write_status(KIND, created, Outcome("Pending", "Submitted", "submitted meanwhile"))  # another handler's write
    with pytest.raises(ApiException) as conflict:
        write_status(KIND, created, Outcome("Failed", "RemoteApiError", "decided on a stale copy"))
    assert conflict.value.status == 409
    assert kube.get("DPOCollection", namespace, "raced")["status"]["phase"] == "Pending"
    fresh = kube.get("DPOCollection", namespace, "raced")
    write_status(KIND, fresh, Outcome("Failed", "RemoteApiError", "decided on the current copy"))
    assert kube.get("DPOCollection", namespace, "raced")["status"]["phase"] == "Failed"
