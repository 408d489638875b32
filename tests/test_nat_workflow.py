"""NAT workflows as a candidate source: TTC_END capture, NAT's pair semantics, offline workflow_output.json, live runs.

The reference is NAT's own ``dpo_traj_builder`` (nvidia-nat-nemo-customizer 1.9.0): live when importable, else its
pairs recorded by ``tests/natplugin/record_reference.py`` from the same ``workflow_output.json``. The live tests run
the test workflow (``tests/natplugin``, no network) with NAT's evaluation runner; they skip without the [nat] extra.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from dpo_operator.api.collection import DPOCollectionSpec
from dpo_operator.collect import nat
from dpo_operator.collect.events import CandidateCheck
from dpo_operator.collect.pairs import PairingOptions, build_pairs
from dpo_operator.collect.runner import CollectionError, run_collection

PLUGIN = Path(__file__).parent / "natplugin"
STEP = "dpo_candidate_move"
RECORDED = PLUGIN / nat.WORKFLOW_OUTPUT


def nat_reference(items: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """NAT's builder's pairs for ``items`` (live), or for the recorded output (live, or as recorded)."""
    try:
        sys.path.insert(0, str(PLUGIN))
        from natref import nat_builder_pairs

        importlib.import_module("nat.plugins.customizer.dpo.trajectory_builder")
    except ImportError:
        if items is not None:
            pytest.skip("NAT's reference builder (nvidia-nat-nemo-customizer) is not installed")
        return json.loads((PLUGIN / "nat_reference_pairs.json").read_text())
    finally:
        sys.path.remove(str(PLUGIN))
    return nat_builder_pairs(items if items is not None else nat.read_workflow_output(RECORDED), STEP)


def minus_ties(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What we build from NAT's pairs: no equal scores, no identical texts (both carry no preference)."""
    return [p for p in pairs if p["score_diff"] > 0 and p["chosen"] != p["rejected"]]


def ours(items: list[dict[str, Any]], full_history: bool = True) -> list[dict[str, Any]]:
    events = nat.candidates_from_items(items, STEP, CandidateCheck(full_history))
    return [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "score_diff": p.score_diff,
             "example_id": p.example_id, "turn_id": p.turn_id} for p in build_pairs(events, PairingOptions())]


def rows_of(directory: Path) -> list[dict[str, Any]]:
    lines = []
    for name in ("training/training_file.jsonl", "validation/validation_file.jsonl"):
        lines += (directory / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def as_set(rows: list[dict[str, Any]]) -> set[str]:
    return {json.dumps([r["prompt"], r.get("chosen", r.get("chosen_response")),
                        r.get("rejected", r.get("rejected_response"))], sort_keys=True) for r in rows}


def nat_spec(nat_spec: dict[str, Any], **overrides: Any) -> DPOCollectionSpec:
    return DPOCollectionSpec.model_validate({"workflow": {"nat": nat_spec}, "output": {"pvc": {"claimName": "data",
                                            "path": "/ds"}}, "useFullMessageHistory": True, "validationFraction": 0.5,
                                             **overrides})


# ------------------------------------------------------------------ NAT-format steps (no NAT needed)

def test_recorded_nat_steps_give_nat_builders_pairs_minus_ties() -> None:
    items = nat.read_workflow_output(RECORDED)
    reference = nat_reference()
    assert len(reference) == 60 and len(minus_ties(reference)) < len(reference)  # the data has ties to drop
    assert ours(items) == minus_ties(reference)  # same pairs, same order (turn by turn, by score difference)


def test_offline_workflow_outputs_become_a_dataset(tmp_path: Path) -> None:
    for run in ("run-1", "run-2"):  # a directory of nat eval outputs: one run each
        (tmp_path / "nat" / run).mkdir(parents=True)
        shutil.copy(RECORDED, tmp_path / "nat" / run / nat.WORKFLOW_OUTPUT)
    spec = nat_spec({"workflowOutput": {"claimName": "data", "path": "/nat"}})
    assert spec.llm is None
    result = run_collection(spec, data_root=tmp_path)
    assert (result.runsCompleted, result.candidates, result.invalidCandidates) == (2, 80, 0)
    rows = rows_of(tmp_path / "ds")
    assert as_set(rows) == as_set(minus_ties(nat_reference()))  # duplicates removed, the same preferences
    metrics = json.loads((tmp_path / "ds/metrics.json").read_text())
    assert metrics["tiedPairsDropped"] > 0 and metrics["pairsBeforeSampling"] == result.pairs["total"]


def step(output: Any, score: Any, *, turn: Any = "t0", index: int = 0, prompt: Any = None, name: str = STEP,
         kind: str = "TTC_END") -> dict[str, Any]:
    data = {"input": prompt if prompt is not None else [{"role": "user", "content": "q"}], "output": output,
            "score": score, "turn_id": turn, "turn_index": 0, "candidate_index": index}
    if turn is None:
        del data["turn_id"]
    return {"payload": {"event_type": kind, "name": name, "data": data, "UUID": "u"}}


TOOL_CALL = {"role": "assistant", "content": None,
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{}"}}]}


def bad_items() -> list[dict[str, Any]]:
    with_tool_call = [{"role": "user", "content": "q"}, TOOL_CALL, {"role": "tool", "tool_call_id": "c1", "content": "x"}]
    ends_in_tool_call = [{"role": "user", "content": "q"}, TOOL_CALL]
    return [{"id": "e1", "intermediate_steps": [
        step("good", 1.0, index=0), step("worse", 0.0, index=1),
        step("nan", math.nan), step("inf", math.inf), step("no number", "high"), step(None, 0.5), step("  ", 0.5),
        step("no turn", 0.5, turn=None), step("no score", None),
        step("other step", 9.0, name="something_else"), step("a start", 9.0, kind="TTC_START"),
        step("tool a", 1.0, turn="t1", prompt=with_tool_call), step("tool b", 0.5, turn="t1", prompt=with_tool_call),
        step("after call", 1.0, turn="t2", prompt=ends_in_tool_call),
        step("after call 2", 0.0, turn="t2", prompt=ends_in_tool_call),
    ]}]


@pytest.mark.parametrize("full_history", [False, True])
def test_bad_candidates_are_counted_and_never_reach_the_dataset(tmp_path: Path, full_history: bool) -> None:
    (tmp_path / "nat").mkdir()
    (tmp_path / "nat" / nat.WORKFLOW_OUTPUT).write_text(json.dumps(bad_items()))  # NaN/Infinity, as NAT writes them
    spec = nat_spec({"workflowOutput": {"claimName": "data", "path": "/nat/workflow_output.json"}},
                    useFullMessageHistory=full_history)
    result = run_collection(spec, data_root=tmp_path)
    metrics = json.loads((tmp_path / "ds/metrics.json").read_text())
    expected = {"nonFiniteScore": 2, "nonNumericScore": 1, "nullOutput": 1, "emptyOutput": 1, "missingTurnId": 1,
                "missingScore": 1}
    if not full_history:  # the prompt would be the last message's text, and a tool call has none
        expected["promptWithoutText"] = 2
    assert metrics["invalidCandidatesByReason"] == expected
    assert result.invalidCandidates == metrics["invalidCandidates"] == sum(expected.values())
    rows = rows_of(tmp_path / "ds")
    assert {(r["chosen_response"], r["rejected_response"]) for r in rows} == (
        {("good", "worse"), ("tool a", "tool b")} | ({("after call", "after call 2")} if full_history else set()))
    for row in rows:
        assert isinstance(row["chosen_response"], str) and isinstance(row["rejected_response"], str)
        if full_history and row["chosen_response"] == "tool a":  # tool-call messages are kept as messages
            assert row["prompt"][1] == TOOL_CALL
        if not full_history:
            assert isinstance(row["prompt"], str)


def test_only_bad_candidates_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "o.json").write_text(json.dumps([{"id": 1, "intermediate_steps": [step(None, 1.0), step("x", math.nan)]}]))
    with pytest.raises(CollectionError, match=r"2 candidates were invalid.*nullOutput"):
        run_collection(nat_spec({"workflowOutput": {"claimName": "data", "path": "/o.json"}}), data_root=tmp_path)


def test_a_file_that_is_not_nat_output_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "o.json").write_text(json.dumps(["an", "unstructured", "output"]))
    with pytest.raises(CollectionError, match="is not a NAT workflow output"):
        run_collection(nat_spec({"workflowOutput": {"claimName": "data", "path": "/o.json"}}), data_root=tmp_path)
    with pytest.raises(nat.NatError, match="does not exist"):
        run_collection(nat_spec({"workflowOutput": {"claimName": "data", "path": "/missing"}}), data_root=tmp_path)


def test_nat_spec_needs_one_source_and_makes_llm_optional() -> None:
    with pytest.raises(ValueError, match="exactly one of configFile, configMapRef or workflowOutput"):
        nat_spec({"configFile": "/a.yml", "workflowOutput": {"claimName": "d"}})
    with pytest.raises(ValueError, match="spec.llm is required unless spec.workflow.nat is set"):
        DPOCollectionSpec.model_validate({"output": {"pvc": {"claimName": "d"}}})
    spec = nat_spec({"configMapRef": {"name": "nat", "key": "config.yml"}}, candidatesPerTurn=1)
    assert spec.workflow.nat.ttc_step_name == STEP  # candidatesPerTurn does not apply: NAT brings its candidates


# ------------------------------------------------------------------ live: NAT's evaluation runner

def nat_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test workflow's config, with an absolute dataset path; its plugin on the path NAT discovers from."""
    pytest.importorskip("nat.plugins.eval.runtime.evaluate", reason="needs the [nat] extra")
    monkeypatch.syspath_prepend(str(PLUGIN))
    monkeypatch.setenv("PYTHONPATH", f"{PLUGIN}:{os.environ.get('PYTHONPATH', '')}".rstrip(":"))
    config = tmp_path / "nat-config.yml"
    config.write_text((PLUGIN / "config.yml").read_text().replace("file_path: data.json",
                                                                  f"file_path: {PLUGIN / 'data.json'}"))
    return config


def test_nat_workflow_runs_unchanged_through_the_collector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = nat_config(tmp_path, monkeypatch)
    spec = nat_spec({"configFile": str(config)}, numRuns=2, workflow={"nat": {"configFile": str(config)},
                                                                       "maxConcurrentEpisodes": 2})
    result = run_collection(spec, data_root=tmp_path)
    assert (result.runsCompleted, result.candidates, result.invalidCandidates) == (2, 80, 0)
    assert as_set(rows_of(tmp_path / "ds")) == as_set(minus_ties(nat_reference()))
    metrics = json.loads((tmp_path / "ds/metrics.json").read_text())
    assert metrics["candidatesPerSecond"] > 0 and metrics["requests"] is None  # NAT makes its own model calls


def test_live_steps_give_nat_builders_pairs_minus_ties(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    config = nat_config(tmp_path, monkeypatch)
    items = asyncio.run(nat.run_nat_eval(config, tmp_path / "out"))
    assert ours(items) == minus_ties(nat_reference(items))
    written = nat.read_workflow_output(tmp_path / "out" / nat.WORKFLOW_OUTPUT)  # NAT's file: TTC_END steps only
    assert {s["payload"]["event_type"] for i in written for s in i["intermediate_steps"]} == {"TTC_END"}
    assert ours(written) == ours(items)


def test_a_failing_nat_run_is_a_run_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = nat_config(tmp_path, monkeypatch)
    config.write_text(config.read_text().replace(str(PLUGIN / "data.json"), str(tmp_path / "missing.json")))
    with pytest.raises(CollectionError, match="run 1/1"):
        run_collection(nat_spec({"configFile": str(config)}), data_root=tmp_path)


def test_the_operator_never_imports_nat() -> None:
    import subprocess

    code = ("import sys, dpo_operator.handlers, dpo_operator.cli, dpo_operator.collect.runner; "
            "print(sorted(m for m in sys.modules if m == 'nat' or m.startswith('nat.')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
