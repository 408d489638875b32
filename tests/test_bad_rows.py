"""Bad data fails fast and precisely: every row problem names the file and line and is deterministic (exit code 3,
so the Job fails at once instead of retrying); a row is bounded (MAX_ROW_BYTES, 2 MiB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")  # the trainer's data module (the [workload] extra)

from dpo_operator.train.data import MAX_ROW_BYTES, PreferenceFile, RowError  # noqa: E402

GOOD = {"prompt": "Q?", "chosen_response": "yes", "rejected_response": "no"}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every row, through the trainer's own reader."""
    rows = PreferenceFile(path)
    try:
        return [rows.row(i) for i in range(len(rows))]
    finally:
        rows.close()


def jsonl(path: Path, *rows: Any) -> Path:
    """Rows as lines (bytes and str written as they are, anything else as JSON)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        for row in rows:
            out.write(row if isinstance(row, bytes) else (row if isinstance(row, str) else json.dumps(row)).encode())
            out.write(b"\n")
    return path


@pytest.mark.parametrize("bad,problem", [
    ({**GOOD, "prompt": 5}, "prompt must be a string or a list of chat messages, not int"),
    ({**GOOD, "prompt": [{"role": "user", "content": 7}]}, "message 0's content must be a string or null, not int"),
    ({**GOOD, "prompt": [{"content": "hi"}]}, "message 0 must be an object with a string 'role'"),
    ({**GOOD, "prompt": ["hi"]}, "message 0 must be an object"),
    ({**GOOD, "chosen_response": None}, "chosen_response must be a string, not NoneType"),
    ({"prompt": "Q?", "chosen_response": "yes"}, "row lacks ['rejected_response']"),
    ([1, 2], "a row must be a JSON object, not list"),
    ("{not json", "not a JSON object"),
    (b'{"prompt": "\xff\xfe", "chosen_response": "a", "rejected_response": "b"}', "not a JSON object"),
])
def test_each_row_problem_names_file_and_line(tmp_path: Path, bad: Any, problem: str) -> None:
    path = jsonl(tmp_path / "t.jsonl", GOOD, "", bad, GOOD)  # an empty line counts: the bad row is on line 3
    with pytest.raises(RowError) as caught:
        read_jsonl(path)
    assert str(caught.value).startswith(f"{path}:3: ") and problem in str(caught.value)
    assert isinstance(caught.value, ValueError)  # cli._exit_code: 3, a deterministic failure


def test_tool_call_messages_and_multi_turn_prompts_are_fine(tmp_path: Path) -> None:
    prompt = [{"role": "user", "content": "a"}, {"role": "assistant", "content": None, "tool_calls": []},
              {"role": "tool", "content": "b"}]
    assert read_jsonl(jsonl(tmp_path / "t.jsonl", {**GOOD, "prompt": prompt}))[0]["prompt"] == prompt


def test_a_row_over_the_bound_is_refused_while_indexing(tmp_path: Path) -> None:
    at_bound = {**GOOD, "prompt": "x" * (MAX_ROW_BYTES - len(json.dumps({**GOOD, "prompt": ""})))}
    assert len(json.dumps(at_bound)) == MAX_ROW_BYTES
    path = jsonl(tmp_path / "t.jsonl", GOOD, at_bound, {**GOOD, "prompt": "x" * (30 * 2**20)}, GOOD)
    with pytest.raises(RowError, match=rf"^{path}:3: row is larger than 2 MiB"):
        PreferenceFile(path)
    assert len(PreferenceFile(jsonl(tmp_path / "ok.jsonl", GOOD, at_bound))) == 2  # the bound itself is fine


def test_the_trainer_exits_3_naming_the_row(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tests.tinymodel import build_tiny_model

    build_tiny_model(tmp_path / "tiny")
    jsonl(tmp_path / "data/training/training_file.jsonl", *[GOOD] * 4, {**GOOD, "prompt": 5}, *[GOOD] * 3)
    jsonl(tmp_path / "data/validation/validation_file.jsonl", GOOD)
    spec = {"dataset": {"location": {"pvc": {"claimName": "d"}}}, "model": {"name": "tiny"},
            "hyperparameters": {"finetuningType": "all_weights", "epochs": 1, "batchSize": 4},
            "local": {"gpusPerNode": 0, "precision": "fp32", "output": {"claimName": "d"}}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    run = subprocess.run([sys.executable, "-m", "dpo_operator", "train", "--spec", str(tmp_path / "spec.json"),
                          f"--model={tmp_path / 'tiny'}", f"--dataset-dir={tmp_path / 'data'}",
                          f"--output-dir={tmp_path / 'out'}", f"--result-file={tmp_path / 'result'}"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 3, run.stderr[-3000:]  # was 1 (a TypeError): retried backoffLimit times
    error = json.loads((tmp_path / "result").read_text())["error"]
    assert error.startswith("RowError: ") and "training/training_file.jsonl:5: prompt must be a string" in error


def test_the_collector_exits_3_on_a_malformed_nat_output(tmp_path: Path) -> None:
    (tmp_path / "o.json").write_text(json.dumps(["an", "unstructured", "output"]))
    spec = {"workflow": {"nat": {"workflowOutput": {"claimName": "data", "path": "/o.json"}}},
            "output": {"pvc": {"claimName": "data", "path": "/ds"}}}
    for source in ("/o.json", "/missing.json"):
        spec["workflow"]["nat"]["workflowOutput"]["path"] = source
        run = subprocess.run([sys.executable, "-m", "dpo_operator", "collect", "--spec-env", "SPEC",
                              f"--result-file={tmp_path / 'result'}"], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "SPEC": json.dumps(spec), "DPO_DATA_ROOT": str(tmp_path)})
        assert run.returncode == 3, run.stderr[-3000:]  # was 1: retried, and every retry fails the same way
        error = json.loads((tmp_path / "result").read_text())["error"]
        assert "NatInputError: " in error and source in error
