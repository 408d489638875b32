"""A NAT workflow's ``nat finetune`` config sections as a DPOCollection's settings (the CR wins), its relative
dataset path and unresolved ``${VAR}`` in sections we do not run, and step names that match nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from dpo_operator.api.collection import DPOCollectionSpec
from dpo_operator.collect import nat, nat_settings
from dpo_operator.collect.runner import run_collection
from tests.test_nat_workflow import PLUGIN, RECORDED, as_set, minus_ties, nat_reference, rows_of

FINETUNE = {  # as NVIDIA's tic-tac-toe example writes them, with a builder and a trainer that change the outcome
    "trajectory_builders": {"dpo_builder": {"_type": "dpo_traj_builder", "ttc_step_name": "dpo_candidate_move",
                                            "exhaustive_pairs": False, "min_score_diff": 0.2}},
    "trainers": {"nemo_trainer": {"_type": "nemo_customizer_trainer", "num_runs": 2, "deduplicate_pairs": False,
                                  "max_pairs": 7, "continue_on_collection_error": True}},
    "trainer_adapters": {"nemo_adapter": {"_type": "nemo_customizer_trainer_adapter", "entity_host": "${CUSTOMIZER_HOST}",
                                          "datastore_host": "${DATASTORE_HOST:?must be set}", "namespace": "x",
                                          "customization_config": "m@v1"}},
    "finetuning": {"enabled": True, "trainer": "nemo_trainer", "trajectory_builder": "dpo_builder",
                   "trainer_adapter": "nemo_adapter", "reward_function": {"name": "exact"}},
}


def spec_of(config: Path, **fields: Any) -> DPOCollectionSpec:
    return DPOCollectionSpec.model_validate({"workflow": {"nat": {"configFile": str(config)}},
                                             "output": {"pvc": {"claimName": "d", "path": "/ds"}}, **fields})


def write_config(tmp_path: Path, extra: dict[str, Any]) -> Path:
    config = yaml.safe_load((PLUGIN / "config.yml").read_text())
    config.update(extra)
    path = tmp_path / "conf" / "config.yml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_configs_sections_fill_what_the_cr_leaves_unset(tmp_path: Path) -> None:
    config = write_config(tmp_path, FINETUNE)
    settings = nat_settings.resolve(spec_of(config, numRuns=3, pairing={"minScoreDiff": 0.0}), config)
    spec = settings.spec
    assert spec.num_runs == 3 and spec.pairing.min_score_diff == 0.0  # the CR wins
    assert spec.pairing.strategy == "bestVsWorst" and spec.max_pairs == 7  # the config fills in the rest
    assert spec.deduplicate_pairs is False and spec.continue_on_collection_error is True
    assert settings.sources["numRuns"] == "spec" and settings.sources["pairing.minScoreDiff"] == "spec"
    assert settings.sources["maxPairs"] == "natConfig:trainers.nemo_trainer.max_pairs"
    assert settings.sources["pairing.strategy"] == "natConfig:trajectory_builders.dpo_builder.exhaustive_pairs"
    assert settings.sources["pairing.maxPairsPerTurn"] == "default"


def test_the_handler_passes_what_the_cr_sets_to_the_pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pod's spec JSON has every default filled in; the set fields travel beside it."""
    config = write_config(tmp_path, FINETUNE)
    cr = spec_of(config, numRuns=1)
    filled = DPOCollectionSpec.model_validate(cr.to_api())  # what the pod parses
    assert "deduplicatePairs" in nat_settings.fields_set(filled)
    monkeypatch.setenv(nat_settings.SPEC_FIELDS_ENV, json.dumps(sorted(nat_settings.fields_set(cr))))
    settings = nat_settings.resolve(filled, config)
    assert settings.spec.num_runs == 1 and settings.spec.deduplicate_pairs is False


def test_unchanged_config_with_finetune_sections_runs_and_reports_sources(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Sections whose plugins are not installed, ${VAR}s without a value (even ${VAR:?...}) and a dataset path
    relative to the config's directory: the workflow runs, with the config's settings."""
    pytest.importorskip("nat.plugins.eval.runtime.evaluate", reason="needs the [nat] extra")
    monkeypatch.syspath_prepend(str(PLUGIN))
    monkeypatch.delenv("CUSTOMIZER_HOST", raising=False)
    monkeypatch.delenv("DATASTORE_HOST", raising=False)
    monkeypatch.chdir(tmp_path)  # not the config's directory
    builder = {**FINETUNE["trajectory_builders"]["dpo_builder"], "exhaustive_pairs": True, "min_score_diff": 0.0,
               "custom_step_name": "dpo_candidate_move"}
    config = write_config(tmp_path, {**FINETUNE, "trajectory_builders": {"dpo_builder": builder},
                                     "trainers": {"nemo_trainer": {"_type": "nemo_customizer_trainer", "num_runs": 2}}})
    shutil.copy(PLUGIN / "data.json", config.parent / "data.json")  # file_path: data.json, next to the config
    result = run_collection(spec_of(config, useFullMessageHistory=True, validationFraction=0.5), data_root=tmp_path)
    assert (result.runsCompleted, result.candidates) == (2, 80)  # numRuns from trainers.nemo_trainer.num_runs
    assert as_set(rows_of(tmp_path / "ds")) == as_set(minus_ties(nat_reference()))
    metrics = json.loads((tmp_path / "ds/metrics.json").read_text())
    assert metrics["settings"]["numRuns"] == "natConfig:trainers.nemo_trainer.num_runs"
    assert metrics["settings"]["workflow.nat.ttcStepName"] == "natConfig:trajectory_builders.dpo_builder.ttc_step_name"
    assert any("custom_step_name" in w and "rename the key" in w for w in metrics["configWarnings"])


def test_a_missing_relative_dataset_names_where_it_was_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nat.plugins.eval.runtime.evaluate", reason="needs the [nat] extra")
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, {})
    with pytest.raises(nat.NatError, match=r"'data.json' is not next to the NAT config .*conf"):
        nat.load_runnable_config(config)


def step_names_config(tmp_path: Path, names: Any) -> Path:
    return write_config(tmp_path, {"trajectory_builders": {"b": {"_type": "dpo_traj_builder", "ttc_step_name": names}}})


def offline_spec(config: Path, tmp_path: Path, **fields: Any) -> DPOCollectionSpec:
    """Recorded NAT steps, with the settings of ``config`` (as a live run would read them)."""
    (tmp_path / "out").mkdir(exist_ok=True)
    shutil.copy(RECORDED, tmp_path / "out" / nat.WORKFLOW_OUTPUT)
    return DPOCollectionSpec.model_validate({"workflow": {"nat": {"workflowOutput": {"claimName": "d", "path": "/out"}}},
                                             "output": {"pvc": {"claimName": "d", "path": "/ds"}}, **fields})


def test_a_step_name_that_matches_nothing_fails_at_once_naming_the_steps_seen(tmp_path: Path) -> None:
    items = nat.read_workflow_output(RECORDED)
    from dpo_operator.collect.events import CandidateCheck

    with pytest.raises(nat.StepNameMismatch, match=r"no TTC_END step is named 'dpo_move'; the workflow's TTC_END "
                                                   r"steps are named 'dpo_candidate_move' \(40\)"):
        nat.candidates_from_items(items, ("dpo_move",), CandidateCheck(True))
    assert isinstance(nat.StepNameMismatch("x"), ValueError)  # the collector exits 3: the Job does not retry
    spec = offline_spec(tmp_path / "none.yml", tmp_path, numRuns=1, continueOnCollectionError=True,
                        workflow={"nat": {"workflowOutput": {"claimName": "d", "path": "/out"}, "ttcStepName": "x"}})
    with pytest.raises(nat.StepNameMismatch, match="named 'x'"):  # not skipped as a failed run: a config error
        run_collection(spec, data_root=tmp_path)


def test_a_list_of_step_names(tmp_path: Path) -> None:
    config = step_names_config(tmp_path, ["other_step", "dpo_candidate_move"])
    settings = nat_settings.resolve(spec_of(config), config)
    assert settings.step_names == ("other_step", "dpo_candidate_move")
    from dpo_operator.collect.events import CandidateCheck

    events = nat.candidates_from_items(nat.read_workflow_output(RECORDED), settings.step_names, CandidateCheck(True))
    assert len(events) == 40  # one recorded run
    cr = DPOCollectionSpec.model_validate({"workflow": {"nat": {"configFile": str(config), "ttcStepName": "mine"}},
                                           "output": {"pvc": {"claimName": "d"}}})
    assert nat_settings.resolve(cr, config).step_names == ("mine",)  # the CR wins
    with pytest.raises(ValueError, match="expected a step name or a list of step names"):
        nat_settings.resolve(spec_of(step_names_config(tmp_path / "x", 3)), tmp_path / "x" / "conf" / "config.yml")


def test_no_pairs_from_a_nat_workflow_gives_a_hint_that_applies_to_it(tmp_path: Path) -> None:
    from dpo_operator.collect.runner import CollectionError

    spec = offline_spec(tmp_path / "none.yml", tmp_path, pairing={"minScoreDiff": 5.0})
    with pytest.raises(CollectionError, match="let the NAT workflow sample more") as caught:
        run_collection(spec, data_root=tmp_path)
    assert "candidatesPerTurn" not in str(caught.value)  # not a NAT setting


def test_the_collection_pod_exits_3_on_a_step_name_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exit code 3: the Job's podFailurePolicy fails it at once instead of retrying a run that cannot succeed."""
    from dpo_operator.cli import main

    spec = offline_spec(tmp_path / "none.yml", tmp_path,
                        workflow={"nat": {"workflowOutput": {"claimName": "d", "path": "/out"}, "ttcStepName": "x"}})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec.to_api()))
    monkeypatch.setenv("DPO_DATA_ROOT", str(tmp_path))
    result = tmp_path / "termination-log"
    assert main(["collect", "--spec", str(tmp_path / "spec.yaml"), "--result-file", str(result)]) == 3
    error = json.loads(result.read_text())["error"]
    assert error.startswith("StepNameMismatch: no TTC_END step is named 'x'") and "'dpo_candidate_move' (40)" in error


def test_per_run_progress_as_nat_records_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = offline_spec(tmp_path / "none.yml", tmp_path, useFullMessageHistory=True)
    with caplog.at_level("INFO", logger="dpo_operator.collect.runner"):
        result = run_collection(spec, data_root=tmp_path)
    history = json.loads((tmp_path / "ds/metrics.json").read_text())["collectionHistory"]
    pairs = minus_ties(nat_reference())
    assert [(h["run_number"], h["num_dpo_pairs"]) for h in history] == [(0, len(pairs))]  # before deduplication
    assert result.runsCompleted == 1
    assert history[0]["avg_reward"] == pytest.approx(sum(p["score_diff"] for p in pairs) / len(pairs))
    assert history[0]["min_reward"] > 0 and history[0]["max_reward"] == max(p["score_diff"] for p in pairs)
    assert f"Run 1: Collected {len(pairs)} trajectories, {len(pairs)} DPO pairs, avg reward: " in caplog.text
