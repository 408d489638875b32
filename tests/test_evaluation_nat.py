"""A NeMo Agent Toolkit workflow evaluated through its own evaluator (NAT's reward_function) against two endpoints.

The test workflow (tests/natplugin/dpo_ask_workflow.py) asks its configured LLM for a tic-tac-toe move; the
evaluation points the config's llms at each side and scores every item with the config's reward evaluator.
Skips without the [nat] extra.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from dpo_operator.api.evaluation import DPOEvaluationSpec
from dpo_operator.collect import tictactoe as ttt
from dpo_operator.embedded.policy_server import PolicyServer
from dpo_operator.evaluate import heldout
from dpo_operator.evaluate.runner import RESULT_FILE, run_evaluation

pytest.importorskip("nat.plugins.eval.runtime.evaluate", reason="needs the [nat] extra")
PLUGIN = Path(__file__).parent / "natplugin"
BOARDS = json.loads((PLUGIN / "boards.json").read_text())


@pytest.fixture()
def nat_config(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The asking workflow's config, its plugins importable as an installed package's would be."""
    monkeypatch.syspath_prepend(str(PLUGIN))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGIN), os.environ.get("PYTHONPATH")])))
    return PLUGIN / "ask_config.yml"


def nat_spec(config: Path, candidate: PolicyServer, baseline: PolicyServer, **overrides: Any) -> DPOEvaluationSpec:
    base: dict[str, Any] = {"workflow": {"nat": {"configFile": str(config)}},
                            "candidate": {"baseUrl": candidate.url, "model": candidate.model},
                            "baseline": {"baseUrl": baseline.url, "model": "toy/other-policy"},
                            "gate": {"minImprovement": 0.0}, "bootstrapResamples": 400}
    base.update(overrides)
    return DPOEvaluationSpec.model_validate(base)


def test_nat_items_are_scored_by_the_reward_evaluator(nat_config: Path, tmp_path: Path) -> None:
    with PolicyServer(skill=1.0, noise=0.0, seed=1) as good, \
            PolicyServer(model="toy/other-policy", skill=0.0, noise=0.6, seed=2) as bad:
        spec = nat_spec(nat_config, good, bad, heldOut={"excludeIndices": [{"start": 0, "end": 2}]})
        result = run_evaluation(spec, data_root=tmp_path, output_dir=tmp_path / "out")
        assert good.requests == bad.requests == len(BOARDS) - 2  # one response per item, on each side
    rows = json.loads((tmp_path / "out" / RESULT_FILE).read_text())["examples"]
    assert [r["id"] for r in rows] == [b["id"] for b in BOARDS[2:]]
    boards = {b["id"]: b["question"] for b in BOARDS}
    for row in rows:  # the evaluator's score is the move's exact value, on both sides
        for side in ("candidate", "baseline"):
            answer = row[f"{side}Detail"]["answer"]
            assert row[side] == ttt.score_move(boards[row["id"]], answer)
    assert all(r["candidate"] > ttt.ILLEGAL_MOVE_SCORE for r in rows)  # the best move: never illegal
    assert result.examples == 14 and result.excluded == 2 and result.candidate.failures == 0
    assert result.candidate.mean == pytest.approx(sum(r["candidate"] for r in rows) / 14, abs=1e-5)
    assert result.verdict == "Passed", result.verdict_message


def test_the_same_nat_workflow_as_the_collection_leaves_nothing_held_out(
        nat_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    training = heldout.TrainingExamples("pairs", {"nat": {"configFile": str(nat_config),
                                                          "ttcStepName": "dpo_candidate_move"}}, 42)
    monkeypatch.setenv(heldout.TRAINING_EXAMPLES_ENV, training.to_json())
    with PolicyServer(seed=1) as good, PolicyServer(model="toy/other-policy", seed=2) as bad:
        spec = nat_spec(nat_config, good, bad, heldOut={"collectionRef": {"name": "pairs"}})
        result = run_evaluation(spec, data_root=tmp_path, output_dir=tmp_path / "out")
        assert good.requests == bad.requests == 0
    assert result.examples == 0 and result.excluded == len(BOARDS)
    assert result.held_out is not None and "the same NAT config and dataset" in result.held_out


def test_an_unknown_evaluator_is_a_clear_error(nat_config: Path, tmp_path: Path) -> None:
    from dpo_operator.collect.nat import NatInputError

    with PolicyServer(seed=1) as good, PolicyServer(model="toy/other-policy", seed=2) as bad:
        spec = nat_spec(nat_config, good, bad, nat={"evaluator": "accuracy"})
        with pytest.raises(NatInputError, match="evaluator 'accuracy' is not in the NAT config's eval.evaluators "
                                                r"\(exact_format, move_value\)"):
            run_evaluation(spec, data_root=tmp_path, output_dir=tmp_path / "out")


def test_a_nat_side_whose_endpoint_fails_is_missing_data_not_a_low_score(nat_config: Path, tmp_path: Path) -> None:
    """NAT's runner stops on a workflow error and still runs the evaluators on the empty outputs: those items are
    failures, never scores (a dead baseline must not make the candidate look better)."""
    with PolicyServer(seed=1) as good:
        spec = DPOEvaluationSpec.model_validate({
            "workflow": {"nat": {"configFile": str(nat_config)}},
            "candidate": {"baseUrl": good.url, "model": good.model},
            "baseline": {"baseUrl": "http://127.0.0.1:9/v1", "model": "gone"}, "gate": {"minImprovement": -10}})
        result = run_evaluation(spec, data_root=tmp_path, output_dir=tmp_path / "out")
    assert result.candidate.count == len(BOARDS) and result.candidate.failures == 0
    assert result.baseline.count == 0 and result.baseline.failures_by_reason == {"workflowError": len(BOARDS)}
    assert result.baseline.first_error is not None and "stopped on a workflow error" in result.baseline.first_error
    assert result.verdict == "Inconclusive" and result.pairs == 0
