"""`make demo-loop`: a DPOLoop of tic-tac-toe rounds on the embedded cluster, its per-round table, lineage and plot.

The end-to-end test runs `dpo-operator demo-loop` as a separate process (it owns its own emulated cluster and
environment) in a smaller configuration: 2 rounds, each gate on 100 held-out positions (200 in the demo). On fewer
collected positions (100) round 1's model is not better than the starting policy (+0.034, interval [-0.139, +0.208]):
the gate refuses it and there is no second round to follow. The table and plot helpers are tested on
their own with figures as the loop's status carries them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from dpo_operator.embedded.demo_loop import LoopDemoConfig, loop_spec, round_figures
from dpo_operator.embedded.loop_report import RoundFigures, table, write_plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

LOOP_STATUS = {"status": {"rounds": [
    {"round": 1, "pairs": 187, "finalLoss": 0.4123, "candidateMean": -0.712, "baselineMean": -1.032,
     "difference": {"mean": 0.32, "lower": 0.236, "upper": 0.408}, "verdict": "Passed", "promoted": True},
    {"round": 2, "pairs": 150, "finalLoss": 0.5, "candidateMean": -0.73, "baselineMean": -0.712,
     "difference": {"mean": -0.018, "lower": -0.06, "upper": 0.02}, "verdict": "Failed", "promoted": False},
    {"round": 3},  # not finished: no figures yet
]}}


def test_round_figures_and_table_come_from_the_lineage() -> None:
    rounds = round_figures(LOOP_STATUS)
    assert [r.round for r in rounds] == [1, 2, 3]
    assert rounds[0] == RoundFigures(1, 187, 0.4123, -0.712, -1.032, 0.32, 0.236, 0.408, "Passed", True)
    assert rounds[2].promoted is False and rounds[2].pairs is None
    lines = table(rounds)
    assert lines[0].split()[:3] == ["round", "pairs", "final"]
    assert lines[1].split() == ["1", "187", "0.4123", "-0.712", "-1.032", "+0.320", "[+0.236,", "+0.408]", "Passed",
                                "yes"]
    assert lines[2].split()[-2:] == ["Failed", "no"]
    assert lines[3].split() == ["3", "-", "-", "-", "-", "-", "[-,", "-]", "-", "no"]


def test_plot_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = write_plot(round_figures(LOOP_STATUS), tmp_path / "out" / "score.png")
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_loop_spec_is_a_valid_dpoloop() -> None:
    from dpo_operator.api.loop import DPOLoopSpec

    spec = DPOLoopSpec.model_validate(loop_spec(LoopDemoConfig(rounds=2), 8001, 8002))
    assert spec.max_rounds == 2 and spec.stop.when_not_promoted
    assert spec.serving.template is not None and spec.serving.candidate is not None
    assert spec.serving.template.port != spec.serving.candidate.port


@pytest.mark.workload
@pytest.mark.e2e
@pytest.mark.timeout(1800)  # a guard against a hang, not a timing assertion: the machine may be loaded
def test_demo_loop_runs_two_rounds(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    workdir = tmp_path / "loop"
    run = subprocess.run([sys.executable, "-m", "dpo_operator", "demo-loop", "--workdir", str(workdir),
                          "--rounds", "2", "--held-out", "100", "--timeout", "1700"],
                         capture_output=True, text=True, timeout=1750)
    out = run.stdout
    # 0: round 1 was promoted (as `make demo`'s model, the same collection and training); 2: the gate refused
    # round 1 (the demo has no improvement to show); 1: the loop or a child failed
    assert run.returncode == 0, (out + run.stderr)[-4000:]
    # the per-round table: one row per round that ran, with every figure filled in
    header = out.index("round   pairs")
    rows = [line.split() for line in out[header:].splitlines()[1:3] if re.match(r"\d+\s", line)]
    assert rows and [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))
    for row in rows:
        assert int(row[1]) > 0 and float(row[2]) > 0  # pairs, final loss
        assert all(cell != "-" for cell in row)
        assert row[-1] == ("yes" if row[-2] == "Passed" else "no")
    promoted = [r[-1] == "yes" for r in rows]
    # the loop stops at the first refused round, else runs maxRounds
    assert len(rows) == (promoted.index(False) + 1 if False in promoted else 2)
    assert promoted[0]
    stop = "stopped: NotPromoted" if False in promoted else "stopped: MaxRounds"
    assert stop in out
    # the lineage: each round's children by name, sampled from the policy served at the time
    assert "round 1: sampled from tictactoe-base" in out
    if len(rows) == 2:
        assert "round 2: sampled from DPOTrainingJob tictactoe-r1-train" in out
    served = [f"DPOTrainingJob tictactoe-r{i + 1}-train" for i, p in enumerate(promoted) if p]
    assert f"ModelDeployment tictactoe-policy serves {served[-1] if served else 'tictactoe-base'}" in out
    assert re.search(r"dpoloop/tictactoe\s+\d\s+Succeeded", out)
    assert (workdir / "score-per-round.png").read_bytes().startswith(PNG_MAGIC)
