"""The nimOperator builders' rules: image references, where a PVC's directories appear in /model-store, and the
layouts a NIMService cannot mount."""

from __future__ import annotations

import pytest

from dpo_operator.api.common import PvcLocation
from dpo_operator.api.deployment import ModelDeploymentSpec
from dpo_operator.render import nimoperator
from dpo_operator.serving.model import ServedModel

OWNER = {"metadata": {"name": "md", "namespace": "ns", "uid": "u1"}}


@pytest.mark.parametrize(("image", "expected"), [
    ("nvcr.io/nim/meta/llama-3.2-1b-instruct:1.12.0", ("nvcr.io/nim/meta/llama-3.2-1b-instruct", "1.12.0")),
    ("localhost:5000/nim", ("localhost:5000/nim", "latest")),  # a registry port is not a tag
    ("nvcr.io/nim/x@sha256:abc", ("nvcr.io/nim/x", "sha256:abc")),
])
def test_split_image(image: str, expected: tuple[str, str]) -> None:
    assert nimoperator.split_image(image) == expected


def test_weights_and_adapter_paths_appear_under_the_model_store() -> None:
    spec = ModelDeploymentSpec.model_validate({"backend": "nimOperator", "model": {"trainingJobRef": {"name": "t"}},
                                               "replicas": 0})
    model = ServedModel(served_name="t", base_name="base", weights=PvcLocation(claim_name="c", path="/"),
                        adapter=PvcLocation(claim_name="c", path="/runs/t/final/"))
    built = nimoperator.nim_service(OWNER, spec, model, "img:1", "r")
    env = {e["name"]: e["value"] for e in built["spec"]["env"]}
    assert env["NIM_MODEL_NAME"] == "/model-store" and env["NIM_PEFT_SOURCE"] == "/model-store/runs/t"
    assert nimoperator.served_adapter_name(model) == "final" and built["spec"]["replicas"] == 0
    assert "scale" not in built["spec"]


def test_an_adapter_on_another_claim_than_its_base_model_is_not_servable() -> None:
    spec = ModelDeploymentSpec.model_validate({"backend": "nimOperator", "model": {"trainingJobRef": {"name": "t"}}})
    model = ServedModel(served_name="t", base_name="base", weights=PvcLocation(claim_name="models", path="/b"),
                        adapter=PvcLocation(claim_name="data", path="/a/final"))
    with pytest.raises(nimoperator.NotServable, match="'models' and the LoRA adapter on 'data'"):
        nimoperator.nim_service(OWNER, spec, model, "img:1", "r")


def test_no_cache_without_a_hub_model() -> None:
    spec = ModelDeploymentSpec.model_validate({"backend": "nimOperator", "model": {"trainingJobRef": {"name": "t"}},
                                               "ngcApiKeySecretRef": {"name": "ngc", "key": "NGC_API_KEY"},
                                               "nimOperator": {"cache": {}}})
    on_pvc = ServedModel(served_name="t", base_name="b", weights=PvcLocation(claim_name="c", path="/w"))
    assert nimoperator.nim_cache(OWNER, spec, on_pvc, "img:1") is None
    assert nimoperator.nim_service(OWNER, spec, on_pvc, "img:1", "r")["spec"]["storage"]["pvc"] == {"name": "c"}


def test_an_adapter_on_the_nims_own_model_shares_a_writable_model_store() -> None:
    spec = ModelDeploymentSpec.model_validate({"backend": "nimOperator", "model": {"explicit": {
        "name": "meta/llama-3.2-1b-instruct", "loraAdapter": {"claimName": "loras", "path": "/adapters/support"}}}})
    model = ServedModel(served_name="x", base_name="meta/llama-3.2-1b-instruct",
                        adapter=PvcLocation(claim_name="loras", path="/adapters/support"))
    built = nimoperator.nim_service(OWNER, spec, model, "nvcr.io/nim/meta/llama-3.2-1b-instruct:1.12.0", "r")
    env = {e["name"]: e["value"] for e in built["spec"]["env"]}
    assert "NIM_MODEL_NAME" not in env and env["NIM_PEFT_SOURCE"] == "/model-store/adapters"
    assert built["spec"]["storage"]["pvc"] == {"name": "loras"} and built["spec"]["storage"]["readOnly"] is False
