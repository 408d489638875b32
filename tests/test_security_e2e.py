"""Hostile input against the real operator on the emulated cluster: Secrets are used only when they opt in, and a
remote error that echoes the request (bearer token included) never reaches status, events or logs."""

from __future__ import annotations

import json
from typing import Any

import kubernetes
import pytest

from tests.echo_server import EchoServer
from tests.kubehelpers import Kube, reason_of, wait_for
from tests.test_collection_e2e import SPEC as COLLECTION_SPEC

pytestmark = pytest.mark.e2e
STOLEN = "s3cr3t-VALUE-from-another-team"


def customizer_spec(url: str, secret: str = "stolen") -> dict[str, Any]:
    return {"backend": "customizer",
            "dataset": {"location": {"hub": {"endpoint": f"{url}/v1/hf", "repoId": "team-a/pairs"}}},
            "model": {"name": "meta/llama-3.2-1b-instruct@v1.0.0+A100"},
            "customizer": {"entityStoreUrl": url, "datastoreUrl": url, "namespace": "team-a",
                           "apiKeySecretRef": {"name": secret, "key": "token"}, "pollIntervalSeconds": 1}}


def reason(obj: dict[str, Any], condition: str) -> str:
    return {c["type"]: c for c in obj["status"]["conditions"]}[condition]["reason"]


def events_text(kube: Kube, namespace: str) -> str:
    events = kubernetes.client.EventsV1Api(kube.api).list_namespaced_event(namespace)
    return json.dumps([kube.to_dict(events), kube.to_dict(kube.core.list_namespaced_event(namespace))])


def test_unlabelled_secret_is_never_sent_and_echoed_secrets_are_redacted(kube: Kube, namespace: str) -> None:
    kube.require_emulated()  # runs its own operator to read its log
    from kopf.testing import KopfRunner

    kube.usable_secret(namespace, "stolen", {"token": STOLEN}, usable=False)
    args = ["run", "--standalone", "--namespace", namespace, "-m", "dpo_operator.handlers"]
    with EchoServer(status=400) as echo, KopfRunner(args, timeout=60) as runner:
        kube.create("DPOTrainingJob", namespace, "exfil", customizer_spec(echo.url))
        pending = wait_for(lambda: (o := kube.get("DPOTrainingJob", namespace, "exfil")).get("status", {}).get(
            "phase") == "Pending" and reason_of(o, "Progressing") == "SecretNotUsable" and o, what="SecretNotUsable")
        assert 'dpo.ai/usable="true"' in pending["status"]["message"]
        assert echo.requests == []  # the Secret was not sent anywhere

        # its owner opts in, but binds it to its own NeMo host: still never sent to the spec's URL
        kube.core.patch_namespaced_secret("stolen", namespace, {"metadata": {
            "labels": {"dpo.ai/usable": "true"},
            "annotations": {"dpo.ai/allowed-urls": f"http://nemo.team-a.svc:8000, {echo.url}/only-below-here"}}})
        bound = wait_for(lambda: (o := kube.get("DPOTrainingJob", namespace, "exfil")).get("status", {}).get(
            "phase") == "Pending" and reason(o, "Progressing") == "SecretDestinationNotAllowed" and o,
            what="SecretDestinationNotAllowed")
        message = bound["status"]["message"]
        assert f"may not be sent to {echo.url}" in message and "kubectl annotate secret" in message
        assert "dpo.ai/allowed-urls" in message and STOLEN not in json.dumps(bound)
        assert echo.requests == []

        # the owner allows the URL: now the key is used, and the hostile server echoes it back in a huge error body
        kube.allow_urls(namespace, "stolen", echo.url)
        failed = kube.wait_phase("DPOTrainingJob", namespace, "exfil", "Failed", timeout=40)
        assert any(r.get("Authorization") == f"Bearer {STOLEN}" for r in echo.requests)
    message = failed["status"]["message"]
    assert reason(failed, "Failed") == "RemoteApiError" and "400" in message
    assert STOLEN not in json.dumps(failed) and "Bearer ***" in message
    assert len(message) <= 1024 and "x" * 400 not in message  # the remote body is bounded
    assert "RemoteApiError" in events_text(kube, namespace) and STOLEN not in events_text(kube, namespace)
    assert "exfil" in runner.output and STOLEN not in runner.output


def test_workload_secrets_must_opt_in_before_a_job_is_created(kube: Kube, namespace: str, operator: None) -> None:
    kube.usable_secret(namespace, "other-team", {"password": STOLEN}, usable=False,
                       allowed_urls=COLLECTION_SPEC["llm"]["baseUrl"])
    # the LLM key of the collection pod, through the spec's own field
    spec = {**COLLECTION_SPEC, "llm": {**COLLECTION_SPEC["llm"], "apiKeySecretRef": {"name": "other-team", "key": "password"}}}
    kube.create("DPOCollection", namespace, "by-ref", spec)
    # ... and through the pod template's env and envFrom
    template = {**COLLECTION_SPEC["template"],
                "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "other-team", "key": "password"}}}]}
    kube.create("DPOCollection", namespace, "by-env", {**COLLECTION_SPEC, "template": template})
    template = {**COLLECTION_SPEC["template"], "envFrom": [{"secretRef": {"name": "other-team"}}]}
    kube.create("DPOCollection", namespace, "by-envfrom", {**COLLECTION_SPEC, "template": template})
    # a missing key of a usable Secret is named before any pod fails on it
    spec = {**COLLECTION_SPEC, "llm": {**COLLECTION_SPEC["llm"], "apiKeySecretRef": {"name": "nim-key", "key": "nope"}}}
    kube.create("DPOCollection", namespace, "no-key", spec)

    for name in ("by-ref", "by-env", "by-envfrom"):
        pending = wait_for(lambda: (o := kube.get("DPOCollection", namespace, name)).get("status", {}).get(
            "phase") == "Pending" and o, what=f"{name} pending")
        assert reason(pending, "Progressing") == "SecretNotUsable", pending["status"]
        assert f"Secret {namespace}/other-team is not labelled" in pending["status"]["message"]
    missing = wait_for(lambda: (o := kube.get("DPOCollection", namespace, "no-key")).get("status", {}).get(
        "phase") == "Pending" and o, what="no-key pending")
    assert reason(missing, "Progressing") == "SecretNotFound" and "has no key 'nope'" in missing["status"]["message"]
    assert kube.jobs(namespace) == []

    # opting in releases the waiting collection (retried with backoff, no operator restart)
    kube.core.patch_namespaced_secret("other-team", namespace, {"metadata": {"labels": {"dpo.ai/usable": "true"}}})
    wait_for(lambda: kube.job(namespace, "by-ref-collect"), timeout=20, what="the job once the Secret opted in")
    assert STOLEN not in json.dumps(kube.jobs(namespace))  # referenced, never copied


def test_a_usable_secret_goes_to_a_pod_only_for_an_allowed_destination(kube: Kube, namespace: str,
                                                                       operator: None) -> None:
    """The collection pod sends its LLM key to llm.baseUrl and a template.env Secret anywhere: the Secret's
    annotation must allow that destination (``*`` for the latter) before any Job exists."""
    kube.usable_secret(namespace, "llm", {"token": STOLEN}, allowed_urls="http://nim.team-a.svc:8000/v1")
    hostile = {**COLLECTION_SPEC, "llm": {**COLLECTION_SPEC["llm"], "baseUrl": "http://collector.evil.example/v1",
                                          "apiKeySecretRef": {"name": "llm", "key": "token"}}}
    kube.create("DPOCollection", namespace, "to-evil", hostile)
    # the allowed host with another port, and the allowed prefix's sibling path, are other destinations too
    kube.create("DPOCollection", namespace, "other-port", {**hostile, "llm": {
        **hostile["llm"], "baseUrl": "http://nim.team-a.svc:9000/v1"}})
    kube.create("DPOCollection", namespace, "sibling", {**hostile, "llm": {
        **hostile["llm"], "baseUrl": "http://nim.team-a.svc:8000/v10"}})
    template = {**COLLECTION_SPEC["template"],
                "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "llm", "key": "token"}}}]}
    kube.create("DPOCollection", namespace, "by-env", {**COLLECTION_SPEC, "template": template})
    for name, where in (("to-evil", "to http://collector.evil.example/v1"),
                        ("other-port", "to http://nim.team-a.svc:9000/v1"),
                        ("sibling", "to http://nim.team-a.svc:8000/v10"), ("by-env", "to a pod that may send it anywhere")):
        pending = wait_for(lambda: (o := kube.get("DPOCollection", namespace, name)).get("status", {}).get(
            "phase") == "Pending" and reason(o, "Progressing") == "SecretDestinationNotAllowed" and o, what=name)
        assert f"Secret {namespace}/llm may not be sent {where}" in pending["status"]["message"]
    assert kube.jobs(namespace) == []

    kube.create("DPOCollection", namespace, "allowed", {**hostile, "llm": {
        **hostile["llm"], "baseUrl": "http://nim.team-a.svc:8000/v1/"}})
    job = wait_for(lambda: kube.job(namespace, "allowed-collect"), what="the job for the allowed destination")
    assert json.loads(job["spec"]["template"]["metadata"]["annotations"]["dpo.ai/secret-destinations"]) == {
        "OPENAI_API_KEY": "http://nim.team-a.svc:8000/v1/"}
    # a template cannot forge the destinations the check reads
    forged = {**hostile, "template": {**COLLECTION_SPEC["template"], "annotations": {
        "dpo.ai/secret-destinations": json.dumps({"OPENAI_API_KEY": "http://nim.team-a.svc:8000/v1"})}}}
    kube.create("DPOCollection", namespace, "forged", forged)
    pending = wait_for(lambda: (o := kube.get("DPOCollection", namespace, "forged")).get("status", {}).get(
        "phase") == "Pending" and reason(o, "Progressing") == "SecretDestinationNotAllowed" and o, what="forged")
    assert "collector.evil.example" in pending["status"]["message"]
    assert kube.job(namespace, "forged-collect") is None
