"""Preemption-safe training (gloo on CPU): a trainer sent SIGTERM saves a complete checkpoint and exits, with no
periodic checkpoints configured, and a restart ends with the weights of an uninterrupted run; with two ranks only
one signalled, both stop after the same step; and one of two torchrun nodes (c10d rendezvous, as the operator
renders multi-node training) dying makes every rank restart from the newest checkpoint and complete."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dpo_operator.render.training import FRESH_STORE_PER_RESTART
from tests.test_trainer_distributed import (
    SPEC,
    TORCHRUN,
    assert_same_weights,
    python,
    torchrun,
    train_cli,
    weights,
    workspace,  # noqa: F401  (fixture)
)

pytestmark = pytest.mark.workload
torch = pytest.importorskip("torch")

HARNESS = str(Path(__file__).parent / "preempt_harness.py")
SIGTERM_EXIT = 143


def test_sigterm_saves_a_checkpoint_and_a_restart_ends_with_the_uninterrupted_weights(workspace: Path) -> None:  # noqa: F811
    tmp = workspace  # SPEC saves no periodic checkpoint: the one there is, SIGTERM made
    whole = train_cli(python(), tmp, "whole", SPEC)
    spec_file = tmp / "term.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    args = ["train", "--spec", str(spec_file), "--model", str(tmp / "tiny"), "--dataset-dir", str(tmp / "data"),
            "--output-dir", str(tmp / "term"), "--result-file", str(tmp / "term.result")]
    run = subprocess.run([sys.executable, HARNESS, "sigterm", "1", "0", *args], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == SIGTERM_EXIT, run.stderr[-3000:]
    checkpoints = tmp / "term/checkpoints"
    # signalled during step 1, the ranks agree one step later: step 2's checkpoint, complete; no final model
    assert sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("step-")) == ["step-2"]
    assert (checkpoints / "step-2/state.pt").is_file() and not (tmp / "term/final").exists()
    assert "stopped on SIGTERM after step 2" in run.stderr
    train_cli(python(), tmp, "term", SPEC)
    result = json.loads((tmp / "term.result").read_text())
    assert result["resumedFromStep"] == 2 and result["steps"] == 4
    assert_same_weights(weights(whole), weights(tmp / "term"), rtol=1e-5, atol=1e-6)


@pytest.mark.timeout(300)
def test_one_signalled_rank_stops_both_after_the_same_step(workspace: Path) -> None:  # noqa: F811
    tmp = workspace
    whole = train_cli(torchrun(2), tmp, "whole2", SPEC)
    spec_file = tmp / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    out = tmp / "partial"
    run = subprocess.run([TORCHRUN, "--standalone", "--nproc-per-node=2", HARNESS, "sigterm", "1", "1", "train",
                          "--spec", str(spec_file), "--model", str(tmp / "tiny"), "--dataset-dir", str(tmp / "data"),
                          "--output-dir", str(out), "--result-file", str(tmp / "partial.result")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode != 0  # both ranks exited 143 after saving (no restarts asked for)
    assert (out / "checkpoints/step-2/state.pt").is_file() and not (out / "final").exists()
    assert run.stderr.count("stopped on SIGTERM after step 2") == 2, run.stderr[-3000:]  # rank 0 too
    train_cli(torchrun(2), tmp, "partial", SPEC)
    assert json.loads((tmp / "partial.result").read_text())["resumedFromStep"] == 2
    assert_same_weights(weights(whole), weights(out))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(600)
def test_a_dead_rank_restarts_every_rank_from_the_newest_checkpoint(workspace: Path) -> None:  # noqa: F811
    tmp = workspace
    spec = {**SPEC, "local": {**SPEC["local"], "saveEverySteps": 1}}
    whole = train_cli(torchrun(2), tmp, "whole", spec)
    spec_file = tmp / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    out, port = tmp / "nodes", _free_port()
    nodes = []
    for node in range(2):  # two "pods", each a torchrun agent with one rank, as the operator renders numNodes: 2
        command = [TORCHRUN, "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d", "--max-restarts=3",
                   "--shutdown-timeout=20", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=run-1",
                   HARNESS, "sigkill", "2", "1", "train", "--spec", str(spec_file), "--model", str(tmp / "tiny"),
                   "--dataset-dir", str(tmp / "data"), "--output-dir", str(out),
                   "--result-file", str(tmp / f"nodes-{node}.result")]
        log = open(tmp / f"node-{node}.log", "w")  # noqa: SIM115  (closed below)
        env = {**os.environ, "OMP_NUM_THREADS": "1", FRESH_STORE_PER_RESTART: "1"}  # as the pods' env has it
        nodes.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    try:
        codes = [process.wait(timeout=300) for process, _ in nodes]  # a hang would end here, not at a deadline
    finally:
        for process, log in nodes:
            if process.poll() is None:
                process.kill()
            log.close()
    logs = "".join((tmp / f"node-{n}.log").read_text() for n in range(2))
    assert codes == [0, 0], logs[-4000:]
    results = [json.loads(p.read_text()) for p in tmp.glob("nodes-*.result") if p.read_text().strip()]
    assert [r["resumedFromStep"] for r in results] == [2] and results[0]["steps"] == 4  # rank 0 reports
    assert_same_weights(weights(whole), weights(out))
