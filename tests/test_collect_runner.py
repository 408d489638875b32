"""The collection runtime end to end: real HTTP to an OpenAI-compatible server, failures, retries, output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from dpo_operator.api.collection import DPOCollectionSpec
from dpo_operator.collect import tictactoe as ttt
from dpo_operator.collect.runner import CollectionError, run_collection
from dpo_operator.embedded.policy_server import PolicyServer, board_from_messages


def spec(**overrides: object) -> DPOCollectionSpec:
    # scripted endpoints answer completions only (no model listing): no wait for the model to be served
    base = {"workflow": {"name": "tictactoe", "numExamples": 12},
            "llm": {"baseUrl": "http://llm.test/v1", "model": "m", "startupTimeoutSeconds": 0},
            "candidatesPerTurn": 4, "output": {"pvc": {"claimName": "data", "path": "/ds"}}, "seed": 3}
    base.update(overrides)
    return DPOCollectionSpec.model_validate(base)


def scripted_transport(fail_first: int = 0, status: int = 503, seen: list | None = None) -> httpx.MockTransport:
    """Answers with the cells 1..9 in turn (some illegal), after ``fail_first`` failures with ``status``."""
    calls = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if seen is not None:
            seen.append(request)
        if calls["n"] <= fail_first:
            return httpx.Response(status, json={"error": "busy"})
        content = str(calls["n"] % 9 + 1) if calls["n"] % 5 else "pass"
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": content}}]})

    return httpx.MockTransport(handler)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_cli_collects_a_dataset_over_http(tmp_path: Path) -> None:
    with PolicyServer(skill=0.3, noise=0.2, seed=1) as server:
        manifest = {"apiVersion": "dpo.ai/v1alpha1", "kind": "DPOCollection", "metadata": {"name": "x"},
                    "spec": {"workflow": {"numExamples": 10}, "llm": {"baseUrl": server.url, "model": server.model},
                             "candidatesPerTurn": 4, "numRuns": 2, "output": {"pvc": {"claimName": "data"}},
                             "useFullMessageHistory": True}}
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(manifest))
        out, result_file = tmp_path / "out", tmp_path / "result.json"
        proc = subprocess.run([sys.executable, "-m", "dpo_operator", "collect", "--spec", str(tmp_path / "c.yaml"),
                               "--output-dir", str(out), "--result-file", str(result_file)],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(result_file.read_text())
    train, val = read_rows(out / "training/training_file.jsonl"), read_rows(out / "validation/validation_file.jsonl")
    assert result["pairs"] == {"total": len(train) + len(val), "training": len(train), "validation": len(val)}
    assert result["runsCompleted"] == 2 and result["runsFailed"] == 0 and result["candidates"] > 0
    assert len(result["pairsPerRun"]) == 2 and result["meanScoreDiff"] > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pairs"] == result["pairs"] and metrics["decisionPoints"] > 0
    for row in train + val:  # every pair prefers the move that minimax values higher
        assert set(row) == {"prompt", "chosen_response", "rejected_response"}
        assert isinstance(row["prompt"], list) and row["prompt"][-1]["role"] == "user"
        board = board_from_messages(row["prompt"])
        assert ttt.score_move(board, row["chosen_response"]) > ttt.score_move(board, row["rejected_response"])


def test_retries_transient_errors_then_succeeds(tmp_path: Path) -> None:
    result = run_collection(spec(), data_root=tmp_path, transport=scripted_transport(fail_first=3, status=503))
    assert result.pairs["total"] > 0
    assert (tmp_path / "ds/training/training_file.jsonl").exists()
    assert result.datasetLocation == "pvc://data/ds"


def test_permanent_endpoint_error_fails_with_message(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match="HTTP 401"):
        run_collection(spec(), data_root=tmp_path, transport=scripted_transport(fail_first=10**6, status=401))
    assert not (tmp_path / "ds").exists()


def test_continue_on_collection_error_skips_the_failed_run(tmp_path: Path) -> None:
    s = spec(numRuns=2, continueOnCollectionError=True,
             llm={"baseUrl": "http://llm.test/v1", "model": "m", "maxRetries": 0, "useN": False,
                  "startupTimeoutSeconds": 0})
    result = run_collection(s, data_root=tmp_path, transport=scripted_transport(fail_first=1, status=400))
    assert (result.runsCompleted, result.runsFailed) == (1, 1)
    assert "HTTP 400" in result.errors[0]


def test_every_run_failing_is_an_error_even_when_continuing(tmp_path: Path) -> None:
    s = spec(numRuns=2, continueOnCollectionError=True)
    with pytest.raises(CollectionError, match="every collection run failed"):
        run_collection(s, data_root=tmp_path, transport=scripted_transport(fail_first=10**6, status=404))


def test_no_pairs_when_all_candidates_tie(tmp_path: Path) -> None:
    same = httpx.MockTransport(lambda r: httpx.Response(200, json={"choices": [{"message": {"content": "no idea"}}]}))
    with pytest.raises(CollectionError, match="no preference pairs.*equal scores"):
        run_collection(spec(), data_root=tmp_path, transport=same)


def test_max_pairs_and_seed_make_the_dataset_reproducible(tmp_path: Path) -> None:
    first = run_collection(spec(maxPairs=5), data_root=tmp_path / "a", transport=scripted_transport())
    second = run_collection(spec(maxPairs=5), data_root=tmp_path / "b", transport=scripted_transport())
    assert first.pairs["total"] == second.pairs["total"] == 5
    for name in ("training/training_file.jsonl", "validation/validation_file.jsonl"):
        assert (tmp_path / "a/ds" / name).read_bytes() == (tmp_path / "b/ds" / name).read_bytes()


def test_api_key_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    seen: list[httpx.Request] = []
    run_collection(spec(workflow={"numExamples": 2}), data_root=tmp_path, transport=scripted_transport(seen=seen))
    assert seen and all(r.headers["authorization"] == "Bearer sk-secret" for r in seen)


def test_cli_reports_failure_in_result_file(tmp_path: Path) -> None:
    env = {**os.environ, "SPEC": json.dumps({"llm": {"baseUrl": "http://127.0.0.1:9/v1", "model": "m", "maxRetries": 0,
                                                     "startupTimeoutSeconds": 1},
                                             "output": {"pvc": {"claimName": "d"}}, "workflow": {"numExamples": 1}}),
           "DPO_DATA_ROOT": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "dpo_operator", "collect", "--spec-env", "SPEC", "--result-file",
                           str(tmp_path / "r")], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 4  # api/exits.py: a URL that never answered (its port refused) is misconfigured
    error = json.loads((tmp_path / "r").read_text())["error"]
    assert "did not serve model 'm' within 1s (llm.startupTimeoutSeconds): ConnectError" in error
