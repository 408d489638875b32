"""The workload image's NAT environment: a collection that runs a NAT workflow re-executes its command line with
``$DPO_NAT_PYTHON`` (the image's /opt/nat/bin/python); one that does not stays where it is."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dpo_operator import natenv
from tests.test_nat_workflow import PLUGIN, RECORDED


def interpreter_that_records(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in for the NAT environment's interpreter (its own prefix): it records its arguments, then runs
    this test's Python with them."""
    record = tmp_path / "handed-over.json"
    python = tmp_path / "natenv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                      f"open({str(record)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
                      f"os.execv({sys.executable!r}, [{sys.executable!r}, *sys.argv[1:]])\n")
    python.chmod(0o755)
    return python, record


def collect(tmp_path: Path, spec: dict, python: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, natenv.NAT_PYTHON_ENV: str(python), "DPO_DATA_ROOT": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(PLUGIN), str(Path(natenv.__file__).parent.parent)])}
    env.pop(natenv.HANDED_OVER_ENV, None)
    return subprocess.run([sys.executable, "-m", "dpo_operator", "collect", "--spec", str(tmp_path / "spec.yaml"),
                           "--result-file", str(tmp_path / "result.json")],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_a_nat_workflow_collection_runs_in_the_nat_environment(tmp_path: Path) -> None:
    pytest.importorskip("nat.plugins.eval.runtime.evaluate", reason="needs the [nat] extra")
    python, record = interpreter_that_records(tmp_path)
    config = tmp_path / "conf" / "config.yml"
    config.parent.mkdir()
    shutil.copy(PLUGIN / "config.yml", config)
    shutil.copy(PLUGIN / "data.json", config.parent / "data.json")
    spec = {"workflow": {"nat": {"configFile": str(config)}}, "output": {"pvc": {"claimName": "d", "path": "/ds"}}}
    proc = collect(tmp_path, spec, python)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(record.read_text()) == ["-m", "dpo_operator", "collect", "--spec", str(tmp_path / "spec.yaml"),
                                              "--result-file", str(tmp_path / "result.json")]
    assert "running in the NAT environment" in proc.stderr
    assert json.loads((tmp_path / "result.json").read_text())["candidates"] == 40  # the run happened there
    assert (tmp_path / "ds" / "final_metrics.json").is_file()


def test_a_collection_that_runs_no_nat_stays_in_its_environment(tmp_path: Path) -> None:
    python, record = interpreter_that_records(tmp_path)
    (tmp_path / "out").mkdir()
    shutil.copy(RECORDED, tmp_path / "out" / "workflow_output.json")  # recorded NAT output: nothing runs NAT
    spec = {"workflow": {"nat": {"workflowOutput": {"claimName": "d", "path": "/out"}}},
            "output": {"pvc": {"claimName": "d", "path": "/ds"}}}
    proc = collect(tmp_path, spec, python)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not record.exists() and (tmp_path / "ds" / "metrics.json").is_file()


def test_no_second_hand_over_and_none_into_itself(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    python, _ = interpreter_that_records(tmp_path)
    monkeypatch.setenv(natenv.NAT_PYTHON_ENV, str(python))
    monkeypatch.delenv(natenv.HANDED_OVER_ENV, raising=False)
    assert natenv.nat_python() == str(python)
    monkeypatch.setenv(natenv.HANDED_OVER_ENV, "1")
    assert natenv.nat_python() is None  # the NAT environment's own process
    monkeypatch.delenv(natenv.HANDED_OVER_ENV)
    monkeypatch.setenv(natenv.NAT_PYTHON_ENV, str(Path(sys.prefix) / "bin" / "python"))
    assert natenv.nat_python() is None  # this environment is the NAT one
    monkeypatch.setenv(natenv.NAT_PYTHON_ENV, str(tmp_path / "missing" / "bin" / "python"))
    assert natenv.nat_python() is None  # no such interpreter: NAT runs here, or its absence is reported here
    monkeypatch.delenv(natenv.NAT_PYTHON_ENV)
    assert natenv.nat_python() is None


def test_a_nat_workflow_evaluation_hands_over_too(tmp_path: Path) -> None:
    python, record = interpreter_that_records(tmp_path)
    spec = {"workflow": {"nat": {"configFile": str(tmp_path / "missing.yml")}},
            "candidate": {"baseUrl": "http://127.0.0.1:9/v1", "model": "m"},
            "baseline": {"baseUrl": "http://127.0.0.1:9/v1", "model": "b"}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, natenv.NAT_PYTHON_ENV: str(python), "DPO_DATA_ROOT": str(tmp_path),
           "PYTHONPATH": str(Path(natenv.__file__).parent.parent)}
    env.pop(natenv.HANDED_OVER_ENV, None)
    proc = subprocess.run([sys.executable, "-m", "dpo_operator", "evaluate", "--spec", str(tmp_path / "spec.yaml"),
                           "--result-file", str(tmp_path / "result.json")],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert json.loads(record.read_text())[:3] == ["-m", "dpo_operator", "evaluate"]
    assert proc.returncode != 0 and "missing.yml" in (tmp_path / "result.json").read_text()  # failed over there
