"""Weights & Biases logging from the trainer, through the real wandb client in offline mode (no network): the run
takes its id and name from the environment the operator sets, logs every step, and never writes the API key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("wandb")

from dpo_operator.train.trainer import TrainConfig, train  # noqa: E402
from tests.tinymodel import build_tiny_model  # noqa: E402

pytestmark = pytest.mark.workload
API_KEY = "wandb-local-" + "k" * 28  # never to be found in what the run writes


def test_metrics_reach_a_wandb_run_named_by_the_operator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"WANDB_API_KEY": API_KEY, "WANDB_MODE": "offline", "WANDB_PROJECT": "dpo",
                        "WANDB_NAME": "tictactoe-dpo", "WANDB_RUN_ID": "uid-1234", "WANDB_SILENT": "true",
                        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"), "WANDB_CACHE_DIR": str(tmp_path / "cache")
                        }.items():
        monkeypatch.setenv(name, value)
    data = tmp_path / "data/training/training_file.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen_response": "yes", "rejected_response": "no"}) + "\n"
                            for i in range(8)))
    config = TrainConfig(model=str(build_tiny_model(tmp_path / "model")), dataset_dir=str(tmp_path / "data"),
                         output_dir=str(tmp_path / "out"), finetuning_type="all_weights", batch_size=4, epochs=2,
                         learning_rate=1e-3)
    summary = train(config)
    runs = list((tmp_path / "out/wandb").glob("offline-run-*-uid-1234"))
    assert len(runs) == 1, list((tmp_path / "out/wandb").iterdir())
    logged = json.loads((runs[0] / "files/wandb-summary.json").read_text())
    assert logged["_step"] == summary["steps"] == 4
    assert logged["loss"] == pytest.approx(summary["train"]["loss"])
    assert {"rewards/accuracies", "rewards/margins", "learning_rate", "grad_norm"} <= logged.keys()
    run_config = (runs[0] / "files/config.yaml").read_text()
    assert "learning_rate" in run_config and "batch_size" in run_config
    for written in [*(tmp_path / "out").rglob("*"), *(tmp_path / "wandb-config").rglob("*")]:
        if written.is_file():
            assert API_KEY.encode() not in written.read_bytes(), written
