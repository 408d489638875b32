"""Weights & Biases logging from the trainer, through the real wandb client in offline mode (no network): the run
takes its id and name from the environment the operator sets, logs every step, and never writes the API key.

The run is read as a person reads it: the run object the client hands back (``wandb.init``'s ``Run``: id, name,
project, config) and the footer the client prints when the run finishes (one sparkline point per logged step, then
the final values). wandb's offline transaction log is an internal format that changes between releases (0.31 dropped
its Python reader), so it is not read here."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
wandb = pytest.importorskip("wandb")

from dpo_operator.train.trainer import train  # noqa: E402
from tests.tinymodel import build_tiny_model  # noqa: E402
from tests.trainconfig import flat_config  # noqa: E402

pytestmark = pytest.mark.workload

API_KEY = "wandb-local-" + "k" * 28  # never to be found in what the run writes or prints


def footer_section(output: str, title: str) -> dict[str, str]:
    """One section of the footer wandb prints at ``finish()`` (``wandb: Run history:`` / ``wandb: Run summary:``):
    ``wandb: <key> <value>`` lines up to the next blank ``wandb:`` line, as {key: value}."""
    lines = output.splitlines()
    start = lines.index(f"wandb: {title}:")  # ValueError (a clear failure) when the client printed no such section
    section: dict[str, str] = {}
    for line in lines[start + 1:]:
        fields = line.removeprefix("wandb:").split()
        if not line.startswith("wandb:") or not fields:
            break
        if not re.fullmatch(r"\+\d+", fields[0]):  # "+N ..." counts the keys left out
            section[fields[0]] = " ".join(fields[1:])
    return section


def test_metrics_reach_a_wandb_run_named_by_the_operator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    for name, value in {"WANDB_API_KEY": API_KEY, "WANDB_MODE": "offline", "WANDB_PROJECT": "dpo",
                        "WANDB_NAME": "tictactoe-dpo", "WANDB_RUN_ID": "uid-1234",
                        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"), "WANDB_CACHE_DIR": str(tmp_path / "cache")
                        }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WANDB_SILENT", raising=False)  # the footer is what a person reads
    runs: list[Any] = []
    init = wandb.init
    monkeypatch.setattr(wandb, "init", lambda *args, **kwargs: runs.append(init(*args, **kwargs)) or runs[-1])
    data = tmp_path / "data/training/training_file.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen_response": "yes", "rejected_response": "no"}) + "\n"
                            for i in range(8)))
    config = flat_config(model=str(build_tiny_model(tmp_path / "model")), dataset_dir=str(tmp_path / "data"),
                         output_dir=str(tmp_path / "out"), finetuning_type="all_weights", batch_size=4, epochs=2,
                         learning_rate=1e-3)
    summary = train(config)
    printed = capfd.readouterr()
    output = printed.out + printed.err

    assert len(runs) == 1
    run = runs[0]
    assert (run.id, run.name, run.project) == ("uid-1234", "tictactoe-dpo", "dpo")
    assert run.config["batch_size"] == 4 and run.config["learning_rate"] == 1e-3
    assert len(list((tmp_path / "out/wandb").glob("offline-run-*-uid-1234"))) == 1  # the run's directory, by its id

    history = footer_section(output, "Run history")
    assert {"loss", "rewards/accuracies", "rewards/margins", "learning_rate", "grad_norm"} <= history.keys()
    assert summary["steps"] == 4 and all(len(sparkline) == 4 for sparkline in history.values())  # a point a step
    final = footer_section(output, "Run summary")
    assert float(final["loss"]) == pytest.approx(summary["train"]["loss"], rel=1e-4)  # printed to 5 figures
    assert float(final["rewards/accuracies"]) == summary["train"]["rewards/accuracies"]

    assert API_KEY not in output
    for written in [*(tmp_path / "out").rglob("*"), *(tmp_path / "wandb-config").rglob("*")]:
        if written.is_file():
            assert API_KEY.encode() not in written.read_bytes(), written
