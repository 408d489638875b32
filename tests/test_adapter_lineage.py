"""What the operator knows of a starting adapter from the jobs that wrote it (model.adapter), and when a reference
model is the base model itself."""

from __future__ import annotations

from typing import Any

from dpo_operator.api.common import PvcLocation
from dpo_operator.api.training import DPOTrainingJobSpec
from dpo_operator.handlers.training_lineage import known_adapter_config

BASE = {"dataset": {"location": {"pvc": {"claimName": "data"}}}, "model": {"name": "tiny"},
        "local": {"output": {"claimName": "out", "path": "/models"}}}


def job(name: str, phase: str = "Succeeded", lora: dict[str, Any] | None = None, adapter: str | None = None,
        finetuning: str = "lora") -> dict[str, Any]:
    model = {"name": "tiny", **({"adapter": {"claimName": "out", "path": adapter}} if adapter else {})}
    return {"metadata": {"name": name},
            "spec": {**BASE, "model": model, "hyperparameters": {"finetuningType": finetuning, "lora": lora or {}}},
            "status": {"phase": phase, "outputModel": f"pvc://out/models/{name}/final"}}


def at(name: str) -> PvcLocation:
    return PvcLocation(claim_name="out", path=f"/models/{name}/final/")


def test_the_writer_of_an_adapter_says_its_shape_and_a_chain_is_followed() -> None:
    jobs = [job("r0", lora={"rank": 4, "alpha": 8, "targetModules": ["q_proj"]}),
            job("r1", adapter="/models/r0/final"),  # left everything to r0's adapter
            job("r2", adapter="/models/r1/final", lora={"alpha": 8})]
    assert known_adapter_config(jobs, at("r0")) == ({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}, "r0")
    assert known_adapter_config(jobs, at("r2")) == ({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}, "r2")
    # a fresh adapter with the defaults: rank 16, alpha 32, all-linear (module names not known)
    assert known_adapter_config([job("fresh")], at("fresh")) == ({"r": 16, "lora_alpha": 32, "target_modules": None},
                                                                 "fresh")


def test_nothing_is_known_of_an_adapter_no_succeeded_lora_job_wrote() -> None:
    assert known_adapter_config([job("r0", phase="Running")], at("r0")) is None
    assert known_adapter_config([job("r0", finetuning="all_weights")], at("r0")) is None
    assert known_adapter_config([job("r0")], at("elsewhere")) is None
    # a chain whose start is not known leaves those fields unknown, and a loop of jobs ends
    assert known_adapter_config([job("r1", adapter="/models/r0/final")], at("r1")) == (
        {"r": None, "lora_alpha": None, "target_modules": None}, "r1")
    looped = [job("a", adapter="/models/b/final"), job("b", adapter="/models/a/final")]
    assert known_adapter_config(looped, at("a")) == ({"r": None, "lora_alpha": None, "target_modules": None}, "a")


def test_a_reference_is_the_base_model_whatever_the_slashes() -> None:
    spec = DPOTrainingJobSpec.model_validate({**BASE, "model": {"name": "m", "pvc": {"claimName": "c", "path": "/b"}},
                                              "referenceModel": {"name": "m", "pvc": {"claimName": "c", "path": "b/"}}})
    assert spec.reference_model is not None and spec.reference_model.same_weights(spec.model)
    other = spec.reference_model.model_copy(update={"pvc": PvcLocation(claim_name="c", path="/sft")})
    assert not other.same_weights(spec.model)
    assert not spec.reference_model.model_copy(update={"name": "n"}).same_weights(spec.model)
