"""The customizer backend's API generation fields (v1 / v2 NeMo platform / auto): admission rules, the spec model and
the shared v2 client's paths and error classification."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from dpo_operator import crdgen
from dpo_operator.api.training import KIND, CustomizerApiVersion, CustomizerBackend
from dpo_operator.kubeemu.schema_validation import InvalidObject, ResourceSchema
from dpo_operator.nemo.http import NemoError
from dpo_operator.nemo.platform.client import PlatformClient

PLATFORM = "http://nemo-platform:8080"
V1 = {"entityStoreUrl": "http://nemo", "datastoreUrl": "http://nemo"}
LORA_REFUSED = "PEFT is not supported with DPO training on the NeMo platform v2; use finetuningType: all_weights"


def _schema() -> ResourceSchema:
    return ResourceSchema(crdgen.crd_for(KIND)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def _job(customizer: dict[str, Any], **hyperparameters: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"dataset": {"collectionRef": {"name": "c"}}, "model": {"name": "default/llama"},
                            "backend": "customizer", "customizer": customizer}
    if hyperparameters:
        spec["hyperparameters"] = hyperparameters
    return {"spec": spec}


@pytest.mark.parametrize("customizer", [{"apiVersion": "v2", "platformUrl": PLATFORM}, {"platformUrl": PLATFORM},
                                        {"apiVersion": "v2", "platformUrl": PLATFORM, **V1}])
def test_lora_on_v2_is_refused_at_admission(customizer: dict[str, Any]) -> None:
    with pytest.raises(InvalidObject, match=LORA_REFUSED):
        _schema().admit(_job(customizer), None, strict=True)  # finetuningType defaults to lora
    stored = _schema().admit(_job(customizer, finetuningType="all_weights"), None, strict=True)
    assert stored["spec"]["customizer"]["workspace"] == "default"
    assert stored["spec"]["customizer"]["platformBackend"] == "rl"


def test_lora_is_admitted_where_admission_cannot_tell_the_generation() -> None:
    """auto with both kinds of URL asks the server: the operator refuses LoRA there if it is v2."""
    stored = _schema().admit(_job({"platformUrl": PLATFORM, **V1}), None, strict=True)
    assert stored["spec"]["customizer"]["apiVersion"] == "auto"
    assert _schema().admit(_job(V1), None, strict=True)["spec"]["hyperparameters"]["finetuningType"] == "lora"


@pytest.mark.parametrize(("customizer", "message"), [
    ({}, "customizer needs platformUrl (the NeMo platform, v2) or entityStoreUrl and datastoreUrl"),
    ({"entityStoreUrl": "http://nemo"}, "customizer needs platformUrl"),
    ({"apiVersion": "v2", **V1}, "customizer.apiVersion v2 needs customizer.platformUrl"),
    ({"apiVersion": "v1", "platformUrl": PLATFORM}, "customizer.apiVersion v1 needs customizer.entityStoreUrl"),
])
def test_urls_must_fit_the_generation(customizer: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidObject, match=re.escape(message)):
        _schema().admit(_job(customizer, finetuningType="all_weights"), None, strict=True)
    with pytest.raises(ValidationError, match=re.escape(message)):
        CustomizerBackend.model_validate(customizer)


def test_where_the_remote_job_lives_is_immutable() -> None:
    old = _schema().admit(_job({"platformUrl": PLATFORM}, finetuningType="all_weights"), None, strict=True)
    moved = {"spec": {**old["spec"], "customizer": {**old["spec"]["customizer"], "workspace": "other"}}}
    with pytest.raises(InvalidObject, match="customizer.workspace"):
        _schema().admit(moved, old, strict=True)
    paced = {"spec": {**old["spec"], "customizer": {**old["spec"]["customizer"], "pollIntervalSeconds": 5}}}
    assert _schema().admit(paced, old, strict=True)["spec"]["customizer"]["pollIntervalSeconds"] == 5


@pytest.mark.parametrize(("customizer", "declared"), [
    ({"platformUrl": PLATFORM}, CustomizerApiVersion.V2), (V1, CustomizerApiVersion.V1),
    ({"platformUrl": PLATFORM, **V1}, None), ({"apiVersion": "v1", "platformUrl": PLATFORM, **V1},
                                              CustomizerApiVersion.V1)])
def test_the_declared_generation(customizer: dict[str, Any], declared: CustomizerApiVersion | None) -> None:
    assert CustomizerBackend.model_validate(customizer).declared_version == declared


def _client(handler: Any, **kwargs: Any) -> PlatformClient:
    return PlatformClient(PLATFORM, "team a", api_key="k", transport=httpx.MockTransport(handler), **kwargs)


def test_client_paths_quote_each_part_and_keep_a_file_path() -> None:
    client = _client(lambda r: httpx.Response(200))
    assert client.path("files", "filesets", "my set", "-", "dir/training.jsonl") == \
        "/apis/files/v2/workspaces/team%20a/filesets/my%20set/-/dir/training.jsonl"
    assert client.path("jobs", "jobs", "a/b") == "/apis/jobs/v2/workspaces/team%20a/jobs/a%2Fb"


def test_client_sends_the_key_and_classifies_errors() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = int(request.url.path.rsplit("/", 1)[-1])
        detail: Any = [{"loc": ["body", "spec", "training"], "msg": "Extra inputs are not permitted",
                        "type": "extra_forbidden"}] if status == 422 else "no"
        return httpx.Response(status, json={"detail": detail})
    client = _client(handler)
    for status, transient in ((503, True), (429, True), (404, False), (409, False)):
        with pytest.raises(NemoError) as caught:
            client.request("GET", "jobs", "jobs", str(status))
        assert (caught.value.status, caught.value.transient) == (status, transient)
    assert client.request("GET", "jobs", "jobs", "409", ok=(409,)) == {"detail": "no"}
    with pytest.raises(NemoError, match="body.spec.training: Extra inputs are not permitted"):
        client.request("POST", "jobs", "jobs", "422", json={})
    assert {r.headers["Authorization"] for r in seen} == {"Bearer k"}


def test_detect_asks_the_customization_router() -> None:
    assert _client(lambda r: httpx.Response(200, json={"plugin": "customization", "status": "ok"})).detect() == "v2"
    assert _client(lambda r: httpx.Response(404, json={"detail": "Not Found"})).detect() == "v1"
    with pytest.raises(NemoError):
        _client(lambda r: httpx.Response(503)).detect()
