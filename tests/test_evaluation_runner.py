"""The evaluation workload over real HTTP: a better and a worse endpoint, held-out examples, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from dpo_operator.api.evaluation import DPOEvaluationSpec
from dpo_operator.collect import tictactoe as ttt
from dpo_operator.embedded.policy_server import PolicyServer, board_from_messages
from dpo_operator.evaluate import heldout
from dpo_operator.evaluate.runner import RESULT_FILE, run_evaluation


def spec(candidate: str, baseline: str, **overrides: Any) -> DPOEvaluationSpec:
    base: dict[str, Any] = {
        "workflow": {"name": "tictactoe", "numExamples": 30},
        "candidate": {"baseUrl": candidate, "model": "toy/tictactoe-policy"},
        "baseline": {"baseUrl": baseline, "model": "toy/tictactoe-policy"},
        "gate": {"minImprovement": 0.0, "confidence": 0.95},
        "bootstrapResamples": 500, "seed": 5,
        "sampling": {"startupTimeoutSeconds": 5, "maxRetries": 0},
        "output": {"claimName": "data", "path": "/eval"},
    }
    base.update(overrides)
    return DPOEvaluationSpec.model_validate(base)


def test_a_better_endpoint_passes_and_every_score_is_in_the_result_file(tmp_path: Path) -> None:
    with PolicyServer(skill=1.0, noise=0.0, seed=1) as good, PolicyServer(skill=0.0, noise=0.5, seed=2) as bad:
        result = run_evaluation(spec(good.url, bad.url), data_root=tmp_path)
        reverse = run_evaluation(spec(bad.url, good.url), data_root=tmp_path / "reverse")
    assert result.verdict == "Passed", result.verdict_message
    assert result.examples == result.pairs == 30 and result.pool == 30 and result.excluded == 0
    assert result.candidate.count == result.baseline.count == 30 and result.candidate.failures == 0
    assert result.candidate.mean is not None and result.baseline.mean is not None
    assert result.mean_difference == pytest.approx(result.candidate.mean - result.baseline.mean, abs=1e-5)
    assert result.lower is not None and result.lower > 0 and result.wins > result.losses
    assert result.baseline.invalid_answers > 0 and result.candidate.invalid_answers == 0
    assert result.method == "pairedBootstrap" and result.resamples == 500 and result.seed == 5
    assert result.result_path == "pvc://data/eval/evaluation.json"
    document = json.loads((tmp_path / "eval" / RESULT_FILE).read_text())
    rows = document["examples"]
    assert len(rows) == 30
    candidate_scores = [r["candidate"] for r in rows]
    assert sum(candidate_scores) / 30 == pytest.approx(result.candidate.mean, abs=1e-5)
    assert all(r["difference"] == pytest.approx(r["candidate"] - r["baseline"]) for r in rows)
    assert document["summary"]["verdict"] == "Passed"
    # the same examples, and the same opponent, on both sides: swapping them mirrors the figures
    assert reverse.verdict == "Failed"
    assert reverse.mean_difference == pytest.approx(-result.mean_difference, abs=1e-5)
    assert (reverse.wins, reverse.losses) == (result.losses, result.wins)


def test_training_examples_of_a_collection_are_held_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    played = ttt.TicTacToeWorkflow({}).examples(40, 42)
    training = heldout.TrainingExamples("pairs", {"name": "tictactoe", "numExamples": 40}, 42)
    monkeypatch.setenv(heldout.TRAINING_EXAMPLES_ENV, training.to_json())
    with PolicyServer(skill=1.0, noise=0.0, seed=1) as good, PolicyServer(skill=0.2, noise=0.2, seed=2) as bad:
        evaluation = spec(good.url, bad.url, workflow={"name": "tictactoe", "numExamples": 60},
                          heldOut={"collectionRef": {"name": "pairs"}, "excludeIndices": [{"start": 0, "end": 3}]},
                          maxExamples=20)
        result = run_evaluation(evaluation, data_root=tmp_path)
    pool = ttt.TicTacToeWorkflow({}).examples(60, 5)
    boards = {e.payload for e in played}
    overlap = sum(e.payload in boards for e in pool[3:])
    assert overlap > 0  # the test means something: the two pools share positions
    assert result.pool == 60 and result.excluded == 3 + overlap and result.examples == 20
    assert result.held_out is not None and "DPOCollection pairs played (tictactoe, 40 examples, seed 42)" in result.held_out
    assert "3 by index ([0, 3))" in result.held_out and "capped at maxExamples 20" in result.held_out
    rows = json.loads((tmp_path / "eval" / RESULT_FILE).read_text())["examples"]
    evaluated = {r["id"] for r in rows}
    assert not any(e.example_id in evaluated for e in pool if e.payload in boards)


def test_no_examples_left_is_reported_without_calling_anyone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    training = heldout.TrainingExamples("pairs", {"name": "tictactoe", "numExamples": 30}, 5)  # the same pool
    monkeypatch.setenv(heldout.TRAINING_EXAMPLES_ENV, training.to_json())
    evaluation = spec("http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1", heldOut={"collectionRef": {"name": "pairs"}})
    result = run_evaluation(evaluation, data_root=tmp_path)
    assert result.examples == 0 and result.excluded == 30
    assert result.held_out is not None and "30 that DPOCollection pairs played" in result.held_out
    assert result.verdict == "Inconclusive" and result.verdict_message == "no examples were evaluated"


def failing_after(good: int) -> httpx.MockTransport:
    """Legal answers for the first ``good`` requests, then HTTP 500 for ever (an endpoint dying mid-run)."""
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(404)
        calls["n"] += 1
        if "baseline" in str(request.url) or calls["n"] <= good:
            cells = ttt.legal_moves(board_from_messages(json.loads(request.content)["messages"]) or "." * 9)
            return httpx.Response(200, json={"choices": [{"message": {"content": str(cells[0] + 1)}}]})
        return httpx.Response(500, json={"error": "gone"})

    return httpx.MockTransport(handler)


def test_an_endpoint_failing_mid_run_is_counted_and_never_passes(tmp_path: Path) -> None:
    evaluation = spec("http://candidate.test/v1", "http://baseline.test/v1", gate={"minImprovement": -100})
    result = run_evaluation(evaluation, data_root=tmp_path, transport=failing_after(10))
    assert result.verdict == "Inconclusive"
    assert result.candidate.failures > 0 and result.candidate.failures_by_reason == {
        "endpointError": result.candidate.failures}
    assert result.candidate.count + result.candidate.failures == 30 and result.baseline.failures == 0
    assert result.candidate.first_error is not None and "HTTP 500" in result.candidate.first_error
    rows = json.loads((tmp_path / "eval" / RESULT_FILE).read_text())["examples"]
    assert sum(r["candidate"] is None for r in rows) == result.candidate.failures


class NanWorkflow(ttt.TicTacToeWorkflow):
    """Tic-tac-toe whose scorer returns NaN for moves in the centre."""

    async def episode(self, example: Any, sample: Any, seed: int) -> list[Any]:
        events = await super().episode(example, sample, seed)
        return [e._replace(score=float("nan")) if e.output.strip() == "5" else e for e in events]


def nan_workflow(config: dict[str, Any]) -> NanWorkflow:
    return NanWorkflow(config)


def test_a_scorer_returning_nan_is_a_counted_failure(tmp_path: Path) -> None:
    with PolicyServer(skill=1.0, noise=0.0, seed=1) as good, PolicyServer(skill=0.0, noise=0.0, seed=2) as other:
        evaluation = spec(good.url, other.url, workflow={"name": f"{__name__}:nan_workflow", "numExamples": 30})
        result = run_evaluation(evaluation, data_root=tmp_path)
    failures = result.candidate.failures_by_reason.get("nonFiniteScore", 0)
    assert failures > 0 and result.verdict == "Inconclusive"
    assert "lack a score" in result.verdict_message
    json.loads((tmp_path / "eval" / RESULT_FILE).read_text())  # still valid JSON (no NaN written)


def test_excluding_every_index_is_an_invalid_spec() -> None:
    with pytest.raises(ValueError, match="exclude every example of the pool"):
        spec("http://a/v1", "http://b/v1", heldOut={"excludeIndices": [{"start": 0, "end": 10}, {"start": 10, "end": 99}]})
    assert spec("http://a/v1", "http://b/v1", heldOut={"excludeIndices": [{"start": 1, "end": 99}]}).held_out


def test_the_cli_reports_the_summary_and_refuses_equal_sides(tmp_path: Path) -> None:
    with PolicyServer(skill=1.0, noise=0.0, seed=1) as good, PolicyServer(skill=0.0, noise=0.3, seed=2) as bad:
        manifest = {"apiVersion": "dpo.ai/v1alpha1", "kind": "DPOEvaluation", "metadata": {"name": "e"},
                    "spec": spec(good.url, bad.url, output=None).to_api()}
        (tmp_path / "e.yaml").write_text(yaml.safe_dump(manifest))
        result_file = tmp_path / "result.json"
        proc = subprocess.run([sys.executable, "-m", "dpo_operator", "evaluate", "--spec", str(tmp_path / "e.yaml"),
                               "--output-dir", str(tmp_path / "out"), "--result-file", str(result_file)],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reported = json.loads(result_file.read_text())
    assert reported["verdict"] == "Passed" and reported["examples"] == 30
    assert len(result_file.read_text()) < 4000
    assert (tmp_path / "out" / RESULT_FILE).is_file()
    same = {**manifest, "spec": {**manifest["spec"], "baseline": {"baseUrl": good.url + "/", "model": good.model}}}
    (tmp_path / "same.yaml").write_text(yaml.safe_dump(same))
    proc = subprocess.run([sys.executable, "-m", "dpo_operator", "evaluate", "--spec", str(tmp_path / "same.yaml"),
                           "--result-file", str(result_file)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert "baseline equals candidate" in json.loads(result_file.read_text())["error"]


def test_the_held_out_description_stays_short_with_many_ranges() -> None:
    ranges = [{"start": 2 * i, "end": 2 * i + 1} for i in range(20)]
    evaluation = spec("http://a/v1", "http://b/v1", heldOut={"excludeIndices": ranges})
    selection = heldout.select(evaluation, list(range(30)), lambda i: i, None, None)
    assert selection.excluded == 15 and selection.examples == [i for i in range(30) if i % 2]
    assert "15 by index ([0, 1), [2, 3), [4, 5), [6, 7), [8, 9) and 15 more ranges)" in selection.description
