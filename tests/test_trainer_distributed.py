"""The trainer under torchrun (gloo on CPU): two ranks train the weights one process trains, with DDP and with
FSDP2, on a dataset that does not divide evenly (17 pairs, batch 8, gradient accumulation 2: the last step has one
pair, so one rank runs a weight-0 filler); a checkpoint saved by two FSDP ranks resumes in one process; a trainer
SIGKILLed after a checkpoint resumes and ends with the weights of an uninterrupted run. A GPU variant runs where
CUDA is present."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.workload
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.tinymodel import build_tiny_model  # noqa: E402

SPEC = {"dataset": {"location": {"pvc": {"claimName": "d"}}}, "model": {"name": "tiny"},
        "hyperparameters": {"finetuningType": "all_weights", "epochs": 2, "batchSize": 8, "learningRate": 0.001,
                            "weightDecay": 0.01, "lrScheduler": "linear", "warmupSteps": 1},
        "local": {"gpusPerNode": 0, "precision": "fp32", "gradientAccumulationSteps": 2, "output": {"claimName": "d"}}}
TORCHRUN = str(Path(sys.executable).parent / "torchrun")


def write_pairs(path: Path, train: int = 17, validation: int = 5) -> Path:
    rows = [{"prompt": f"Q{i % 5}: is {i} fine?", "chosen_response": "yes" + " fine" * (i % 3),
             "rejected_response": "no!" * (1 + i % 4)} for i in range(train + validation)]
    for name, part in (("training/training_file.jsonl", rows[:train]), ("validation/validation_file.jsonl", rows[train:])):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    return path


def with_local(**local: object) -> dict:
    return {**SPEC, "local": {**SPEC["local"], **local}}


def train_cli(launcher: list[str], tmp_path: Path, name: str, spec: dict, expect_ok: bool = True) -> Path:
    spec_file = tmp_path / f"{name}.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    out = tmp_path / name
    run = subprocess.run([*launcher, "train", "--spec", str(spec_file), "--model", str(tmp_path / "tiny"),
                          "--dataset-dir", str(tmp_path / "data"), "--output-dir", str(out),
                          "--result-file", str(tmp_path / f"{name}.result")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if expect_ok:
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    else:
        assert run.returncode != 0
    return out


def python(*extra: str) -> list[str]:
    return [sys.executable, *extra] if extra else [sys.executable, "-m", "dpo_operator"]


def torchrun(ranks: int) -> list[str]:
    return [TORCHRUN, "--standalone", f"--nproc-per-node={ranks}", "-m", "dpo_operator"]


def weights(path: Path) -> dict[str, "torch.Tensor"]:
    from safetensors.torch import load_file

    return load_file(str(path / "final/model.safetensors"))


def assert_same_weights(one: dict, two: dict, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=rtol, atol=atol, msg=key)


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    if not Path(TORCHRUN).exists() and shutil.which("torchrun") is None:
        pytest.skip("torchrun is not installed")
    build_tiny_model(tmp_path / "tiny")
    write_pairs(tmp_path / "data")
    return tmp_path


def test_ddp_and_fsdp_ranks_train_what_one_process_trains_and_fsdp_checkpoints_reshard(workspace: Path) -> None:
    tmp = workspace
    single = train_cli(python(), tmp, "single", SPEC)
    ddp = train_cli(torchrun(2), tmp, "ddp", SPEC)
    fsdp = train_cli(torchrun(2), tmp, "fsdp", with_local(strategy="fsdp", saveEverySteps=2))
    reference = weights(single)
    # tolerance: the same float32 arithmetic summed in another order by the all-reduce / reduce-scatter
    assert_same_weights(reference, weights(ddp))
    assert_same_weights(reference, weights(fsdp))
    for out in (single, ddp, fsdp):
        summary = json.loads((out / "summary.json").read_text())
        assert summary["steps"] == 4  # 3 global batches -> 2 steps an epoch, on every rank
        assert len((out / "metrics.jsonl").read_text().splitlines()) == 4  # written by rank 0 only
    fsdp_summary = json.loads((fsdp / "summary.json").read_text())
    assert fsdp_summary["strategy"] == "fsdp"
    # sharded: rank 1 built the model without weights and received its shards (and buffers) from rank 0
    assert fsdp_summary["weightsLoadedBy"] == "rank 0"
    assert json.loads((ddp / "summary.json").read_text())["weightsLoadedBy"] == "every rank"
    single_val = json.loads((single / "summary.json").read_text())["validation"]
    for out in (ddp, fsdp):  # validation is scored sharded and summed across ranks
        val = json.loads((out / "summary.json").read_text())["validation"]
        assert val["val/loss"] == pytest.approx(single_val["val/loss"], rel=1e-4)

    # the 2-rank FSDP checkpoint at step 2 resumes in one process (DCP reshards) and ends where the others did
    resumed = tmp / "resumed"
    shutil.copytree(fsdp / "checkpoints", resumed / "checkpoints")
    shutil.rmtree(resumed / "checkpoints/step-4", ignore_errors=True)
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == ["reference.pt", "step-2"]
    train_cli(python(), tmp, "resumed", SPEC)
    assert json.loads((tmp / "resumed.result").read_text())["resumedFromStep"] == 2
    assert_same_weights(reference, weights(resumed))


def test_a_killed_trainer_resumes_from_its_newest_complete_checkpoint(workspace: Path) -> None:
    tmp = workspace
    spec = {**with_local(saveEverySteps=1), "hyperparameters": {
        **SPEC["hyperparameters"], "finetuningType": "lora", "learningRate": 0.01, "lora": {"rank": 4, "dropout": 0.1}}}
    whole = train_cli(python(), tmp, "whole", spec)
    harness = str(Path(__file__).parent / "kill_after_checkpoint.py")
    killed = train_cli(python(harness, "3"), tmp, "killed", spec, expect_ok=False)
    checkpoints = killed / "checkpoints"
    assert (checkpoints / "step-3/state.pt").exists() and not (killed / "final").exists()
    (checkpoints / "tmp-step-4").mkdir()  # a save that never finished: never picked up
    (checkpoints / "step-9").mkdir()  # a directory without its state file: never picked up
    train_cli(python(), tmp, "killed", spec)
    result = json.loads((tmp / "killed.result").read_text())
    assert result["resumedFromStep"] == 3 and result["steps"] == 4
    from safetensors.torch import load_file

    one = load_file(str(whole / "final/adapter_model.safetensors"))
    two = load_file(str(killed / "final/adapter_model.safetensors"))
    assert_same_weights(one, two, rtol=1e-5, atol=1e-6)  # dropout RNG, optimizer, schedule and data position restored
    metrics = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]


@pytest.mark.gpu
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_bf16_training_on_a_gpu(workspace: Path, compiled: bool) -> None:
    """Batches prepared in a background thread and pinned, metrics read a step late, and (compiled) Triton kernels."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    spec = {**SPEC, "hyperparameters": {**SPEC["hyperparameters"], "epochs": 4},
            "local": {**SPEC["local"], "gpusPerNode": 1, "precision": "bf16", "compile": compiled}}
    out = train_cli(python(), workspace, "gpu", spec)
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == list(range(1, 9))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["validation"]["val/rewards/accuracies"] >= 0.75
    assert (out / "final/model.safetensors").exists()
