"""Our DPO trainer vs TRL's DPOTrainer on CPU: tokens/s and peak RSS on the same model and data.

Model: random-init Llama (hidden 384, 6 layers, vocab 8192, fp32); 256 synthetic pairs (prompt 64 tokens,
responses 32-64); batch 8 pairs; AdamW 1e-4; clip 1.0; beta 0.1; 32 steps for ours, 8 for TRL (about 30 s a
step here with its defaults, so 32 would take a quarter of an hour; rates are per token either way). Each
trainer runs in its own process so peak RSS is its own. Needs the [workload] extra and `pip install trl==1.16.0`.
Run: `make bench-trainer` (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STEPS = {"ours": 32, "trl": 8}
BATCH, PAIRS, LR, BETA = 8, 256, 1e-4, 0.1


def make_data(directory: Path, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz "
    text = lambda n: "".join(rng.choice(letters) for _ in range(n))  # noqa: E731
    rows = [{"prompt": text(64), "chosen_response": text(rng.randint(31, 63)), "rejected_response": text(rng.randint(31, 63))}
            for _ in range(PAIRS)]
    (directory / "training").mkdir(parents=True, exist_ok=True)
    (directory / "training/training_file.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def tokens_seen(rows: list[dict[str, str]], steps: int) -> float:
    """Tokens (prompt+chosen and prompt+rejected, +EOS each) per pair, on average, times pairs processed."""
    per_pair = sum(2 * len(r["prompt"]) + len(r["chosen_response"]) + len(r["rejected_response"]) + 2 for r in rows) / len(rows)
    return per_pair * steps * BATCH


def run_ours(model: Path, data: Path, out: Path) -> dict[str, float]:
    from dpo_operator.train.trainer import TrainConfig, train

    config = TrainConfig(model=str(model), dataset_dir=str(data), output_dir=str(out), finetuning_type="all_weights",
                         batch_size=BATCH, learning_rate=LR, beta=BETA, max_steps=STEPS["ours"], epochs=100, max_seq_length=256)
    summary = train(config)
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    return {"loop_seconds": summary["trainSeconds"], "total_seconds": summary["trainSeconds"] + summary["referenceSeconds"],
            "first_loss": first["loss"]}


def run_trl(model: Path, data: Path, out: Path) -> dict[str, float]:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    rows = [json.loads(line) for line in (data / "training/training_file.jsonl").read_text().splitlines()]
    dataset = datasets.Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen_response"],
                                           "rejected": r["rejected_response"]} for r in rows])
    tokenizer = AutoTokenizer.from_pretrained(model)
    policy = AutoModelForCausalLM.from_pretrained(model)
    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=BATCH, max_steps=STEPS["trl"], learning_rate=LR, beta=BETA,
                     max_grad_norm=1.0, logging_steps=1, report_to=[], save_strategy="no", use_cpu=True,
                     dataloader_num_workers=0, max_length=256, lr_scheduler_type="constant")
    trainer = DPOTrainer(model=policy, args=args, train_dataset=dataset, processing_class=tokenizer)
    start = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - start
    first = next(h["loss"] for h in trainer.state.log_history if "loss" in h)
    return {"loop_seconds": elapsed, "total_seconds": elapsed, "first_loss": first}


def child(which: str, workdir: Path) -> None:
    runner = run_ours if which == "ours" else run_trl
    result = runner(workdir / "model", workdir / "data", workdir / f"out-{which}")
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", choices=["ours", "trl"])
    parser.add_argument("--workdir")
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.workdir))
        return
    from tests.tinymodel import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        build_tiny_model(workdir / "model", hidden=384, layers=6, vocab_size=8192, heads=6)
        rows = make_data(workdir / "data")
        results = {}
        for which in ("ours", "trl"):
            proc = subprocess.run([sys.executable, __file__, "--child", which, "--workdir", str(workdir)],
                                  capture_output=True, text=True)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                print(f"{which} failed:\n{proc.stderr[-3000:]}")
                return
            results[which] = json.loads(line[7:])
    print(f"{'':<6}{'loop tok/s':>12}{'incl. ref tok/s':>17}{'peak RSS MiB':>14}{'first loss':>12}")
    rates = {}
    for which, r in results.items():
        tokens = tokens_seen(rows, STEPS[which])
        rates[which] = (tokens / r["loop_seconds"], tokens / r["total_seconds"])
        print(f"{which:<6}{rates[which][0]:>12.0f}{rates[which][1]:>17.0f}{r['peak_rss_mib']:>14.0f}{r['first_loss']:>12.5f}")
    ours, trl = results["ours"], results["trl"]
    print(f"speed-up (loop): {rates['ours'][0] / rates['trl'][0]:.2f}x; including our reference pass: "
          f"{rates['ours'][1] / rates['trl'][1]:.2f}x; peak RSS ratio (ours/TRL): "
          f"{ours['peak_rss_mib'] / trl['peak_rss_mib']:.2f}; first-batch loss equal: "
          f"{abs(ours['first_loss'] - trl['first_loss']) < 1e-4}")


if __name__ == "__main__":
    main()
