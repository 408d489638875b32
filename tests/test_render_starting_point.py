"""The pods of a DPOTrainingJob with model.adapter and referenceModel: what they mount and are told, and the data
check refusing an adapter that contradicts hyperparameters.lora before any GPU is asked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from dpo_operator.api.common import StorageLocation
from dpo_operator.api.training import DPOTrainingJobSpec
from dpo_operator.config import OperatorConfig
from dpo_operator.render.training import check_job_manifest, job_manifest, spec_for_pod

BODY = {"metadata": {"name": "r1", "namespace": "ns", "uid": "u"}}
LOCATION = StorageLocation.model_validate({"pvc": {"claimName": "data", "path": "/ds"}})


def spec(**changes: Any) -> DPOTrainingJobSpec:
    return DPOTrainingJobSpec.model_validate({
        "dataset": {"location": {"pvc": {"claimName": "data", "path": "/ds"}}},
        "model": {"name": "base", "pvc": {"claimName": "models", "path": "/base"},
                  "adapter": {"claimName": "adapters", "path": "/round0/final"}},
        "local": {"gpusPerNode": 1, "output": {"claimName": "out", "path": "/models"}}, **changes})


def pod(manifest: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    template = manifest["spec"]["template"]["spec"]
    return template, template["containers"][0]


def test_the_trainer_mounts_the_adapter_and_the_reference_read_only_and_is_told_where_they_are() -> None:
    job = spec(referenceModel={"name": "ref", "pvc": {"claimName": "refs", "path": "/sft"}})
    for manifest in (job_manifest(BODY, job, LOCATION, OperatorConfig()),
                     check_job_manifest(BODY, job, LOCATION, OperatorConfig())):
        template, container = pod(manifest)
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in template["volumes"]
                  if "persistentVolumeClaim" in v}
        mounts = {claims[m["name"]]: m for m in container["volumeMounts"] if m["name"] in claims}
        assert set(mounts) == {"data", "out", "models", "adapters", "refs"}
        assert mounts["adapters"].get("readOnly") is mounts["refs"].get("readOnly") is True
        assert "readOnly" not in mounts["out"]  # the output is written
        assert "--adapter=/mnt/pvc/adapters/round0/final" in container["command"]
        assert "--reference-model=/mnt/pvc/refs/sft" in container["command"]


def test_an_adapter_on_the_output_claim_is_mounted_once_and_writable() -> None:
    job = spec(model={"name": "base", "pvc": {"claimName": "models", "path": "/base"},
                      "adapter": {"claimName": "out", "path": "/models/round0/final"}})
    template, container = pod(job_manifest(BODY, job, LOCATION, OperatorConfig()))
    assert [v["persistentVolumeClaim"]["claimName"] for v in template["volumes"] if "persistentVolumeClaim" in v] \
        == ["data", "out", "models"]
    assert not any(m.get("readOnly") for m in container["volumeMounts"])


def test_a_hub_reference_is_named_and_its_token_goes_to_its_hub_only() -> None:
    job = spec(referenceModel={"name": "org/ref", "hub": {
        "endpoint": "http://hub.example/v1/hf", "repoId": "org/ref", "tokenSecretRef": {"name": "hub", "key": "t"}}})
    manifest = job_manifest(BODY, job, LOCATION, OperatorConfig())
    _, container = pod(manifest)
    assert "--reference-model=org/ref" in container["command"]
    assert {"name": "REFERENCE_HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hub", "key": "t"}}} \
        in container["env"]
    assert not any(e["name"] == "HF_TOKEN" for e in container["env"])  # the model's hub has no token here


def test_with_an_adapter_the_pod_is_told_only_the_lora_fields_the_user_set() -> None:
    assert spec_for_pod(spec())["hyperparameters"]["lora"] == {}
    assert spec_for_pod(spec(hyperparameters={"lora": {"rank": 8}}))["hyperparameters"]["lora"] == {"rank": 8}
    plain = spec(model={"name": "base"})  # no adapter: the pod's spec is the spec, defaults and all
    assert spec_for_pod(plain) == plain.to_api() and plain.to_api()["hyperparameters"]["lora"]["rank"] == 16


def test_the_data_check_refuses_an_adapter_that_contradicts_the_lora_settings(tmp_path: Path) -> None:
    """Exit code 3 (the operator's WorkloadConfigError) with the field and both values, before any weight is read."""
    adapter = tmp_path / "round0"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                             "target_modules": ["q_proj", "v_proj"]}))
    (tmp_path / "data/training").mkdir(parents=True)
    (tmp_path / "data/training/training_file.jsonl").write_text(json.dumps(
        {"prompt": "q", "chosen_response": "a", "rejected_response": "b"}) + "\n")
    job = spec(hyperparameters={"lora": {"alpha": 16}})
    result = tmp_path / "result.json"
    done = subprocess.run([sys.executable, "-m", "dpo_operator", "check-data", "--spec-env=SPEC",
                           f"--dataset-dir={tmp_path / 'data'}", f"--adapter={adapter}", f"--result-file={result}"],
                          env={**os.environ, "SPEC": json.dumps(spec_for_pod(job))}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    error = json.loads(result.read_text())["error"]
    assert f"spec.hyperparameters.lora.alpha is 16 but the adapter it starts from ({adapter}) has alpha 8" in error
