"""A 256k vocabulary and 2k-token sequences: peak memory and tokens/s of our trainer vs TRL 1.16's DPOTrainer, whose
LM head computes log-probs in chunks (its fused head: [4096 tokens, 32768 vocab] tiles, recomputed in backward).

Model: random-init Llama of tiny depth (2 layers, hidden 64, 4 heads) with a 262,144-token vocabulary (Gemma 3's;
Llama 3 has 128,256) and an untied LM head, fp32, so the LM head and its logits dominate time and memory; the
char-level tokenizer reaches only its first ids, the head computes all 262,144 logits a token all the same.
Pairs: prompts of 1,400-1,536 tokens, responses of 400-512 (sequences of about 2k tokens; max length 2,048);
batch 2 pairs; 4 steps (the loop rate leaves out the first); AdamW 1e-4, clip 1.0, beta 0.1. TRL is configured
as in bench_trainer.py (bf16 and gradient checkpointing off on a CPU without bf16 matrix kernels, padding to the
longest, the same threads), once as it runs by default (a reference model copy evaluated every step) and once
with ``precompute_ref_log_probs=True``. Ours runs as it runs by default (one sequence a pair sharing the prompt;
log-probs in chunks of 256 tokens x 262,144 logits) and with two sequences a pair. Each run is a process of its
own: peak RSS is the run's own (model, optimizer state, activations, logits). Needs the [workload] extra and
`pip install trl==1.16.0`. Run: `make bench-trainer-vocab` (several minutes on 2 cores).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dpo_bench import Setup, child, report, run, tokens_per_pair  # noqa: E402

VOCAB = 262_144
SETUP = Setup(pairs=8, validation=2, prompt=(1400, 1536), response=(400, 511), batch=2, steps=4, learning_rate=1e-4,
              precision="fp32", max_length=2048, skip=1)
RUNS = [("ours", "ours", {}), ("ours", "ours 2-seq", {"shared_prompt": False}), ("trl", "TRL", {}),
        ("trl", "TRL precompute", {"precompute_ref_log_probs": True})]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    import torch

    from dpo_bench import make_data
    from tests.tinymodel import build_tiny_model

    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; Llama 2 layers, hidden 64, "
          f"vocab {VOCAB}; {SETUP}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        build_tiny_model(workdir / "model", hidden=64, layers=2, vocab_size=VOCAB, heads=4)
        make_data(workdir / "data", SETUP)
        per_pair = tokens_per_pair(workdir)
        results = {}
        for runner, label, options in RUNS:
            results[label] = run(__file__, runner, workdir, SETUP, options, label.replace(" ", "-"))
            print(f"{label} done", flush=True)
    report(results, SETUP, per_pair, tail="loss, last", accuracy=False)


if __name__ == "__main__":
    main()
