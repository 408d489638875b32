"""The README's main command: the whole pipeline on the embedded cluster, with a real improvement to show, promoted
through the gate (a DPOEvaluation against the starting policy).

Runs `dpo-operator demo` as a separate process (it owns its own emulated cluster and environment)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.workload, pytest.mark.e2e, pytest.mark.timeout(600)]


def test_demo_pipeline_improves_the_policy(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    run = subprocess.run([sys.executable, "-m", "dpo_operator", "demo", "--workdir", str(tmp_path / "demo")],
                         capture_output=True, text=True, timeout=580)
    out = run.stdout
    assert run.returncode == 0, (out + run.stderr)[-4000:]  # 0 only when the trained policy plays better
    assert re.search(r"modeldeployment/tictactoe-dpo\s+Ready\s+1", out)  # kubectl-style columns: widths vary
    assert re.search(r"dpotrainingjob/tictactoe-dpo\s+local\s+Succeeded\s+100.0", out)
    assert (tmp_path / "demo/pvc/demo-data/models/tictactoe-dpo/final/model.safetensors").exists()
    # the comparison is the promotion gate's DPOEvaluation: the table comes from its status, the model was promoted
    assert re.search(r"dpoevaluation/tictactoe-dpo-gate\s+Succeeded\s+\S+\s+\S+\s+\S+\s+Passed", out)
    assert "verdict Passed" in out and "held-out positions" in out
    assert "modeldeployment/tictactoe-dpo-candidate" in out  # served as a candidate first
    before = next(line for line in out.splitlines() if line.startswith("before DPO"))
    after = next(line for line in out.splitlines() if line.startswith("after DPO"))
    value = lambda line: float(line.split("mean move value")[1].split()[0])  # noqa: E731
    assert value(after) > value(before)
