"""A collection scaled out over an Indexed Job's pods (``parallelism: N``), then merged by one pod.

Shard ``i`` of ``N`` plays the examples ``i, i+N, i+2N ...`` of every run, with exactly the seeds a one-pod run
uses (the episode seed ``seed + run`` and each decision point's sampling seed depend on the seed, the run and the
prompt only), and writes their raw candidate events, per run and example index, to
``<output>.shards/<index>.json`` on the output PVC. The merge step reads every shard, puts each run's events back
in the one-pod order (example index order), checks them, pairs them, then deduplicates, samples and splits as
:func:`dpo_operator.collect.runner.finish` does: the dataset equals a one-pod run's for the same seed.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from dpo_operator.api.collection import DPOCollectionSpec
from dpo_operator.collect.events import CandidateCheck, CandidateEvent
from dpo_operator.collect.llm import ChatClient, LLMSettings
from dpo_operator.collect.pairs import build_pairs
from dpo_operator.collect.runner import (
    Collected,
    CollectionError,
    CollectionResult,
    _describe,
    decision_seed,
    finish,
    output_location,
    pairing_options,
    write_output,
)
from dpo_operator.collect.workflow import load_workflow
from dpo_operator.paths import inside

INDEX_ENV = "JOB_COMPLETION_INDEX"  # set by the Job controller in every pod of an Indexed Job


def shards_dir(spec: DPOCollectionSpec, data_root: Path) -> Path:
    """``<output>.shards`` next to the dataset directory on the output PVC (never inside it: only the dataset
    files belong there)."""
    assert spec.output.pvc is not None  # parallelism > 1 needs a PVC output (the spec's validator)
    return inside(data_root, spec.output.pvc.path.rstrip("/") + ".shards")


def shard_index() -> int:
    try:
        return int(os.environ[INDEX_ENV])
    except (KeyError, ValueError):
        raise CollectionError(f"a shard runs in an Indexed Job's pod: ${INDEX_ENV} is not set") from None


@dataclass
class RunShard:
    """One run's share of one shard: its examples' raw events by example index, or why the run failed."""

    events: dict[int, list[CandidateEvent]]
    error: str | None = None


async def _run_share(spec: DPOCollectionSpec, chat: ChatClient, run: int, index: int, count: int) -> RunShard:
    workflow = load_workflow(spec.workflow.name, spec.workflow.config)
    examples = workflow.examples(spec.workflow.num_examples, spec.seed)  # every shard builds the same list
    mine = list(range(index, len(examples), count))
    slots = asyncio.Semaphore(spec.workflow.max_concurrent_episodes or len(mine) or 1)

    async def sample(messages: list[dict[str, Any]]) -> list[str | None]:
        return await chat.candidates(messages, spec.candidates_per_turn, decision_seed(spec.seed, run, messages))

    async def episode(position: int) -> list[CandidateEvent]:
        async with slots:
            return await workflow.episode(examples[position], sample, spec.seed + run)

    try:
        async with asyncio.TaskGroup() as group:  # as in a one-pod run: one failed episode fails the run
            tasks = {position: group.create_task(episode(position)) for position in mine}
    except Exception as exc:  # noqa: BLE001  (the merge decides, as a one-pod run does)
        return RunShard({}, _describe(exc))
    return RunShard({position: task.result() for position, task in tasks.items()})


def _to_json(share: RunShard) -> dict[str, Any]:
    return {"error": share.error, "events": {str(k): [list(e) for e in v] for k, v in share.events.items()}}


def _from_json(raw: dict[str, Any]) -> RunShard:
    return RunShard({int(k): [CandidateEvent(*e) for e in v] for k, v in (raw.get("events") or {}).items()},
                    raw.get("error"))


async def collect_shard(spec: DPOCollectionSpec, index: int, count: int,
                        transport: httpx.AsyncBaseTransport | None = None) -> dict[str, Any]:
    """Every run's share of shard ``index`` (what the shard's file holds)."""
    if spec.llm is None:
        raise CollectionError("parallelism > 1 shards a workflow plugin's examples: it needs spec.llm")
    started = time.monotonic()
    async with ChatClient(LLMSettings.from_spec(spec.llm), transport=transport) as chat:
        await chat.wait_until_serving()
        runs = []
        for run in range(spec.num_runs):
            share = await _run_share(spec, chat, run, index, count)
            if share.error is not None and not spec.continue_on_collection_error:
                raise CollectionError(f"run {run + 1}/{spec.num_runs}, shard {index}: {share.error}")
            runs.append(_to_json(share))
        return {"index": index, "count": count, "runs": runs, "seconds": time.monotonic() - started,
                "requests": chat.requests, "completions": chat.completions, "nSampling": chat.n_supported}


def run_shard(spec: DPOCollectionSpec, *, data_root: Path, index: int,
              transport: httpx.AsyncBaseTransport | None = None) -> dict[str, int]:
    """Collect shard ``index`` of ``spec.parallelism`` and write its file (atomically: a retried pod rewrites it)."""
    if not 0 <= index < spec.parallelism:
        raise CollectionError(f"shard index {index} is outside 0..{spec.parallelism - 1}")
    shard = asyncio.run(collect_shard(spec, index, spec.parallelism, transport))
    directory = shards_dir(spec, data_root)
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / f".{index}.json.partial"
    partial.write_text(json.dumps(shard))
    partial.replace(directory / f"{index}.json")
    candidates = sum(len(v) for run in shard["runs"] for v in run["events"].values())
    return {"shard": index, "shards": spec.parallelism, "candidates": candidates}


def merge_shards(spec: DPOCollectionSpec, *, data_root: Path, name: str = "local") -> CollectionResult:
    """Pairs from every shard's events in one-pod order; then dedup, sample, split and write the dataset."""
    directory = shards_dir(spec, data_root)
    shards = []
    for index in range(spec.parallelism):
        path = directory / f"{index}.json"
        if not path.exists():
            raise CollectionError(f"shard {index} of {spec.parallelism} left no candidates ({path} is missing)")
        shards.append(json.loads(path.read_text()))
    collected = Collected()
    check = CandidateCheck(full_history=spec.use_full_message_history)
    options = pairing_options(spec)
    for run in range(spec.num_runs):
        shares = [_from_json(shard["runs"][run]) for shard in shards]
        failed = next((s.error for s in shares if s.error is not None), None)
        if failed is not None:
            collected.errors.append(f"run {run + 1}/{spec.num_runs}: {failed}")
            continue
        by_example = {position: events for share in shares for position, events in share.events.items()}
        events = check.events(e for position in sorted(by_example) for e in by_example[position])
        run_pairs = build_pairs(events, options, collected.stats)
        collected.per_run.append(len(run_pairs))
        collected.pairs.extend(run_pairs)
    collected.rejected = check.rejected
    collected.seconds = max(float(s.get("seconds") or 0.0) for s in shards)
    collected.requests = sum(int(s.get("requests") or 0) for s in shards)
    collected.completions = sum(int(s.get("completions") or 0) for s in shards)
    files, result = finish(spec, collected, output_location(spec, data_root, None))
    write_output(spec, files, data_root, None, name)
    return result
