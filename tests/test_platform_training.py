"""The v2 (NeMo platform) training pieces without a cluster: the DPO job spec against NVIDIA's schema, what is refused,
the job's name, status parsing, the DPO rows and the idempotent fileset upload (against the strict fake)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from dpo_operator.api.training import DPOTrainingJobSpec, Hyperparameters
from dpo_operator.collect.dataset import DatasetFiles
from dpo_operator.handlers.training_platform import check_spec, fileset_name
from dpo_operator.nemo.platform import customization, files
from dpo_operator.nemo.platform.client import PlatformClient
from dpo_operator.nemo.platform.dpo_rows import platform_row
from dpo_operator.runtime.errors import InvalidSpec
from tests.fakes.platform_schema import platform_schema
from tests.fakes.platform_training import TrainingPlatform

NAME_RULE = re.compile(r"^[a-z](?!.*--)[a-z0-9\-@.+_]{1,62}(?<!-)$")  # the platform's names (jobs, filesets)
UID = "0f8e2c1a-7b3d-4e5f-9a6b-1c2d3e4f5a6b"


def _hp(**fields: Any) -> Hyperparameters:
    return Hyperparameters.model_validate({"finetuningType": "all_weights", **fields})


def _request_problems(body: dict[str, Any]) -> list[dict[str, Any]]:
    schema = platform_schema()
    found = schema.match("POST", "/apis/customization/v2/workspaces/default/rl/jobs")
    assert found is not None
    problems, _ = schema.check_request(found[0], found[1], [], json.dumps(body).encode(), "application/json")
    return problems


@pytest.mark.parametrize("fields", [
    {}, {"lrScheduler": "cosine", "validateEverySteps": 50, "warmupSteps": 10, "seed": 7},
    {"dpo": {"preferenceAverageLogProbs": True, "sftLossWeight": 0.2, "refPolicyKlPenalty": 0.3}},
    {"dpo": {"lossType": ["sigmoid"]}, "maxGradNorm": 0.25, "maxSeqLength": 4096, "weightDecay": 0.1},
])
def test_the_job_body_is_what_nvidias_models_accept(fields: dict[str, Any]) -> None:
    hp = _hp(**fields)
    assert customization.refused(hp) == []
    body = customization.job_body("default/llama", "team/pairs", hp, "out", "dpo-x-1", UID, "DPOTrainingJob ns/x")
    assert _request_problems(body) == []
    training = body["spec"]["training"]
    assert training["ref_policy_kl_penalty"] == hp.dpo.ref_policy_kl_penalty
    assert training["sft_average_log_probs"] == hp.dpo.effective_sft_average_log_probs
    assert (training["learning_rate"], training["batch_size"], training["epochs"]) == (5e-6, 8, 1)


def test_the_schema_catches_what_we_must_never_send() -> None:
    body = customization.job_body("default/llama", "team/pairs", _hp(), "out", "dpo-x-1", UID, "d")
    body["spec"]["training"]["peft"] = {"type": "lora"}
    assert any("peft" in p["msg"] for p in _request_problems(body))


@pytest.mark.parametrize(("fields", "words"), [
    ({"finetuningType": "lora"}, "PEFT is not supported with DPO training on the NeMo platform v2; use "
                                 "finetuningType: all_weights (or the v1 API)"),
    ({"trainingType": "sft", "finetuningType": "all_weights"}, "trainingType 'sft'"),
    ({"dpo": {"lossType": ["hinge"]}}, "spec.hyperparameters.dpo.lossType ['hinge']"),
    ({"lrScheduler": "linear"}, "spec.hyperparameters.lrScheduler linear"),
    ({"warmupRatio": 0.1}, "spec.hyperparameters.warmupRatio (0.1)"),
    ({"validateEverySteps": 1}, "spec.hyperparameters.validateEverySteps 1"),
])
def test_what_the_platform_cannot_train_is_refused_naming_the_field(fields: dict[str, Any], words: str) -> None:
    refused = customization.refused(_hp(**fields))
    assert len(refused) == 1 and words in refused[0]


def _spec(**customizer: Any) -> DPOTrainingJobSpec:
    return DPOTrainingJobSpec.model_validate({
        "backend": "customizer", "dataset": {"collectionRef": {"name": "c"}}, "model": {"name": "default/m"},
        "hyperparameters": {"finetuningType": "all_weights"},
        "customizer": {"platformUrl": "http://p", "workspace": "team", **customizer}})


@pytest.mark.parametrize(("customizer", "words"), [
    ({"datasetName": "Pairs"}, "spec.customizer.datasetName 'Pairs' is not a valid fileset name"),
    ({"outputModel": "other/m"}, "spec.customizer.outputModel 'other/m'"),
])
def test_names_the_platform_would_refuse_are_invalid(customizer: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidSpec, match=re.escape(words)):
        check_spec(_spec(**customizer))
    check_spec(_spec(outputModel="team/m", datasetName="pairs-v1"))


@pytest.mark.parametrize(("namespace", "name"), [("team-a", "remote"), ("9ns", "a--b.c"),
                                                 ("n" * 63, "x" * 253), ("ns", "9start")])
def test_names_derived_from_the_resource_fit_the_platforms_rule(namespace: str, name: str) -> None:
    job = customization.job_name(namespace, name, UID)
    assert NAME_RULE.match(job) and job == customization.job_name(namespace, name, UID)
    assert job != customization.job_name(namespace, name, "1" + UID[1:])  # the uid tells resources apart
    body = {"metadata": {"namespace": namespace, "name": name}}
    assert NAME_RULE.match(fileset_name(body, _spec().customizer))  # type: ignore[arg-type]


def test_status_parsing_tolerates_nulls_and_reads_the_series() -> None:
    parse = customization.PlatformStatus.parse
    assert parse({}).phase == "Running" and parse({"status": "pausing"}).phase == "Running"
    assert parse({"status": None, "status_details": None, "error_details": None}).progress == {}
    active = parse({"status": "active", "status_details": {
        "phase": "training", "step": 30, "epoch": 1, "percentage_done": 75, "train_loss": 0.5, "val_accuracy": 0.6,
        "metrics": {"train_loss": [{"step": 10, "value": 0.7}, {"step": 30, "value": 0.4}],
                    "val_loss": [{"step": 20, "value": "NaN"}]}}})
    assert active.progress == {"phase": "training", "stepsCompleted": 30, "epoch": 1.0, "percentageDone": 75.0,
                               "trainLoss": 0.4, "valAccuracy": 0.6}
    failed = parse({"status": "error", "error_details": {"message": "boom"}})
    assert (failed.phase, failed.message) == ("Failed", "platform job error: boom")
    assert parse({"status": "cancelled"}).phase == "Cancelled" and parse({"status": "completed"}).phase == "Succeeded"


def test_rows_are_nemo_rls_binary_preference_format() -> None:
    chat = [{"role": "user", "content": "hi"}]
    assert platform_row({"prompt": chat, "chosen_response": [{"role": "assistant", "content": "hello"}],
                         "rejected_response": "go away"}) == {"prompt": chat, "chosen": "hello",
                                                              "rejected": "go away"}


def test_the_upload_is_idempotent_and_rewrites_only_what_changed() -> None:
    with TrainingPlatform(api_key="k", workspaces=("team",)) as fake:
        client = PlatformClient(fake.url, "team", "k")
        dataset = DatasetFiles(b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n', b'{"prompt": "q"}\n', b"{}")
        result = files.upload_dataset(dataset, client, "pairs", "d")
        assert result["filesUrl"] == "team/pairs" and result["pairs"] == {"training": 1, "validation": 1}
        assert fake.calls_to("upload-file") == 3
        files.upload_dataset(dataset, client, "pairs", "d")  # a retried upload pod
        assert fake.calls_to("upload-file") == 3 and fake.calls_to("create-fileset") == 2  # the second answered 409
        changed = DatasetFiles(dataset.training, b'{"prompt": "r"}\n', b"{}")  # same size, other content
        files.upload_dataset(changed, client, "pairs", "d")
        assert fake.calls_to("upload-file") == 4 and fake.files[("team", "pairs")]["validation.jsonl"] == \
            b'{"prompt": "r"}\n'
        with pytest.raises(ValueError, match="training file is empty"):
            files.upload_dataset(DatasetFiles(b"", b"", b"{}"), client, "pairs", "d")
