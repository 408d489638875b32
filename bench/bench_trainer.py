"""Our DPO trainer vs TRL's DPOTrainer on CPU, configured alike: tokens/s, peak RSS, and what both learn.

Model: random-init Llama (hidden 384, 6 layers, vocab 8192) in fp32 (no bf16 on a CPU without bf16 matrix
kernels: it is several times slower there, for TRL and for us); 256 synthetic pairs (prompt 64 tokens, responses
32-64, a learnable preference: see dpo_bench.make_data) and 32 held-out pairs; batch 8; 32 steps (one epoch:
every pair once); AdamW 1e-4, constant; clip 1.0; beta 0.1; max length 256; padding to the longest in a batch;
the same threads. TRL 1.16 runs twice: as its users run it by default on CPU once bf16 and gradient
checkpointing are off (a reference model copy evaluated every step), and with ``precompute_ref_log_probs=True``
(its faster mode). Ours runs twice: as it runs by default (one sequence a pair sharing the prompt) and with two
sequences a pair as TRL lays them out. Tokens/s count every pair's tokens as two sequences (prompt twice) for
every run, so the figures compare time for the same data. Each run is a process of its own.
Needs the [workload] extra and `pip install trl==1.16.0`. Run: `make bench-trainer` (a few minutes on 2 cores).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dpo_bench import Setup, child, report, run, tokens_per_pair  # noqa: E402

SETUP = Setup(pairs=256, validation=32, prompt=(64, 64), response=(31, 63), batch=8, steps=32, learning_rate=1e-4,
              precision="fp32", max_length=256)
RUNS = [("ours", "ours", {}), ("ours", "ours 2-seq", {"shared_prompt": False}), ("trl", "TRL", {}),
        ("trl", "TRL precompute", {"precompute_ref_log_probs": True})]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    import torch

    from dpo_bench import make_data
    from tests.tinymodel import build_tiny_model

    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; {SETUP}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        build_tiny_model(workdir / "model", hidden=384, layers=6, vocab_size=8192, heads=6)
        make_data(workdir / "data", SETUP)
        per_pair = tokens_per_pair(workdir)
        results = {label: run(__file__, runner, workdir, SETUP, options, label.replace(" ", "-"))
                   for runner, label, options in RUNS}
    report(results, SETUP, per_pair, tail="loss, last 8", accuracy=True)


if __name__ == "__main__":
    main()
