"""Weights & Biases logging from the trainer, through the real wandb client in offline mode (no network): the run
takes its id and name from the environment the operator sets, logs every step, and never writes the API key."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("wandb")

from dpo_operator.train.trainer import train  # noqa: E402
from tests.tinymodel import build_tiny_model  # noqa: E402
from tests.trainconfig import flat_config  # noqa: E402

pytestmark = pytest.mark.workload


def offline_records(path: Path) -> list:
    """The protobuf records of a wandb offline run file (the client's transaction log: a 7-byte header, then
    LevelDB-style log records in 32 KiB blocks), as ``wandb sync`` reads them."""
    from wandb.proto import wandb_internal_pb2

    raw, position, parts, records = path.read_bytes(), 7, [], []
    assert raw[:4] == b":W&B"
    while position + 7 <= len(raw):
        left = BLOCK - position % BLOCK
        if left < 7:  # a block's tail too short for a record header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[position: position + 7])
        if length == 0 and kind == 0:
            break
        parts.append(raw[position + 7: position + 7 + length])
        position += 7 + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            records.append(record)
            parts = []
    return records
API_KEY = "wandb-local-" + "k" * 28  # never to be found in what the run writes
BLOCK, FULL, LAST = 32768, 1, 4


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
    config = flat_config(model=str(build_tiny_model(tmp_path / "model")), dataset_dir=str(tmp_path / "data"),
                         output_dir=str(tmp_path / "out"), finetuning_type="all_weights", batch_size=4, epochs=2,
                         learning_rate=1e-3)
    summary = train(config)
    runs = list((tmp_path / "out/wandb").glob("offline-run-*-uid-1234"))
    assert len(runs) == 1, list((tmp_path / "out/wandb").iterdir())
    records = offline_records(runs[0] / "run-uid-1234.wandb")
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert (run.run_id, run.display_name, run.project) == ("uid-1234", "tictactoe-dpo", "dpo")
    configured = {item.key: item.value_json for item in run.config.update}
    assert json.loads(configured["batch_size"]) == 4 and json.loads(configured["learning_rate"]) == 1e-3
    history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    assert [h["_step"] for h in history] == [1, 2, 3, 4] and summary["steps"] == 4
    assert history[-1]["loss"] == pytest.approx(summary["train"]["loss"])
    assert {"rewards/accuracies", "rewards/margins", "learning_rate", "grad_norm"} <= history[-1].keys()
    for written in [*(tmp_path / "out").rglob("*"), *(tmp_path / "wandb-config").rglob("*")]:
        if written.is_file():
            assert API_KEY.encode() not in written.read_bytes(), written
