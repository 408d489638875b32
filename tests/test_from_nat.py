"""``dpo-operator from-nat``: NAT's DPO guide's complete configuration (and NVIDIA's tic-tac-toe config) as our
resources, validated as the API server admits them; NAT's defaults kept; every field without an equivalent listed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dpo_operator import crdgen
from dpo_operator.api import ALL_KINDS
from dpo_operator.cli import main
from dpo_operator.collect.nat_finetune import NatConfigError
from dpo_operator.kubeemu.schema_validation import ResourceSchema
from dpo_operator.natconvert import convert

GUIDE = Path(__file__).parent / "natguide" / "dpo_finetune.yml"  # the guide's "Complete Configuration Example"
TICTACTOE = Path(__file__).parent / "natguide" / "dpo_tic_tac_toe.yml"  # examples/finetuning/dpo_tic_tac_toe's


def admitted(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each of our resources as the API server stores it (CRD schema, strict), and accepted by the operator."""
    out = {}
    for obj in objects:
        if obj["apiVersion"] == "v1":
            out[obj["kind"]] = obj
            continue
        kind = next(k for k in ALL_KINDS if k.kind == obj["kind"])
        schema = ResourceSchema(crdgen.crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        stored = schema.admit(obj, None, strict=True)
        kind.spec_model.model_validate(stored["spec"])
        out[obj["kind"]] = stored
    return out


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[dict[str, Any]], str, str]:
    code = main(["from-nat", *args])
    out, err = capsys.readouterr()
    return code, [d for d in yaml.safe_load_all(out) if d], out, err


def test_the_guides_complete_configuration_converts_and_validates(capsys: pytest.CaptureFixture[str]) -> None:
    code, docs, out, err = run_cli(capsys, str(GUIDE))
    assert code == 0
    objs = admitted(docs)
    assert set(objs) == {"ConfigMap", "DPOCollection", "DPOTrainingJob"}  # deploy_on_completion: false
    assert objs["ConfigMap"]["data"]["config.yml"] == GUIDE.read_text()  # the config, unchanged, for the pod
    collection = objs["DPOCollection"]["spec"]
    assert collection["workflow"]["nat"] == {"configMapRef": {"name": "dpo-finetune-nat", "key": "config.yml"},
                                             "ttcStepName": "dpo_candidate_move"}
    assert collection["pairing"] == {"strategy": "exhaustive", "minScoreDiff": 0.05, "maxPairsPerTurn": 10,
                                     "rewardFromScoreDiff": True, "requireMultipleCandidates": True}
    assert (collection["numRuns"], collection["deduplicatePairs"], collection["maxPairs"]) == (3, True, 5000)
    assert collection["useFullMessageHistory"] is True
    assert collection["template"]["env"] == [{"name": "NVIDIA_API_KEY", "valueFrom": {"secretKeyRef": {
        "name": "dpo-finetune-env", "key": "NVIDIA_API_KEY"}}}]  # ${NVIDIA_API_KEY} of llms, by reference
    training = objs["DPOTrainingJob"]["spec"]
    assert training["backend"] == "customizer" and training["dataset"]["collectionRef"] == {"name": "dpo-finetune-pairs"}
    # the API server fills in the dataset's reading and check defaults (issue 27): our own layout, checked
    assert training["dataset"]["format"] == "auto" and training["dataset"]["check"]["enabled"] is True
    assert training["model"]["name"] == "meta/llama-3.1-8b-instruct@v1.0.0+A100"
    hp = training["hyperparameters"]
    assert (hp["trainingType"], hp["finetuningType"], hp["epochs"], hp["batchSize"], hp["learningRate"]) == (
        "dpo", "all_weights", 3, 4, 5e-6)
    assert {k: hp["dpo"][k] for k in ("refPolicyKlPenalty", "preferenceLossWeight", "preferenceAverageLogProbs",
                                      "sftLossWeight")} == {"refPolicyKlPenalty": 0.1, "preferenceLossWeight": 1.0,
                                                            "preferenceAverageLogProbs": False, "sftLossWeight": 0.0}
    assert {k: training["customizer"][k] for k in ("entityStoreUrl", "datastoreUrl", "namespace", "datasetName",
                                                   "pollIntervalSeconds")} == {
        "entityStoreUrl": "https://nmp.example.com", "datastoreUrl": "https://datastore.example.com",
        "namespace": "my-dpo-project", "datasetName": "dpo-training-data", "pollIntervalSeconds": 30.0}
    for field in ("wait_for_completion", "finetuning.output_dir", "finetuning.num_epochs"):
        assert field in err and field in out.split("\n---\n")[0]  # on stderr and as YAML comments
    assert "reward_function" not in err  # the collection reads it from the config it runs (its average per run)
    assert "not a field of" not in err  # every field of the guide's components is known


def test_overrides_deployment_and_namespace_fields(capsys: pytest.CaptureFixture[str]) -> None:
    code, docs, out, err = run_cli(
        capsys, str(GUIDE), "-o", "trainers.nemo_trainer.num_runs", "5",
        "-o", "trainer_adapters.nemo_adapter.hyperparameters.learning_rate", "1e-5",
        "-o", "trainer_adapters.nemo_adapter.deploy_on_completion", "true",
        "-o", "trainer_adapters.nemo_adapter.create_namespace_if_missing", "false",
        "-o", "trainer_adapters.nemo_adapter.deployment_config.deployment_name", "My_DPO_model",
        "-o", "trainer_adapters.nemo_adapter.deployment_config.description", "DPO-finetuned agent model",
        "-o", "trainer_adapters.nemo_adapter.deployment_config.gpu", "2",
        "-o", "trainer_adapters.nemo_adapter.deployment_timeout_seconds", "3600")
    assert code == 0
    objs = admitted(docs)
    assert objs["DPOCollection"]["spec"]["numRuns"] == 5
    assert objs["DPOTrainingJob"]["spec"]["hyperparameters"]["learningRate"] == 1e-5
    deployment = objs["ModelDeployment"]
    assert deployment["metadata"]["name"] == "my-dpo-model"
    assert deployment["metadata"]["annotations"]["dpo.ai/description"] == "DPO-finetuned agent model"
    spec = deployment["spec"]
    assert spec["model"] == {"trainingJobRef": {"name": "dpo-finetune"}} and spec["backend"] == "nemo"
    assert spec["readinessTimeoutSeconds"] == 3600
    assert {k: spec["nemo"][k] for k in ("url", "namespace", "imageName", "imageTag", "gpu")} == {
        "url": "https://nmp.example.com", "namespace": "my-dpo-project",
        "imageName": "nvcr.io/nim/meta/llama-3.1-8b-instruct", "imageTag": "latest", "gpu": 2}
    assert "create_namespace_if_missing=false" in err and "'My_DPO_model'" in err
    assert "learning_rate: 1e-5" in objs["ConfigMap"]["data"]["config.yml"]  # the pod runs the overridden config (a string, as YAML reads 5e-6 and NAT keeps its type)


def test_nats_defaults_are_kept_where_the_config_is_silent(tmp_path: Path) -> None:
    config = {"workflow": {"_type": "w"}, "trainer_adapters": {"a": {
        "_type": "nemo_customizer_trainer_adapter", "entity_host": "http://nmp", "datastore_host": "http://ds",
        "namespace": "team", "customization_config": "meta/llama-3.2-1b-instruct@v1.0.0+A100"}},
        "trajectory_builders": {"b": {"_type": "dpo_traj_builder", "ttc_step_name": ["move", "reply"]}}}
    path = tmp_path / "finetune.yml"
    path.write_text(yaml.safe_dump(config))
    conversion = convert(path, [])
    objs = admitted(conversion.objects)
    hp = objs["DPOTrainingJob"]["spec"]["hyperparameters"]
    assert (hp["finetuningType"], hp["epochs"], hp["batchSize"], hp["learningRate"]) == ("all_weights", 3, 4, 5e-5)
    assert objs["DPOCollection"]["spec"]["useFullMessageHistory"] is False and "ttcStepName" not in \
        objs["DPOCollection"]["spec"]["workflow"]["nat"]  # a list: the collector reads it from the config
    assert any("ttc_step_name: a list (move, reply)" in n for n in conversion.notes)


def test_nvidias_example_config_and_its_old_step_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, docs, out, err = run_cli(capsys, str(TICTACTOE))
    assert code == 0
    objs = admitted(docs)
    assert objs["ModelDeployment"]["metadata"]["name"] == "nat-dpo-tic-tac-toe-model"
    hp = objs["DPOTrainingJob"]["spec"]["hyperparameters"]
    assert (hp["epochs"], hp["batchSize"], hp["finetuningType"], hp["learningRate"]) == (5, 8, "all_weights", 5e-5)
    assert "custom_step_name ('dpo_candidate_move') is not a dpo_traj_builder field" in err
    assert "${CUSTOMIZER_HOST} copied as written" in err


def test_a_config_without_customizer_components_is_a_clear_error(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yml"
    path.write_text("workflow: {_type: w}\n")
    assert main(["from-nat", str(path)]) == 2
    assert "no nemo_customizer_trainer_adapter" in capsys.readouterr().err
    with pytest.raises(NatConfigError, match="'workflow._type' is not a mapping"):
        convert(path, [("workflow._type.x", "1")])


def test_a_dataset_found_beside_the_config_travels_in_the_configmap(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "training_data.json").write_text('[{"id": 1, "question": "q", "answer": "a"}]')
    config = tmp_path / "finetune.yml"
    config.write_text(GUIDE.read_text())  # file_path: data/training_data.json, relative to the config
    objs = admitted(convert(config, []).objects)
    assert objs["ConfigMap"]["data"]["training_data.json"].startswith('[{"id": 1')
    assert objs["DPOCollection"]["spec"]["workflow"]["nat"]["datasetRef"] == {"name": "finetune-nat",
                                                                              "key": "training_data.json"}
