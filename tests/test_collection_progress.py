"""What a collection pod prints while it runs: phase lines, NAT-style per-run lines, readable example counts, and
progress lines the operator reads (``dpo-progress``), rate-limited."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from dpo_operator.api.progress import CollectionReport, newest
from dpo_operator.collect.progress import CollectorProgress
from dpo_operator.collect.runner import run_collection
from tests.test_collect_runner import scripted_transport, spec


def reports(text: str) -> list[CollectionReport]:
    return [CollectionReport.model_validate_json(line.removeprefix("dpo-progress ")) for line in text.splitlines()
            if line.startswith("dpo-progress ")]


def test_a_collection_reports_examples_runs_pairs_and_rewards(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dpo_operator")
    out = io.StringIO()
    progress = CollectorProgress(2, 12, interval_seconds=0.0, out=out)
    result = run_collection(spec(numRuns=2), data_root=tmp_path, transport=scripted_transport(), progress=progress)
    lines = reports(out.getvalue())
    assert [r.phase for r in lines][:2] == ["waiting for endpoint", "collecting"] and lines[-1].phase == "done"
    assert {r.phase for r in lines} == {"waiting for endpoint", "collecting", "writing dataset", "done"}
    done_counts = [r.examples_done for r in lines if r.phase == "collecting"]
    assert done_counts == sorted(done_counts) and max(done_counts) == 24 and lines[-1].examples_total == 24
    last = lines[-1]
    assert (last.runs_completed, last.runs_total) == (2, 2) and last.candidates == result.candidates
    # pairs before deduplication and maxPairs: what the runs produced
    assert last.pairs == sum(result.pairsPerRun) and last.average_reward is not None
    assert newest(CollectionReport, out.getvalue()) == last
    messages = [r.getMessage() for r in caplog.records]
    run_lines = [m for m in messages if m.startswith("Run ")]
    assert [m.split(":")[0] for m in run_lines] == ["Run 1", "Run 2"]
    assert all("trajectories" in m and "DPO pairs, avg reward: " in m for m in run_lines)
    assert "phase collecting: started" in messages and any(m.startswith("examples 12/24 (50.0%)") for m in messages)


def test_progress_lines_are_rate_limited_with_an_eta_from_the_episode_rate() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = CollectorProgress(1, 100, interval_seconds=5.0, out=out, clock=lambda: now[0])
    with progress.phase("collecting"):
        for episode in range(1, 41):
            now[0] = episode * 0.5  # two episodes a second
            progress.episode_done()
    lines = reports(out.getvalue())
    assert [r.examples_done for r in lines] == [0, 10, 20, 30, 40]  # the phase change, then one per 5 s
    assert lines[-1].eta_seconds == 30.0  # 60 episodes left at 0.5 s each
    assert json.loads(lines[-1].line().removeprefix("dpo-progress "))["examplesTotal"] == 100
