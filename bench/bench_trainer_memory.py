"""Peak RSS of our DPO trainer as the dataset grows: 10k, 30k and 100k synthetic pairs (default), each run in a
process of its own (its ``ru_maxrss`` is the trainer's alone).

The target: peak RSS stays flat, because the trainer indexes the JSONL lazily (a byte offset per row) and reads,
parses and tokenises a row only when a batch needs it. What does grow with the pair count is small by design:
the row index, one epoch's batch order, and the [N, 2] reference log-probs. Note that the reference pass scores
every pair before the first step, so a run's time grows with N even though only ``steps`` batches are trained;
the model is a tiny random-init Llama (hidden 32, 2 layers, char-level tokenizer) so 100k pairs take minutes on
2 cores. Run: `make bench-trainer-memory` (or ``python bench/bench_trainer_memory.py --sizes 10000,30000``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dpo_bench import Setup, child, make_data, run  # noqa: E402

SETUP = Setup(pairs=0, validation=32, prompt=(16, 48), response=(8, 24), batch=32, steps=5, learning_rate=1e-4,
              precision="fp32", max_length=128, skip=1)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,30000,100000", help="comma-separated pair counts")
    sizes = [int(x) for x in parser.parse_args().sizes.split(",")]
    import torch

    from tests.tinymodel import build_tiny_model

    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; tiny Llama (hidden 32, 2 layers, "
          f"char-level vocab), all weights, fp32; one process per size; {SETUP}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp) / "model")
        for pairs in sizes:
            workdir = Path(tmp) / f"pairs-{pairs}"
            workdir.mkdir()
            (workdir / "model").symlink_to(model)
            setup = replace(SETUP, pairs=pairs)
            make_data(workdir / "data", setup)
            file_mib = (workdir / "data/training/training_file.jsonl").stat().st_size / 2**20
            started = time.perf_counter()
            result = run(__file__, "ours", workdir, setup, {}, str(pairs))
            wall = time.perf_counter() - started
            if result is not None:
                rows.append((pairs, file_mib, result["peak_rss_gib"] * 1024, result["total_seconds"], wall))
                print(f"{pairs} pairs done: peak RSS {rows[-1][2]:.1f} MiB, {wall:.0f} s", flush=True)
    print(f"\n{'pairs':>8}{'file MiB':>10}{'peak RSS MiB':>14}{'vs first':>10}{'trainer s':>11}{'process s':>11}")
    for pairs, file_mib, rss, seconds, wall in rows:
        print(f"{pairs:>8}{file_mib:>10.1f}{rss:>14.1f}{rss - rows[0][2]:>+10.1f}{seconds:>11.1f}{wall:>11.1f}")
    print("trainer s: model load + reference pass over every pair + the training steps; process s: the whole "
          "child process (imports, final validation and save included)")


if __name__ == "__main__":
    main()
