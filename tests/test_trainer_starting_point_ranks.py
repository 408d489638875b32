"""model.adapter and referenceModel on two gloo ranks (torchrun), DDP and FSDP2, against one process: the same
reference log-probs (those of the reference model) and the same trained adapter. Data and schedule as
test_trainer_fsdp (17 pairs, 4 optimizer steps); tolerances as there."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.workload
torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from tests.test_trainer_distributed import TORCHRUN, assert_same_weights, workspace  # noqa: E402, F401
from tests.test_trainer_fsdp import LORA, PROBE, ROOT, config, in_process, safetensors  # noqa: E402
from tests.tinymodel import build_tiny_model  # noqa: E402


def two_ranks(tmp: Path, name: str, **fields: Any) -> dict[str, Any]:
    """The probe under ``torchrun --nproc-per-node=2`` (gloo); rank 0's record."""
    run = subprocess.run([TORCHRUN, "--standalone", "--nproc-per-node=2", PROBE,
                          config(tmp, name, **fields).model_dump_json(), str(tmp / f"{name}-probe")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    return json.loads((tmp / f"{name}-probe/probe.json").read_text())  # type: ignore[no-any-return]


def saved_adapter(tmp: Path) -> Path:
    """A rank-4 LoRA adapter of the tiny model with weights that matter (the fields of LORA: rank 4, alpha 8)."""
    from transformers import AutoModelForCausalLM

    model = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(tmp / "tiny"),
                                peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(5)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    model.save_pretrained(tmp / "round0")
    return tmp / "round0"


@pytest.mark.timeout(600)
def test_a_continued_adapter_against_a_reference_model_trains_alike_on_ddp_and_fsdp_ranks(workspace: Path) -> None:
    tmp = workspace
    other = build_tiny_model(tmp / "other", seed=9)
    fields = {**LORA, "adapter": str(saved_adapter(tmp)), "reference": str(other)}
    single = in_process(tmp, "single", **fields)
    ddp = two_ranks(tmp, "ddp", strategy="ddp", **fields)
    fsdp = two_ranks(tmp, "fsdp", strategy="fsdp", **fields)
    assert (ddp["world_size"], ddp["strategy"], fsdp["world_size"], fsdp["strategy"]) == (2, "ddp", 2, "fsdp")
    for run in (single, ddp, fsdp):
        assert run["summary"]["referenceLoads"] == 1 and run["summary"]["steps"] == 4
    reference = torch.load(tmp / "single/checkpoints/reference.pt", weights_only=True)
    for name in ("ddp", "fsdp"):
        torch.testing.assert_close(torch.load(tmp / f"{name}/checkpoints/reference.pt", weights_only=True), reference,
                                   rtol=1e-5, atol=1e-5)
    # the reference is the other model's (with the adapter's own policy it would be ln 2 at the first step)
    first = json.loads((tmp / "single/metrics.jsonl").read_text().splitlines()[0])
    assert abs(first["rewards/margins"]) > 1e-3
    # the same continued adapter, moved from where it started; the reference model is gone after its pass
    one = safetensors(tmp / "single/final/adapter_model.safetensors")
    start = safetensors(tmp / "round0/adapter_model.safetensors")
    assert max(float((one[k] - start[k]).abs().max()) for k in one) > 1e-3
    for name in ("ddp", "fsdp"):
        assert_same_weights(one, safetensors(tmp / f"{name}/final/adapter_model.safetensors"))
    assert fsdp["live"]["causal_lms"] == 1 and ddp["live"]["causal_lms"] == 1
