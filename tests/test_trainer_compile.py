"""``local.compile``: every decoder layer compiled with torch.compile trains what the uncompiled layers train.

On CPU, Inductor generates C++ (it needs a C++ compiler: skipped without one); on a GPU it generates Triton kernels,
which ``bench/bench_gpu.py`` runs. The data has pairs of several lengths, so batches have several shapes and a
compiled layer sees its inputs change shape (it recompiles for dynamic shapes), and scores both with gradients
(training) and without (the reference pass and validation: compiled apart).

Tolerance: fused kernels sum the same float32 numbers in another order: losses agree to 1e-5 relative, weights to
rtol 1e-4 / atol 1e-5 (as two ranks vs one process in test_trainer_distributed; measured ~1e-7).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.workload
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from tests.test_trainer_distributed import (SPEC, assert_same_weights, python, torchrun, train_cli, weights,  # noqa: E402
                                            with_local, workspace)  # noqa: F401

LORA = {"finetuningType": "lora", "learningRate": 0.01, "lora": {"rank": 4, "dropout": 0.0}}


@pytest.fixture(autouse=True)
def needs_a_compiler() -> None:
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("torch.compile on CPU needs a C++ compiler")


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_compiled_layers_train_what_eager_layers_train(workspace: Path, tmp_path: Path) -> None:
    from torch._dynamo.utils import counters

    from dpo_operator.train.trainer import TrainConfig, Trainer
    from tests.trainconfig import flat_config

    def config(name: str, compile: bool) -> TrainConfig:
        return flat_config(model=str(tmp_path / "tiny"), dataset_dir=str(tmp_path / "data"), output_dir=str(tmp_path / name),
                           finetuning_type="all_weights", epochs=2, batch_size=8, learning_rate=1e-3,
                           gradient_accumulation_steps=2, lr_scheduler="linear", warmup_steps=1, compile=compile)

    eager = Trainer(config("eager", False)).train()
    torch._dynamo.reset()
    counters.clear()
    trainer = Trainer(config("compiled", True))
    compiled = trainer.train()
    # the layers did run compiled: graphs were captured and nothing fell back to eager for good
    assert counters["stats"]["unique_graphs"] >= 2, dict(counters["stats"])
    assert not counters["frames"].get("skip") and not counters["graph_break"], dict(counters["graph_break"])
    assert compiled["sharedPrompt"] and compiled["steps"] == eager["steps"] == 4
    eager_metrics, compiled_metrics = metrics(tmp_path / "eager"), metrics(tmp_path / "compiled")
    for key in ("loss", "rewards/margins", "grad_norm"):
        assert [m[key] for m in compiled_metrics] == pytest.approx([m[key] for m in eager_metrics], rel=1e-5, abs=1e-7)
    assert compiled["validation"]["val/loss"] == pytest.approx(eager["validation"]["val/loss"], rel=1e-5)
    assert_same_weights(weights(tmp_path / "eager"), weights(tmp_path / "compiled"))


def test_compiled_lora_layers_with_checkpointing_under_fsdp_train_what_one_eager_process_trains(workspace: Path) -> None:
    """The spec field reaches the trainer (through the CLI), and compiled layers compose with what wraps them:
    FSDP2's hooks on each layer, activation checkpointing around its call, LoRA adapters inside it (switched off
    for the reference pass)."""
    tmp = workspace
    spec = {**with_local(activationCheckpointing=True), "hyperparameters": {**SPEC["hyperparameters"], **LORA}}
    eager = train_cli(python(), tmp, "eager", spec)
    compiled_spec = {**spec, "local": {**spec["local"], "strategy": "fsdp", "compile": True}}
    compiled = train_cli(torchrun(2), tmp, "compiled", compiled_spec)
    from safetensors.torch import load_file

    one = load_file(str(eager / "final/adapter_model.safetensors"))
    two = load_file(str(compiled / "final/adapter_model.safetensors"))
    assert max(float(t.abs().max()) for key, t in one.items() if ".lora_B." in key) > 1e-3  # trained, not initial
    assert_same_weights(one, two)
    summary = json.loads((compiled / "summary.json").read_text())
    assert summary["strategy"] == "fsdp" and summary["steps"] == 4
    assert [m["loss"] for m in metrics(compiled)] == pytest.approx([m["loss"] for m in metrics(eager)], rel=1e-4)
