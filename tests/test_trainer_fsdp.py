"""LoRA and activation checkpointing, in one process and under FSDP2 on two gloo ranks (torchrun), with the real
``Trainer`` run by ``tests/trainer_probe.py`` (which also counts module forwards and keeps the trained logits).

Data and schedule as test_trainer_distributed: 17 pairs, batch 8, gradient accumulation 2, 2 epochs (4 optimizer
steps, 6 micro-batches; the last batch of an epoch has one pair, so one rank runs a weight-0 filler).
Tolerances: two ranks vs one process sum the same float32 numbers in another order (all-reduce, reduce-scatter),
so weights agree to rtol 1e-4 / atol 1e-5 (as in test_trainer_distributed); activation checkpointing in one
process recomputes the very same operations, so it agrees to float32 rounding (rtol 1e-6 / atol 1e-7); bf16 runs
agree to 2e-3 absolute (see the test).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.workload
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from dpo_operator.train.trainer import TrainConfig  # noqa: E402
from tests.test_trainer_distributed import TORCHRUN, assert_same_weights, workspace  # noqa: E402, F401
from tests.trainconfig import flat_config  # noqa: E402
from tests.trainer_probe import PROBE_TEXTS, probe  # noqa: E402

PROBE = str(Path(__file__).parent / "trainer_probe.py")
ROOT = Path(__file__).resolve().parent.parent
MICRO_BATCHES = 6  # 3 global batches an epoch (8 + 8 + 1 pairs), 2 epochs
SCHEDULE: dict[str, Any] = {"epochs": 2, "batch_size": 8, "gradient_accumulation_steps": 2, "lr_scheduler": "linear",
                            "warmup_steps": 1, "precision": "fp32"}
ALL_WEIGHTS = {**SCHEDULE, "finetuning_type": "all_weights", "learning_rate": 1e-3, "weight_decay": 0.01}
LORA = {**SCHEDULE, "finetuning_type": "lora", "learning_rate": 1e-2, "lora_rank": 4, "lora_alpha": 8,
        "lora_dropout": 0.0,  # dropout draws differ per rank
        "save_every_steps": 2}  # also keeps the reference log-probs (checkpoints/reference.pt)


def config(tmp: Path, name: str, **fields: Any) -> TrainConfig:
    return flat_config(model=str(tmp / "tiny"), dataset_dir=str(tmp / "data"), output_dir=str(tmp / name), **fields)


def in_process(tmp: Path, name: str, **fields: Any) -> dict[str, Any]:
    return probe(config(tmp, name, **fields), tmp / f"{name}-probe")


def two_ranks(tmp: Path, name: str, **fields: Any) -> dict[str, Any]:
    """The probe under ``torchrun --nproc-per-node=2`` (gloo); rank 0's record."""
    run = subprocess.run([TORCHRUN, "--standalone", "--nproc-per-node=2", PROBE,
                          config(tmp, name, **fields).model_dump_json(), str(tmp / f"{name}-probe")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    result = json.loads((tmp / f"{name}-probe/probe.json").read_text())
    assert result["world_size"] == 2 and result["strategy"] == "fsdp"
    return result


def safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_lora_under_fsdp_trains_the_adapters_one_process_trains_and_saves_a_loadable_adapter(workspace: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = workspace
    single = in_process(tmp, "single", **LORA)
    fsdp = two_ranks(tmp, "fsdp", strategy="fsdp", **LORA)
    assert single["summary"]["steps"] == fsdp["summary"]["steps"] == 4

    # the same adapter weights, and they moved (so the comparison is not one of two untouched initialisations)
    one = safetensors(tmp / "single/final/adapter_model.safetensors")
    two = safetensors(tmp / "fsdp/final/adapter_model.safetensors")
    assert one and all(".lora_A." in key or ".lora_B." in key for key in one)
    assert max(float(t.abs().max()) for key, t in one.items() if ".lora_B." in key) > 1e-3  # B starts at zero
    assert_same_weights(one, two)

    # the reference pass ran through the one sharded model (its decoder layers, each rank holding half of every
    # layer), with the adapters switched off: no lora_A ran; there is no second copy of the model on a rank
    assert fsdp["live"]["causal_lms"] == 1 and fsdp["live"]["decoder_layers"] == fsdp["layers"] == 2
    assert fsdp["live"]["local_parameters"] < 0.6 * fsdp["live"]["parameters"]
    assert fsdp["forwards_per_layer"]["reference"] >= 1
    assert "reference" not in fsdp["lora_forwards"] and fsdp["lora_forwards"]["train"] > 0
    reference_one = torch.load(tmp / "single/checkpoints/reference.pt", weights_only=True)
    reference_two = torch.load(tmp / "fsdp/checkpoints/reference.pt", weights_only=True)
    assert reference_one.shape == (17, 2)
    torch.testing.assert_close(reference_two, reference_one, rtol=1e-5, atol=1e-5)

    # the saved output is a LoRA adapter; peft puts it on the base model and gives the trained model's logits
    final = tmp / "fsdp/final"
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA" and adapter["r"] == 4 and adapter["lora_alpha"] == 8
    assert not (final / "model.safetensors").exists()
    tokenizer = AutoTokenizer.from_pretrained(final)
    encoded = tokenizer(PROBE_TEXTS, return_tensors="pt", padding=True)
    base = AutoModelForCausalLM.from_pretrained(tmp / "tiny").eval()
    with torch.no_grad():
        base_logits = base(**encoded).logits
        loaded = PeftModel.from_pretrained(base, final).eval()
        logits = loaded(**encoded).logits
    trained = torch.load(tmp / "fsdp-probe/logits.pt", weights_only=True)
    torch.testing.assert_close(logits, trained, rtol=1e-5, atol=1e-5)
    assert float((trained - base_logits).abs().max()) > 1e-2  # the adapter changes the model


def test_bf16_lora_under_fsdp_trains(workspace: Path) -> None:
    """The production setting (bf16 compute, fp32 adapters on a bf16 base). FSDP2 fixes its gradient dtypes when
    it initialises; had that happened in the reference pass (adapters disabled, so not trainable), the bf16
    gradients would never be cast to the fp32 adapters and the first backward would fail."""
    tmp = workspace
    bf16 = {**LORA, "precision": "bf16"}
    single = in_process(tmp, "single-bf16", **bf16)
    fsdp = two_ranks(tmp, "fsdp-bf16", **{**bf16, "strategy": "fsdp"})
    assert single["summary"]["steps"] == fsdp["summary"]["steps"] == 4
    one = safetensors(tmp / "single-bf16/final/adapter_model.safetensors")
    two = safetensors(tmp / "fsdp-bf16/final/adapter_model.safetensors")
    assert {t.dtype for t in two.values()} == {torch.float32}
    assert max(float(t.abs().max()) for key, t in two.items() if ".lora_B." in key) > 1e-3
    # bf16 keeps 8 bits of mantissa and each rank rounds its own half-batch shapes; AdamW turns a near-zero
    # gradient's rounding into a whole step (up to the learning rate, 1e-2) for single elements, so elements agree
    # within 1e-2 and each kind of adapter matrix as a whole within 1% (measured: ~0.1%; the fp32 run is ~1e-2 away)
    assert_same_weights(one, two, rtol=0, atol=1e-2)
    for kind in (".lora_A.", ".lora_B."):
        keys = [key for key in one if kind in key]
        apart = sum(float((one[key] - two[key]).pow(2).sum()) for key in keys) ** 0.5
        assert apart <= 1e-2 * sum(float(one[key].pow(2).sum()) for key in keys) ** 0.5, kind
    assert losses(tmp / "fsdp-bf16") == pytest.approx(losses(tmp / "single-bf16"), rel=1e-3)


def assert_recomputed(result: dict[str, Any], checkpointed: bool) -> None:
    """Each decoder layer is called once per micro-batch; with activation checkpointing its body runs again in
    backward. Passes without gradients (reference, validation) never recompute."""
    calls, bodies = result["forwards_per_layer"], result["bodies_per_layer"]
    assert calls["train"] == MICRO_BATCHES
    assert bodies["train"] == (2 if checkpointed else 1) * MICRO_BATCHES
    for phase in ("reference", "evaluate"):
        assert bodies[phase] == calls[phase] >= 1


def test_activation_checkpointing_recomputes_every_layer_and_changes_no_number(workspace: Path) -> None:
    tmp = workspace
    plain = in_process(tmp, "plain", **ALL_WEIGHTS)
    checkpointed = in_process(tmp, "checkpointed", activation_checkpointing=True, **ALL_WEIGHTS)
    assert_recomputed(plain, checkpointed=False)
    assert_recomputed(checkpointed, checkpointed=True)
    assert losses(tmp / "checkpointed") == pytest.approx(losses(tmp / "plain"), rel=1e-6)
    assert len(losses(tmp / "plain")) == 4
    assert_same_weights(safetensors(tmp / "plain/final/model.safetensors"),
                        safetensors(tmp / "checkpointed/final/model.safetensors"), rtol=1e-6, atol=1e-7)


def test_activation_checkpointing_under_fsdp_on_two_ranks(workspace: Path) -> None:
    tmp = workspace
    plain = in_process(tmp, "plain", **ALL_WEIGHTS)
    fsdp = two_ranks(tmp, "fsdp-checkpointed", strategy="fsdp", activation_checkpointing=True, **ALL_WEIGHTS)
    assert_recomputed(plain, checkpointed=False)
    assert_recomputed(fsdp, checkpointed=True)  # rank 0's count; every rank runs the same micro-batches
    assert losses(tmp / "fsdp-checkpointed") == pytest.approx(losses(tmp / "plain"), rel=1e-4)
    assert_same_weights(safetensors(tmp / "plain/final/model.safetensors"),
                        safetensors(tmp / "fsdp-checkpointed/final/model.safetensors"))
