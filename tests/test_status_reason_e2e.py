"""status.reason names why a resource is in its phase (the reason of the condition that explains it), and
`kubectl get -o wide` shows it with the message in the REASON and MESSAGE columns."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.kubehelpers import Kube, wait_for
from tests.test_collection_e2e import RESULT, SPEC

pytestmark = pytest.mark.e2e


def explaining_reason(status: dict[str, Any]) -> str | None:
    """The reason of the True condition among those that explain a phase."""
    explaining = ("Progressing", "Succeeded", "Ready", "Failed", "Suspended")
    return next((c["reason"] for c in status.get("conditions") or []
                 if c["type"] in explaining and c["status"] == "True"), None)


def reason_of(kube: Kube, namespace: str, name: str) -> str | None:
    return (kube.get("DPOCollection", namespace, name).get("status") or {}).get("reason")


def test_status_reason_follows_the_phase(kube: Kube, namespace: str, operator: None, kubeconfig: Path) -> None:
    kube.require_emulated()  # plays the job controller
    kube.usable_secret(namespace, "later", {"api-key": "sk-reason-secret"}, usable=False,
                       allowed_urls=SPEC["llm"]["baseUrl"])
    spec = {**SPEC, "llm": {**SPEC["llm"], "apiKeySecretRef": {"name": "later", "key": "api-key"}}}
    kube.create("DPOCollection", namespace, "why", spec)
    wait_for(lambda: reason_of(kube, namespace, "why") == "SecretNotUsable", what="reason SecretNotUsable")
    status = kube.get("DPOCollection", namespace, "why")["status"]
    assert status["phase"] == "Pending" and explaining_reason(status) == "SecretNotUsable"
    assert "later" in status["message"] and "sk-reason-secret" not in json.dumps(status)

    kube.core.patch_namespaced_secret("later", namespace, {"metadata": {"labels": {"dpo.ai/usable": "true"}}})
    wait_for(lambda: kube.job(namespace, "why-collect"), timeout=30, what="collection job")
    kube.start_job(namespace, "why-collect")
    kube.wait_phase("DPOCollection", namespace, "why", "Running")
    wait_for(lambda: reason_of(kube, namespace, "why") == "PodsRunning", what="reason PodsRunning")
    kube.finish_job(namespace, "why-collect", succeeded=True, message=json.dumps(RESULT))
    status = kube.wait_phase("DPOCollection", namespace, "why", "Succeeded")["status"]
    assert status["reason"] == explaining_reason(status) == "Collected"
    assert status["message"] == "collected 10 preference pairs"

    if shutil.which("kubectl"):  # the columns through the real client
        out = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "get", "dpoc", "why", "-n", namespace,
                              "-o", "wide"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        header, row = (re.split(r"\s{2,}", line.strip()) for line in out.stdout.strip().splitlines())
        cells = dict(zip(header, row))
        assert (cells["PHASE"], cells["REASON"], cells["MESSAGE"]) == \
            ("Succeeded", "Collected", "collected 10 preference pairs")
