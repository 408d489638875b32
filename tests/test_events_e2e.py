"""Kubernetes Events on the transitions that matter, once each, with no secret in them; `kubectl describe`
shows them (kubectl is the real client)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from tests.kubehelpers import Kube, wait_for
from tests.test_collection_e2e import RESULT, SPEC

pytestmark = pytest.mark.e2e


def events(kube: Kube, namespace: str, name: str) -> list[dict[str, Any]]:
    items = kube.to_dict(kubernetes.client.EventsV1Api(kube.api).list_namespaced_event(namespace))["items"]
    mine = [e for e in items if (e.get("regarding") or {}).get("name") == name]
    return sorted(mine, key=lambda e: e.get("eventTime") or "")


def reasons(kube: Kube, namespace: str, name: str) -> list[tuple[str, str]]:
    return [(e["type"], e["reason"]) for e in events(kube, namespace, name)]


def test_a_collections_story_is_told_once(kube: Kube, namespace: str, operator: None, kubeconfig: Path) -> None:
    kube.require_emulated()  # plays the job controller
    kube.usable_secret(namespace, "later", {"api-key": "sk-event-secret-77"}, usable=False,
                       allowed_urls=SPEC["llm"]["baseUrl"])
    spec = {**SPEC, "llm": {**SPEC["llm"], "apiKeySecretRef": {"name": "later", "key": "api-key"}}}
    kube.create("DPOCollection", namespace, "story", spec)
    wait_for(lambda: ("Warning", "SecretNotUsable") in reasons(kube, namespace, "story"), what="SecretNotUsable event")
    kube.core.patch_namespaced_secret("later", namespace, {"metadata": {"labels": {"dpo.ai/usable": "true"}}})
    wait_for(lambda: kube.job(namespace, "story-collect"), timeout=30, what="collection job")
    kube.wait_phase("DPOCollection", namespace, "story", "Pending")
    kube.start_job(namespace, "story-collect")
    kube.wait_phase("DPOCollection", namespace, "story", "Running")
    kube.patch_spec("DPOCollection", namespace, "story", {"numRuns": 1})  # a reconcile that changes no phase
    kube.finish_job(namespace, "story-collect", succeeded=True, message=json.dumps(RESULT))
    kube.wait_phase("DPOCollection", namespace, "story", "Succeeded")
    expected = [("Warning", "SecretNotUsable"), ("Normal", "JobCreated"), ("Normal", "PodsRunning"),
                ("Normal", "Collected")]
    wait_for(lambda: reasons(kube, namespace, "story") == expected, what=f"events {expected}")
    story = events(kube, namespace, "story")
    assert story[-1]["note"] == "collected 10 preference pairs" and story[-1]["action"] == "Succeeded"
    # one Event per transition: handlers racing on the same transition bump its series count, never add events
    assert len(story) == len(expected)
    assert all(e["regarding"]["kind"] == "DPOCollection" and e["reportingController"] == "dpo.ai/dpo-operator"
               for e in story)
    assert "sk-event-secret-77" not in json.dumps(story)

    if shutil.which("kubectl"):  # what `kubectl describe` lists under Events, through the real client
        listed = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "get", "events", "-n", namespace,
                                 "-o", "json"], capture_output=True, text=True, timeout=30)
        assert listed.returncode == 0, listed.stderr
        uid = story[0]["regarding"]["uid"]  # core v1 Events: the same Events, converted as kube-apiserver does
        core = [e for e in json.loads(listed.stdout)["items"] if e["involvedObject"]["uid"] == uid]
        assert sorted(e["reason"] for e in core) == sorted(r for _, r in expected)
        assert {e["reportingComponent"] for e in core} == {"dpo.ai/dpo-operator"}
        assert "collected 10 preference pairs" in {e["message"] for e in core}
        described = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "describe", "dpocollection", "story",
                                    "-n", namespace], capture_output=True, text=True, timeout=30)
        assert described.returncode == 0, described.stderr
        events_section = described.stdout.split("Events:", 1)[1]
        for kind, reason in expected:
            assert reason in events_section and kind in events_section


def test_a_failure_is_a_warning_with_its_reason(kube: Kube, namespace: str, operator: None) -> None:
    kube.require_emulated()
    kube.create("DPOCollection", namespace, "doomed", SPEC)
    wait_for(lambda: kube.job(namespace, "doomed-collect"), what="collection job")
    kube.finish_job(namespace, "doomed-collect", succeeded=False, reason="BackoffLimitExceeded",
                    message=json.dumps({"error": "LLM endpoint unreachable"}))
    kube.wait_phase("DPOCollection", namespace, "doomed", "Failed")
    wait_for(lambda: ("Warning", "BackoffLimitExceeded") in reasons(kube, namespace, "doomed"), what="failure event")
    failure = next(e for e in events(kube, namespace, "doomed") if e["reason"] == "BackoffLimitExceeded")
    assert "LLM endpoint unreachable" in failure["note"] and "series" not in failure  # recorded once
