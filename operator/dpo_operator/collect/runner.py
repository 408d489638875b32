"""One collection: ``numRuns`` runs of the workflow over the examples, then pairs -> dataset -> destination.

A run's candidates come from a workflow plugin (sampling from the spec's LLM endpoint), from a NAT workflow run
by NAT's evaluation runner, or from NAT ``workflow_output.json`` files (one run each). Every candidate is checked
(:class:`CandidateCheck`); rejected ones are counted by reason in metrics.json and in the result.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from dpo_operator.api.collection import DPOCollectionSpec
from dpo_operator.collect import dataset
from dpo_operator.collect import nat as nat_mod
from dpo_operator.collect import nat_outputs, nat_settings
from dpo_operator.collect.events import CandidateCheck, CandidateEvent, RunOutput
from dpo_operator.collect.llm import ChatClient, LLMSettings
from dpo_operator.collect.progress import CollectorProgress
from dpo_operator.collect.pairs import PairingOptions, PairingStats, PreferencePair, build_pairs
from dpo_operator.collect.workflow import WorkflowNotFound, load_workflow, workflow_factory
from dpo_operator.datacheck.collection import check_collection
from dpo_operator.paths import inside

log = logging.getLogger(__name__)


class CollectionError(RuntimeError):
    """The collection cannot produce a dataset; the message says why."""


class BadCollectionInput(CollectionError, ValueError):
    """A run failed on its input (a malformed NAT file, a workflow that cannot be loaded): every retry would too,
    so the collector exits with code 3."""


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
    invalidCandidates: int = 0  # noqa: N815
    candidatesPerSecond: float | None = None  # noqa: N815
    dataCheck: dict[str, Any] | None = None  # noqa: N815  (datacheck.collection: the output's data check)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class Collected:
    """What the runs produced, before the dataset is assembled."""

    pairs: list[PreferencePair] = field(default_factory=list)
    stats: PairingStats = field(default_factory=PairingStats)
    per_run: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    requests: int | None = None
    completions: int | None = None
    n_sampling: bool | None = None
    settings: dict[str, str] = field(default_factory=dict)  # NAT: where each effective setting came from
    warnings: list[str] = field(default_factory=list)
    spec: DPOCollectionSpec | None = None  # the effective spec, where a NAT config filled in settings
    history: list[dict[str, Any]] = field(default_factory=list)  # NAT workflows: NAT's per-run progress entries
    run_id: str = field(default_factory=nat_outputs.new_run_id)  # NAT's run id, in its output files
    trajectory_groups: int = 0  # NAT's count: each run's pairs grouped by example
    progress: CollectorProgress | None = None  # what the pod's log shows


def pairing_options(spec: DPOCollectionSpec) -> PairingOptions:
    p = spec.pairing
    return PairingOptions(strategy=p.strategy, min_score_diff=p.min_score_diff, max_pairs_per_turn=p.max_pairs_per_turn,
                          reward_from_score_diff=p.reward_from_score_diff,
                          require_multiple_candidates=p.require_multiple_candidates)


def decision_seed(seed: int, run: int, messages: list[dict[str, Any]]) -> int:
    """A reproducible sampling seed for one decision point of one run (the same prompt, the same seed)."""
    digest = hashlib.sha256(json.dumps([seed, run, messages], sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


async def _plugin_run(spec: DPOCollectionSpec, chat: ChatClient, run: int, check: CandidateCheck,
                      progress: CollectorProgress) -> RunOutput:
    workflow = load_workflow(spec.workflow.name, spec.workflow.config)
    examples = workflow.examples(spec.workflow.num_examples, spec.seed)  # the same examples in every run
    progress.examples_per_run(len(examples))
    slots = asyncio.Semaphore(spec.workflow.max_concurrent_episodes or len(examples) or 1)

    async def sample(messages: list[dict[str, Any]]) -> list[str | None]:
        return await chat.candidates(messages, spec.candidates_per_turn, decision_seed(spec.seed, run, messages))

    async def episode(example: Any) -> list[CandidateEvent]:
        async with slots:
            events = await workflow.episode(example, sample, spec.seed + run)
        progress.episode_done()
        return events

    async with asyncio.TaskGroup() as group:  # one failed episode cancels the rest of the run
        tasks = [group.create_task(episode(example)) for example in examples]
    return RunOutput(check.events(event for task in tasks for event in task.result()))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions[:3])
    return f"{type(exc).__name__}: {exc}"


RunThunk = Callable[[], Awaitable[RunOutput]]


def _plugin_runs(spec: DPOCollectionSpec, chat: ChatClient, check: CandidateCheck,
                 progress: CollectorProgress) -> Iterator[tuple[str, RunThunk]]:
    for run in range(spec.num_runs):
        yield f"{run + 1}/{spec.num_runs}", lambda run=run: _plugin_run(spec, chat, run, check, progress)


async def _collect_runs(spec: DPOCollectionSpec, runs: Iterable[tuple[str, RunThunk]], collected: Collected,
                        progress: CollectorProgress) -> None:
    options = pairing_options(spec)
    for label, thunk in runs:
        try:
            output = await thunk()
        except nat_mod.StepNameMismatch:
            raise  # a configuration error: every run would fail the same way
        except Exception as exc:  # noqa: BLE001  (every failure of a run is handled the same way)
            error = f"run {label}: {_describe(exc)}"
            if not spec.continue_on_collection_error:
                deterministic = isinstance(exc, (nat_mod.NatInputError, WorkflowNotFound))
                raise (BadCollectionInput if deterministic else CollectionError)(error) from exc
            log.warning("collection %s (continuing: continueOnCollectionError)", error)
            collected.errors.append(error)
            continue
        events = output.events
        run_pairs = build_pairs(events, options, collected.stats)
        collected.per_run.append(len(run_pairs))
        collected.pairs.extend(run_pairs)
        log.info("run %s: %d candidates, %d pairs", label, len(events), len(run_pairs))
        entry = nat_outputs.run_entry(collected.run_id, len(collected.per_run) - 1, run_pairs, output.evaluator_reward)
        if spec.workflow.nat is not None:
            collected.history.append(entry)
            collected.trajectory_groups += nat_outputs.trajectory_groups(run_pairs)
        progress.run_done(len(events), [p.reward for p in run_pairs])


def nat_settings_of(spec: DPOCollectionSpec) -> nat_settings.Settings:
    """The collection's settings: the CR's, else the NAT config's finetune sections (offline input: the CR's)."""
    nat = spec.workflow.nat
    assert nat is not None
    settings = nat_settings.resolve(spec, None if nat.workflow_output is not None else nat_mod.nat_config_file(nat))
    for warning in settings.warnings:
        log.warning("NAT config: %s", warning)
    return settings


async def collect_pairs(spec: DPOCollectionSpec, transport: httpx.AsyncBaseTransport | None = None,
                        data_root: Path = Path("/data"), progress: CollectorProgress | None = None) -> Collected:
    collected = Collected()
    check = CandidateCheck(full_history=spec.use_full_message_history)
    started = time.monotonic()
    if spec.workflow.nat is not None:
        settings = nat_settings_of(spec)
        spec = settings.spec
        collected.settings, collected.warnings, collected.spec = settings.sources, settings.warnings, spec
        offline = spec.workflow.nat is not None and spec.workflow.nat.workflow_output is not None
        progress = progress or CollectorProgress(None if offline else spec.num_runs, None)
        with tempfile.TemporaryDirectory(prefix="nat-eval-") as scratch, progress.phase("collecting"):
            runs = nat_mod.nat_runs(spec, data_root, Path(scratch), check, settings.step_names,
                                    None if offline else settings.reward_function)
            await _collect_runs(spec, runs, collected, progress)
    else:
        assert spec.llm is not None
        workflow_factory(spec.workflow.name)  # an unknown workflow fails now, not after waiting for the endpoint
        progress = progress or CollectorProgress(spec.num_runs, spec.workflow.num_examples)
        async with ChatClient(LLMSettings.from_spec(spec.llm), transport=transport) as chat:
            with progress.phase("waiting for endpoint"):
                await chat.wait_until_serving()
            with progress.phase("collecting"):
                await _collect_runs(spec, _plugin_runs(spec, chat, check, progress), collected, progress)
            collected.requests, collected.completions, collected.n_sampling = chat.requests, chat.completions, chat.n_supported
    collected.seconds = time.monotonic() - started
    collected.progress = progress
    collected.rejected = check.rejected
    if collected.rejected:
        log.warning("rejected candidates: %s", dict(collected.rejected))
    return collected


def finish(spec: DPOCollectionSpec, collected: Collected, location: str) -> tuple[dataset.DatasetFiles, CollectionResult]:
    pairs, stats, per_run, errors = collected.pairs, collected.stats, collected.per_run, collected.errors
    if not per_run:
        raise CollectionError(f"every collection run failed: {'; '.join(errors)[:1500]}")
    raw_count = len(pairs)
    if spec.deduplicate_pairs:
        pairs = dataset.deduplicate(pairs)
    deduplicated = raw_count - len(pairs)
    pairs = dataset.sample(pairs, spec.max_pairs, spec.seed)
    invalid = sum(collected.rejected.values())
    if not pairs:
        rejected = f", {invalid} candidates were invalid ({dict(collected.rejected)})" if invalid else ""
        raise CollectionError(
            f"no preference pairs: {stats.events} candidates at {stats.turns} decision points{rejected}; "
            f"{stats.tied_pairs_dropped} candidate pairs had equal scores, {stats.identical_pairs_dropped} identical "
            f"texts and {stats.below_threshold_dropped} were below minScoreDiff={spec.pairing.min_score_diff}; "
            + ("let the NAT workflow sample more (or more diverse) candidates per turn, or lower pairing.minScoreDiff"
               if spec.workflow.nat is not None else
               "raise candidatesPerTurn or the LLM temperature, or lower pairing.minScoreDiff"))
    train, validation = dataset.split(pairs, spec.validation_fraction, spec.seed)
    full = spec.use_full_message_history
    mean_diff = sum(p.score_diff for p in pairs) / len(pairs)
    per_second = round(stats.events / collected.seconds, 3) if collected.seconds > 0 else None
    result = CollectionResult(
        pairs={"total": len(pairs), "training": len(train), "validation": len(validation)},
        candidates=stats.events, runsCompleted=len(per_run), runsFailed=len(errors),
        meanScoreDiff=round(mean_diff, 6), datasetLocation=location, pairsPerRun=per_run, errors=errors[:5],
        invalidCandidates=invalid, candidatesPerSecond=per_second,
    )
    metrics: dict[str, Any] = {
        **asdict(result), "decisionPoints": stats.turns, "singleCandidateTurns": stats.single_candidate_turns,
        "tiedPairsDropped": stats.tied_pairs_dropped, "identicalPairsDropped": stats.identical_pairs_dropped,
        "belowThresholdDropped": stats.below_threshold_dropped,
        "truncatedPairs": stats.truncated, "duplicatesRemoved": deduplicated, "pairsBeforeSampling": raw_count - deduplicated,
        "invalidCandidatesByReason": dict(sorted(collected.rejected.items())),
        "collectionSeconds": round(collected.seconds, 3), "requests": collected.requests,
        "completions": collected.completions, "nSampling": collected.n_sampling,
    }
    if collected.settings:
        metrics["settings"] = collected.settings
        metrics["configWarnings"] = collected.warnings
        metrics["collectionHistory"] = collected.history
    files = dataset.DatasetFiles(
        training=dataset.jsonl([dataset.to_row(p, full) for p in train]),
        validation=dataset.jsonl([dataset.to_row(p, full) for p in validation]),
        metrics=json.dumps(metrics, indent=2, sort_keys=True).encode(),
    )
    checked = check_collection(files, per_run, (f"{p.example_id}/{p.turn_id}" for p in pairs), location)
    result.dataCheck = checked.model_dump(by_alias=True, mode="json")
    if collected.history:  # a NAT workflow: NAT's output files beside the dataset
        message = f"Data collection complete: {len(pairs)} DPO pairs written to {location}"
        files.extra.extend(nat_outputs.files(collected.run_id, collected.history, collected.trajectory_groups, message))
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
        dataset.write_directory(files, inside(data_root, spec.output.pvc.path))  # never outside the volume
    else:
        hub = spec.output.hub
        assert hub is not None
        dataset.write_hub(files, hub.endpoint, hub.repo_id, hub.revision, os.environ.get("HF_TOKEN"),
                          f"DPO preference pairs from DPOCollection {name}")


def run_collection(spec: DPOCollectionSpec, *, data_root: Path, output_dir: Path | None = None, name: str = "local",
                   transport: httpx.AsyncBaseTransport | None = None,
                   progress: CollectorProgress | None = None) -> CollectionResult:
    collected = asyncio.run(collect_pairs(spec, transport, data_root, progress))
    spec = collected.spec or spec  # dedup and maxPairs as the NAT config gave them
    progress = collected.progress or CollectorProgress(spec.num_runs, None)
    with progress.phase("writing dataset"):
        files, result = finish(spec, collected, output_location(spec, data_root, output_dir))
        write_output(spec, files, data_root, output_dir, name)
    progress.finished()
    return result
