"""NAT's output files (``data_collection_progress.jsonl``, ``collection_history.json``, ``final_metrics.json``) in a
NAT collection's output directory, with NAT's field names, and the reward_function evaluator's average per run."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from dpo_operator.collect import nat, nat_finetune, nat_outputs, nat_settings
from dpo_operator.collect.runner import run_collection
from tests.test_nat_settings import FINETUNE, offline_spec, spec_of, write_config
from tests.test_nat_workflow import PLUGIN, RECORDED, minus_ties, nat_reference

ENTRY_KEYS = ["run_number", "timestamp", "run_id", "num_trajectories", "num_dpo_pairs", "avg_reward", "min_reward",
              "max_reward"]  # NAT's log_progress entry: its own three keys, then run_epoch's metrics
FINAL_KEYS = ["run_id", "timestamp", "status", "message", "progress", "num_collection_runs",
              "total_trajectory_groups", "collection_summary", "job_metadata"]


def nat_files(directory: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    progress = [json.loads(line) for line in (directory / "data_collection_progress.jsonl").read_text().splitlines()]
    history = json.loads((directory / "collection_history.json").read_text())
    return progress, history, json.loads((directory / "final_metrics.json").read_text())


def test_nat_files_of_an_offline_collection_of_two_runs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = offline_spec(tmp_path / "none.yml", tmp_path, useFullMessageHistory=True)
    for run in ("a", "b"):  # two recorded runs: one workflow_output.json each
        (tmp_path / "out" / run).mkdir()
        shutil.copy(RECORDED, tmp_path / "out" / run / nat.WORKFLOW_OUTPUT)
    (tmp_path / "out" / nat.WORKFLOW_OUTPUT).unlink()
    with caplog.at_level("INFO", logger="dpo_operator.collect.runner"):
        result = run_collection(spec, data_root=tmp_path)
    progress, history, final = nat_files(tmp_path / "ds")
    pairs = minus_ties(nat_reference())
    assert progress == history and [list(e) for e in history] == [ENTRY_KEYS, ENTRY_KEYS]
    assert [(e["run_number"], e["num_trajectories"], e["num_dpo_pairs"]) for e in history] == [
        (0, len(pairs), len(pairs)), (1, len(pairs), len(pairs))]
    assert history[0]["avg_reward"] == pytest.approx(sum(p["score_diff"] for p in pairs) / len(pairs))
    assert history[0]["max_reward"] == max(p["score_diff"] for p in pairs)
    assert re.fullmatch(r"nemo_dpo_[0-9a-f]{8}", history[0]["run_id"]) and history[1]["run_id"] == history[0]["run_id"]
    assert "reward_function" not in history[0]  # no NAT config, no evaluator
    assert list(final) == FINAL_KEYS
    assert final["run_id"] == history[0]["run_id"] and final["status"] == "completed" and final["progress"] == 100.0
    assert final["num_collection_runs"] == 2 and final["job_metadata"] is None
    assert final["total_trajectory_groups"] == 2 * len({p["example_id"] for p in pairs})  # by example, per run
    assert final["collection_summary"] == {"total_trajectories": 2 * len(pairs), "total_dpo_pairs": 2 * len(pairs),
                                           "avg_reward": pytest.approx(history[0]["avg_reward"])}
    assert f"{result.pairs['total']} DPO pairs written to " in final["message"]  # after deduplication
    assert result.pairs["total"] < len(pairs)  # NAT counts before deduplication (runs repeat each other)
    assert json.loads((tmp_path / "ds/metrics.json").read_text())["collectionHistory"] == history
    assert "Run 2: Collected" in caplog.text


def test_a_builtin_workflow_collection_writes_no_nat_files(tmp_path: Path) -> None:
    from tests.test_collect_runner import scripted_transport, spec

    run_collection(spec(), data_root=tmp_path, transport=scripted_transport())
    written = {p.name for p in (tmp_path / "ds").rglob("*") if p.is_file()}
    assert "metrics.json" in written and not written & {nat_outputs.PROGRESS_FILE, nat_outputs.HISTORY_FILE,
                                                         nat_outputs.FINAL_METRICS_FILE}


def final_guess(question: str, candidates: int, turns: int) -> str:
    """The guessing workflow's final answer (tests/natplugin/dpo_guess_workflow.py), computed here by hand."""
    secret = int(re.search(r"\d+", question).group())  # type: ignore[union-attr]
    best = ""
    for turn in range(turns):
        guesses = [str(hashlib.sha256(f"{question}|{turn}|{i}".encode()).digest()[0] % 10) for i in range(candidates)]
        best = max(guesses, key=lambda g: -abs(int(g) - secret))
    return best


def test_the_reward_function_evaluators_average_per_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """``finetuning.reward_function: {name: exact}``: each run's line and entry carry the evaluator's mean score."""
    pytest.importorskip("nat.plugins.eval.runtime.evaluate", reason="needs the [nat] extra")
    monkeypatch.syspath_prepend(str(PLUGIN))
    trainer = {"nemo_trainer": {"_type": "nemo_customizer_trainer", "num_runs": 2}}
    config = write_config(tmp_path, {**FINETUNE, "trainers": trainer})
    shutil.copy(PLUGIN / "data.json", config.parent / "data.json")
    examples = json.loads((PLUGIN / "data.json").read_text())
    expected = sum(final_guess(e["question"], 4, 2) == e["answer"] for e in examples) / len(examples)
    assert 0 < expected < 1  # the test can tell a mean from a constant
    with caplog.at_level("INFO", logger="dpo_operator.collect.runner"):
        run_collection(spec_of(config, validationFraction=0.5), data_root=tmp_path)
    progress, history, final = nat_files(tmp_path / "ds")
    assert progress == history and len(history) == 2
    assert [(e["reward_function"], e["avg_evaluator_reward"]) for e in history] == [("exact", expected)] * 2
    assert final["collection_summary"]["reward_function"] == "exact"
    assert final["collection_summary"]["avg_evaluator_reward"] == pytest.approx(expected)
    assert f"Run 1: Collected {history[0]['num_dpo_pairs']} trajectories" in caplog.text
    assert f"exact (reward_function) avg: {expected:.4f}" in caplog.text


def test_a_reward_function_that_names_no_evaluator_is_refused_naming_the_key(tmp_path: Path) -> None:
    finetuning = {**FINETUNE["finetuning"], "reward_function": {"name": "accuracy"}}
    config = write_config(tmp_path, {**FINETUNE, "finetuning": finetuning})
    with pytest.raises(nat_finetune.NatConfigError,
                       match=r"finetuning.reward_function.name names 'accuracy', which is not in eval.evaluators "
                             r"\(it has: exact\)"):
        nat_settings.resolve(spec_of(config), config)
    config = write_config(tmp_path / "x", {**FINETUNE, "finetuning": {**finetuning, "reward_function": "exact"}})
    with pytest.raises(nat_finetune.NatConfigError, match="finetuning.reward_function must be a mapping"):
        nat_settings.resolve(spec_of(config), config)
    assert nat_settings.resolve(spec_of(write_config(tmp_path / "y", FINETUNE)),
                                tmp_path / "y" / "conf" / "config.yml").reward_function == "exact"
