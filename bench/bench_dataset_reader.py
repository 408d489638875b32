"""The trainer's row readers at 100k and 1M pairs: today's lazy JSONL reader against Hugging Face ``datasets``
(memory-mapped Arrow), peak RSS and time, each reader in a process of its own (its ``ru_maxrss`` is the reader's).

What each child does is what the trainer does with its rows: open the source, take every row's size (the length
proxy of batch grouping), then read and normalise ``--reads`` rows in a seeded random order (an epoch's batches).
Readers: ``jsonl-lazy`` (train.jsonl.PreferenceFile: a 16-byte index a row), ``datasets-json`` (the same JSONL
through ``load_dataset('json')``: converted once to an Arrow cache, then memory-mapped), ``datasets-parquet`` (the
same rows as Parquet: converted to an Arrow cache), ``arrow-mmap`` (the Arrow file itself, memory-mapped, no copy).
``baseline`` is a child that only imports what the readers import. Peak RSS counts the memory-mapped file pages a
reader touched (reclaimable page cache); ``anon MiB`` is the anonymous memory resident at the end (the heap). Run: ``python bench/bench_dataset_reader.py``
(``--sizes 100000,1000000``); it writes the data sets under a temporary directory (about 0.5 GB at 1M pairs).
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

READERS = ("baseline", "jsonl-lazy", "datasets-json", "datasets-parquet", "arrow-mmap")


def write_data(directory: Path, pairs: int) -> None:
    """JSONL, Parquet and an Arrow file of the same rows (prompts 200-800 characters, responses 50-300)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(0)
    words = [f"w{i}" for i in range(2000)]
    schema = pa.schema([("prompt", pa.string()), ("chosen_response", pa.string()), ("rejected_response", pa.string())])
    with open(directory / "train.jsonl", "w") as jsonl, \
            pq.ParquetWriter(directory / "train.parquet", schema) as parquet, \
            pa.OSFile(str(directory / "train.arrow"), "wb") as sink, pa.ipc.new_stream(sink, schema) as arrow:
        for start in range(0, pairs, 10_000):
            rows = [{"prompt": " ".join(rng.choices(words, k=rng.randint(40, 160))),
                     "chosen_response": " ".join(rng.choices(words, k=rng.randint(10, 60))),
                     "rejected_response": " ".join(rng.choices(words, k=rng.randint(10, 60)))}
                    for _ in range(min(10_000, pairs - start))]
            jsonl.write("".join(json.dumps(r) + "\n" for r in rows))
            batch = pa.RecordBatch.from_pylist(rows, schema=schema)
            parquet.write_batch(batch)
            arrow.write_batch(batch)


def child(reader: str, directory: Path, reads: int, cache: Path) -> dict[str, float]:
    import datasets
    import numpy as np

    from dpo_operator.train.sources import ArrowRows, PreferenceRows, open_raw
    from dpo_operator.train.formats import nemo

    datasets.disable_progress_bars()
    started = time.perf_counter()
    if reader == "baseline":
        return {"open_s": 0.0, "read_s": 0.0, "rows": 0}
    if reader == "jsonl-lazy":
        raw = open_raw(directory / "train.jsonl")
    elif reader == "datasets-json":
        raw = ArrowRows(datasets.load_dataset("json", data_files=str(directory / "train.jsonl"), split="train",
                                              cache_dir=str(cache)), "json")
    elif reader == "datasets-parquet":
        raw = ArrowRows(datasets.load_dataset("parquet", data_files=str(directory / "train.parquet"), split="train",
                                              cache_dir=str(cache)), "parquet")
    else:
        raw = ArrowRows(datasets.Dataset.from_file(str(directory / "train.arrow")), "arrow")
    rows = PreferenceRows(raw, nemo, "nemo")
    sizes = rows.sizes()
    opened = time.perf_counter()
    order = np.random.default_rng(0).permutation(len(rows))[:reads]
    total = 0
    for index in order:
        total += len(rows.row(int(index))["chosen_response"])
    return {"open_s": round(opened - started, 2), "read_s": round(time.perf_counter() - opened, 2),
            "rows": len(rows), "mean_size": float(sizes.mean()), "checksum": total}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        reader, directory, reads, cache = sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
        figures = child(reader, directory, reads, cache)
        figures["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        figures["anon_mib"] = round(int(status.get("RssAnon", "0 kB").split()[0]) / 1024, 1)  # not file-backed
        print(json.dumps(figures))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated pair counts")
    parser.add_argument("--reads", type=int, default=20_000, help="rows read in random order after opening")
    args = parser.parse_args()
    print(f"{'pairs':>9} {'reader':<17} {'peak RSS MiB':>12} {'anon MiB':>9} {'open s':>7} {'read s':>7} "
          f"{'rows/s read':>11}")
    for pairs in [int(x) for x in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            write_data(directory, pairs)
            for reader in READERS:
                cache = directory / f"cache-{reader}"
                out = subprocess.run([sys.executable, __file__, "--child", reader, str(directory), str(args.reads),
                                      str(cache)], capture_output=True, text=True, check=True)
                figures = json.loads(out.stdout.strip().splitlines()[-1])
                rate = f"{args.reads / figures['read_s']:.0f}" if figures["read_s"] else "-"
                print(f"{pairs:>9} {reader:<17} {figures['peak_rss_mib']:>12} {figures['anon_mib']:>9} {figures['open_s']:>7} "
                      f"{figures['read_s']:>7} {rate:>11}", flush=True)


if __name__ == "__main__":
    main()
