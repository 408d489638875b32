"""One collection: ``numRuns`` runs of the workflow over the examples, then pairs -> dataset -> destination."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dpo_operator.api.collection import DPOCollectionSpec
from dpo_operator.collect import dataset
from dpo_operator.collect.events import CandidateEvent
from dpo_operator.collect.llm import ChatClient, LLMSettings
from dpo_operator.collect.pairs import PairingOptions, PairingStats, PreferencePair, build_pairs
from dpo_operator.collect.workflow import load_workflow

log = logging.getLogger(__name__)


class CollectionError(RuntimeError):
    """The collection cannot produce a dataset; the message says why."""


@dataclass
class CollectionResult:
    pairs: dict[str, int]
    candidates: int
    runsCompleted: int  # noqa: N815  (camelCase: this is the wire format read by the operator)
    runsFailed: int  # noqa: N815
    meanScoreDiff: float | None  # noqa: N815
    datasetLocation: str  # noqa: N815
    pairsPerRun: list[int] = field(default_factory=list)  # noqa: N815
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def pairing_options(spec: DPOCollectionSpec) -> PairingOptions:
    p = spec.pairing
    return PairingOptions(strategy=p.strategy, min_score_diff=p.min_score_diff, max_pairs_per_turn=p.max_pairs_per_turn,
                          reward_from_score_diff=p.reward_from_score_diff,
                          require_multiple_candidates=p.require_multiple_candidates)


async def _run_once(spec: DPOCollectionSpec, chat: ChatClient, run: int) -> list[CandidateEvent]:
    workflow = load_workflow(spec.workflow.name, spec.workflow.config)
    examples = workflow.examples(spec.workflow.num_examples, spec.seed)  # the same examples in every run

    async def sample(messages: list[dict[str, str]]) -> list[str]:
        return await chat.candidates(messages, spec.candidates_per_turn)

    async with asyncio.TaskGroup() as group:  # one failed episode cancels the rest of the run
        tasks = [group.create_task(workflow.episode(example, sample, spec.seed + run)) for example in examples]
    return [event for task in tasks for event in task.result()]


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions[:3])
    return f"{type(exc).__name__}: {exc}"


async def collect_pairs(spec: DPOCollectionSpec, transport: httpx.AsyncBaseTransport | None = None,
                        ) -> tuple[list[PreferencePair], PairingStats, list[int], list[str]]:
    options = pairing_options(spec)
    stats = PairingStats()
    pairs: list[PreferencePair] = []
    per_run: list[int] = []
    errors: list[str] = []
    async with ChatClient(LLMSettings.from_spec(spec.llm), transport=transport) as chat:
        for run in range(spec.num_runs):
            try:
                events = await _run_once(spec, chat, run)
            except Exception as exc:  # noqa: BLE001  (every failure of a run is handled the same way)
                error = f"run {run + 1}/{spec.num_runs}: {_describe(exc)}"
                if not spec.continue_on_collection_error:
                    raise CollectionError(error) from exc
                log.warning("collection %s (continuing: continueOnCollectionError)", error)
                errors.append(error)
                continue
            run_pairs = build_pairs(events, options, stats)
            per_run.append(len(run_pairs))
            pairs.extend(run_pairs)
            log.info("run %d/%d: %d candidates, %d pairs", run + 1, spec.num_runs, len(events), len(run_pairs))
    return pairs, stats, per_run, errors


def finish(spec: DPOCollectionSpec, pairs: list[PreferencePair], stats: PairingStats, per_run: list[int],
           errors: list[str], location: str) -> tuple[dataset.DatasetFiles, CollectionResult]:
    if not per_run:
        raise CollectionError(f"every collection run failed: {'; '.join(errors)[:1500]}")
    raw_count = len(pairs)
    if spec.deduplicate_pairs:
        pairs = dataset.deduplicate(pairs)
    deduplicated = raw_count - len(pairs)
    pairs = dataset.sample(pairs, spec.max_pairs, spec.seed)
    if not pairs:
        raise CollectionError(
            f"no preference pairs: {stats.turns} decision points, {stats.tied_pairs_dropped} candidate pairs had "
            f"equal scores and {stats.below_threshold_dropped} were below minScoreDiff={spec.pairing.min_score_diff}; "
            "raise candidatesPerTurn or the LLM temperature, or lower pairing.minScoreDiff")
    train, validation = dataset.split(pairs, spec.validation_fraction, spec.seed)
    full = spec.use_full_message_history
    mean_diff = sum(p.score_diff for p in pairs) / len(pairs)
    result = CollectionResult(
        pairs={"total": len(pairs), "training": len(train), "validation": len(validation)},
        candidates=stats.events, runsCompleted=len(per_run), runsFailed=len(errors),
        meanScoreDiff=round(mean_diff, 6), datasetLocation=location, pairsPerRun=per_run, errors=errors[:5],
    )
    metrics: dict[str, Any] = {
        **asdict(result), "decisionPoints": stats.turns, "singleCandidateTurns": stats.single_candidate_turns,
        "tiedPairsDropped": stats.tied_pairs_dropped, "belowThresholdDropped": stats.below_threshold_dropped,
        "truncatedPairs": stats.truncated, "duplicatesRemoved": deduplicated, "pairsBeforeSampling": raw_count - deduplicated,
    }
    files = dataset.DatasetFiles(
        training=dataset.jsonl([dataset.to_row(p, full) for p in train]),
        validation=dataset.jsonl([dataset.to_row(p, full) for p in validation]),
        metrics=json.dumps(metrics, indent=2, sort_keys=True).encode(),
    )
    return files, result


def output_location(spec: DPOCollectionSpec, data_root: Path, output_dir: Path | None) -> str:
    if output_dir is not None:
        return str(output_dir)
    return spec.output.describe()


def write_output(spec: DPOCollectionSpec, files: dataset.DatasetFiles, data_root: Path, output_dir: Path | None,
                 name: str) -> None:
    if output_dir is not None:
        dataset.write_directory(files, output_dir)
    elif spec.output.pvc is not None:
        dataset.write_directory(files, data_root / spec.output.pvc.path.lstrip("/"))
    else:
        hub = spec.output.hub
        assert hub is not None
        dataset.write_hub(files, hub.endpoint, hub.repo_id, hub.revision, os.environ.get("HF_TOKEN"),
                          f"DPO preference pairs from DPOCollection {name}")


def run_collection(spec: DPOCollectionSpec, *, data_root: Path, output_dir: Path | None = None, name: str = "local",
                   transport: httpx.AsyncBaseTransport | None = None) -> CollectionResult:
    pairs, stats, per_run, errors = asyncio.run(collect_pairs(spec, transport))
    files, result = finish(spec, pairs, stats, per_run, errors, output_location(spec, data_root, output_dir))
    write_output(spec, files, data_root, output_dir, name)
    return result
