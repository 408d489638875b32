"""Pair building at scale: 1,000,000 candidate events -> pairs/s and peak memory.

Run: `make bench-pairs` (or `python bench/bench_pairs.py --events 1000000`).
"""

from __future__ import annotations

import argparse
import random
import resource
import time
import tracemalloc

from dpo_operator.collect.events import CandidateEvent
from dpo_operator.collect.pairs import PairingOptions, PairingStats, build_pairs


def make_events(count: int, per_turn: int, seed: int) -> list[CandidateEvent]:
    rng = random.Random(seed)
    prompts = [f"prompt {i}" for i in range(1000)]
    outputs = [str(i) for i in range(1, 10)]
    events = []
    for i in range(count):
        turn, candidate = divmod(i, per_turn)
        events.append(CandidateEvent(f"ex-{turn // 4}", f"turn-{turn % 4}", turn % 4, candidate,
                                     prompts[turn % 1000], rng.choice(outputs), float(rng.choice((-2, -1, 0, 1)))))
    return events


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--per-turn", type=int, default=4)
    parser.add_argument("--strategy", default="exhaustive")
    args = parser.parse_args()

    events = make_events(args.events, args.per_turn, seed=0)
    options = PairingOptions(strategy=args.strategy, max_pairs_per_turn=4)
    start = time.perf_counter()
    stats = PairingStats()
    pairs = build_pairs(events, options, stats)
    elapsed = time.perf_counter() - start
    del pairs
    tracemalloc.start()  # a second, traced pass for memory (tracing slows it down, so it is not timed)
    pairs = build_pairs(events, options)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"events            {stats.events:>12,}")
    print(f"decision points   {stats.turns:>12,}")
    print(f"pairs             {len(pairs):>12,}  (ties dropped {stats.tied_pairs_dropped:,}, "
          f"identical texts dropped {stats.identical_pairs_dropped:,}, truncated {stats.truncated:,})")
    print(f"time              {elapsed:>12.2f} s")
    print(f"events/s          {stats.events / elapsed:>12,.0f}")
    print(f"pairs/s           {len(pairs) / elapsed:>12,.0f}")
    print(f"peak traced alloc {peak / 2**20:>12.1f} MiB (pair building only)")
    print(f"peak RSS          {rss_mb:>12.1f} MiB (process, incl. the 1M input events)")


if __name__ == "__main__":
    main()
