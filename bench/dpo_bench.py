"""What the trainer benchmarks share: synthetic preference data, one run of our trainer or of TRL's DPOTrainer in
its own process (so its peak memory is its own), and the figures of that run.

Both trainers get the same model files, data, precision, maximum length, batch size, steps, learning rate,
gradient clipping and beta; both pad to the longest sequence in a batch. A run reports the loop's tokens/s (from
the step after ``skip`` to the last, so start-up and first-step compilation stay out), end to end tokens/s (model
load to the last step, including reference log-probs), peak host RSS, peak GPU memory, the training loss over
the last quarter of steps and the DPO loss and reward accuracy on the same held-out pairs after training (each
against its own starting policy, so both measure the same thing; the data holds a learnable preference).
"""

from __future__ import annotations

import json
import random
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Setup:
    pairs: int
    validation: int
    prompt: tuple[int, int]  # characters (one token each with the char-level tokenizer)
    response: tuple[int, int]
    batch: int
    steps: int
    learning_rate: float
    precision: str  # fp32 | bf16
    max_length: int
    skip: int = 2  # steps left out of the loop rate (warm-up)
    beta: float = 0.1
    seed: int = 0


def make_data(directory: Path, setup: Setup) -> None:
    """Random prompts; chosen responses lean to the letters a-m (55 in 100), rejected ones to n-z: a preference a
    model can learn, so the held-out loss and accuracy after training say whether a trainer learnt it."""
    rng = random.Random(setup.seed)
    first, second = "abcdefghijklm ", "nopqrstuvwxyz "

    def text(bounds: tuple[int, int], leaning: str | None = None) -> str:
        def letter() -> str:
            if leaning is None:
                return rng.choice(first + second)
            return rng.choice(leaning if rng.random() < 0.55 else (second if leaning == first else first))

        return "".join(letter() for _ in range(rng.randint(*bounds)))

    rows = [{"prompt": text(setup.prompt), "chosen_response": text(setup.response, first),
             "rejected_response": text(setup.response, second)} for _ in range(setup.pairs + setup.validation)]
    for name, part in (("training/training_file.jsonl", rows[: setup.pairs]),
                       ("validation/validation_file.jsonl", rows[setup.pairs:])):
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text("".join(json.dumps(r) + "\n" for r in part))


def _read(directory: Path, name: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (directory / name).read_text().splitlines()]


def _peak_gpu_gib() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def run_ours(model: Path, data: Path, out: Path, setup: Setup, options: dict[str, Any]) -> dict[str, Any]:
    import transformers  # noqa: F401  (imported before the clock starts, as TRL's run imports it with trl)

    from dpo_operator.api.training import DPOParams, Hyperparameters, LocalBackend
    from dpo_operator.train.trainer import TrainConfig, Trainer

    started = time.perf_counter()
    hyperparameters = Hyperparameters(finetuning_type="all_weights", batch_size=setup.batch,
                                      learning_rate=setup.learning_rate, dpo=DPOParams(ref_policy_kl_penalty=setup.beta),
                                      epochs=1000, max_seq_length=setup.max_length, seed=setup.seed)
    config = TrainConfig(model=str(model), dataset_dir=str(data), output_dir=str(out), hyperparameters=hyperparameters,
                         local=LocalBackend(precision=setup.precision, **options), max_steps=setup.steps)
    trainer = Trainer(config)  # loads the model
    loaded = time.perf_counter() - started
    try:
        summary = trainer.train()
    finally:
        trainer.env.close()
    # model load + reference pass + loop (what TRL's figure covers; our final validation and save are left out)
    total = loaded + summary["referenceSeconds"] + summary["trainSeconds"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records[-max(1, setup.steps // 4):]]
    return {"step_seconds": [r["elapsed_seconds"] for r in records], "total_seconds": total,
            "train_loss_tail": sum(losses) / len(losses), "val_loss": summary["validation"]["val/loss"],
            "val_accuracy": summary["validation"]["val/rewards/accuracies"],
            "strategy": summary["strategy"], "shared_prompt": summary["sharedPrompt"]}


def run_trl(model: Path, data: Path, out: Path, setup: Setup, options: dict[str, Any]) -> dict[str, Any]:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    started = time.perf_counter()

    def as_dataset(name: str) -> Any:
        return datasets.Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen_response"],
                                            "rejected": r["rejected_response"]} for r in _read(data, name)])

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())

    tokenizer = AutoTokenizer.from_pretrained(model)
    policy = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)  # fp32 masters, as ours
    gpu = torch.cuda.is_available()
    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=setup.batch, per_device_eval_batch_size=setup.batch,
                     max_steps=setup.steps, learning_rate=setup.learning_rate, beta=setup.beta, max_grad_norm=1.0,
                     logging_steps=1, report_to=[], save_strategy="no", use_cpu=not gpu, seed=setup.seed,
                     dataloader_num_workers=0, max_length=setup.max_length, lr_scheduler_type="constant",
                     bf16=setup.precision == "bf16", fp16=False, gradient_checkpointing=False, **options)
    clock = StepClock()
    trainer = DPOTrainer(model=policy, args=args, train_dataset=as_dataset("training/training_file.jsonl"),
                         eval_dataset=as_dataset("validation/validation_file.jsonl"), processing_class=tokenizer,
                         callbacks=[clock])
    trainer.train()
    end = time.perf_counter()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h][-max(1, setup.steps // 4):]
    evaluation = trainer.evaluate()
    return {"step_seconds": [t - started for t in clock.times], "total_seconds": end - started,
            "train_loss_tail": sum(losses) / len(losses), "val_loss": evaluation["eval_loss"],
            "val_accuracy": evaluation["eval_rewards/accuracies"]}


RUNNERS = {"ours": run_ours, "trl": run_trl}


def child(argv: list[str]) -> None:
    """``--child RUNNER WORKDIR SETUP_JSON OPTIONS_JSON LABEL``: one run; prints ``RESULT {...}``."""
    runner, workdir, setup, options, label = argv[0], Path(argv[1]), Setup(**json.loads(argv[2])), json.loads(argv[3]), argv[4]
    result = RUNNERS[runner](workdir / "model", workdir / "data", workdir / f"out-{label}", setup, options)
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result["peak_gpu_gib"] = _peak_gpu_gib()
    print("RESULT " + json.dumps(result), flush=True)


def tokens_per_pair(workdir: Path) -> float:
    """Mean tokens a pair costs (prompt+chosen and prompt+rejected, one EOS each; one token a character)."""
    rows = _read(workdir / "data", "training/training_file.jsonl")
    return sum(2 * len(r["prompt"]) + len(r["chosen_response"]) + len(r["rejected_response"]) + 2 for r in rows) / len(rows)


def rates(result: dict[str, Any], setup: Setup, per_pair: float) -> tuple[float, float]:
    """(loop tokens/s after the warm-up steps, end-to-end tokens/s) with one token count for every trainer."""
    times = result["step_seconds"]
    loop = (len(times) - setup.skip) * setup.batch * per_pair / (times[-1] - times[setup.skip - 1])
    return loop, len(times) * setup.batch * per_pair / result["total_seconds"]


def run(script: str, runner: str, workdir: Path, setup: Setup, options: dict[str, Any], label: str,
        launcher: list[str] | None = None) -> dict[str, Any] | None:
    command = [*(launcher or [sys.executable]), script, "--child", runner, str(workdir), json.dumps(asdict(setup)),
               json.dumps(options), label]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        print(f"{label} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}", flush=True)
        return None
    return json.loads(line[7:])


def report(results: dict[str, dict[str, Any] | None], setup: Setup, per_pair: float, tail: str = "loss, last",
           accuracy: bool = True) -> None:
    """The table every trainer benchmark prints (a run that failed is left out), then ours against each other."""
    print(f"{'':<16}{'loop tok/s':>11}{'e2e tok/s':>11}{'peak RSS GiB':>14}{tail:>14}{'val loss':>10}"
          + (f"{'val acc':>9}" if accuracy else ""))
    figures = {}
    for label, result in results.items():
        if result is None:
            continue
        figures[label] = rates(result, setup, per_pair)
        print(f"{label:<16}{figures[label][0]:>11.0f}{figures[label][1]:>11.0f}{result['peak_rss_gib']:>14.2f}"
              f"{result['train_loss_tail']:>14.4f}{result['val_loss']:>10.4f}"
              + (f"{result['val_accuracy']:>9.3f}" if accuracy else ""))
    ours = results.get("ours")
    if "ours" in figures and ours is not None:
        for label in figures:
            other = results[label]
            if label != "ours" and other is not None:
                print(f"ours vs {label}: loop {figures['ours'][0] / figures[label][0]:.2f}x, "
                      f"end to end {figures['ours'][1] / figures[label][1]:.2f}x, peak RSS "
                      f"{ours['peak_rss_gib'] / other['peak_rss_gib']:.2f}x")
