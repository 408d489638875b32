"""One evaluation: the held-out examples, both sides on them, the paired statistics, the result file and summary.

The per-example result file (``evaluation.json`` in ``spec.output``) holds every score of both sides, the answers
and why an example has no score; the pod's result (its termination message) is the bounded summary.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from dpo_operator.api.evaluation import PAIRED_BOOTSTRAP, DPOEvaluationSpec, Verdict
from dpo_operator.api.results import EvaluationResult, SideResult
from dpo_operator.collect.llm import ChatClient, LLMSettings
from dpo_operator.collect.workflow import Example, load_workflow
from dpo_operator.evaluate import heldout
from dpo_operator.evaluate.endpoints import Endpoint, resolve
from dpo_operator.evaluate.episodes import SideScores, play_side
from dpo_operator.evaluate.stats import Comparison, compare
from dpo_operator.paths import inside

log = logging.getLogger(__name__)
RESULT_FILE = "evaluation.json"


@dataclass
class Played:
    ids: list[str]
    selection: heldout.Selection[Any]
    candidate: SideScores
    baseline: SideScores


def _settings(spec: DPOEvaluationSpec, endpoint: Endpoint) -> LLMSettings:
    s = spec.sampling
    return LLMSettings(base_url=endpoint.base_url, model=endpoint.model, temperature=s.temperature,
                       max_tokens=s.max_tokens, timeout_seconds=s.timeout_seconds, max_concurrency=s.max_concurrency,
                       max_retries=s.max_retries, api_key=endpoint.api_key, use_n=False,
                       startup_timeout_seconds=s.startup_timeout_seconds)


def _training_keys(training: heldout.TrainingExamples | None) -> tuple[set[str] | None, str | None]:
    """The content of the examples a built-in or plugin DPOCollection played (the same examples every run)."""
    if training is None:
        return None, None
    workflow = training.workflow
    if workflow.get("nat"):
        return set(), f"DPOCollection {training.collection} played (a NAT workflow: none in common)"
    name, count = workflow.get("name", "tictactoe"), int(workflow.get("numExamples", 32))
    played = load_workflow(name, workflow.get("config")).examples(count, training.seed)
    return ({heldout.content_key(e.payload) for e in played},
            f"DPOCollection {training.collection} played ({name}, {count} examples, seed {training.seed})")


async def _plugin(spec: DPOEvaluationSpec, endpoints: dict[str, Endpoint], training: heldout.TrainingExamples | None,
                  transport: httpx.AsyncBaseTransport | None) -> Played:
    workflow = load_workflow(spec.workflow.name, spec.workflow.config)
    keys, source = _training_keys(training)
    pool = workflow.examples(spec.workflow.num_examples, spec.seed)
    selection: heldout.Selection[Example] = heldout.select(spec, pool, lambda e: e.payload, keys, source)
    examples = selection.examples
    sides: list[SideScores] = []
    if examples:
        async with ChatClient(_settings(spec, endpoints["candidate"]), transport=transport) as candidate, \
                ChatClient(_settings(spec, endpoints["baseline"]), transport=transport) as baseline:
            sides = list(await asyncio.gather(
                *(play_side(workflow, examples, chat, spec.seed, spec.workflow.max_concurrent_episodes)
                  for chat in (candidate, baseline))))
    else:
        sides = [SideScores(scores=[]), SideScores(scores=[])]
    return Played([e.example_id for e in examples], selection, sides[0], sides[1])


async def _nat(spec: DPOEvaluationSpec, endpoints: dict[str, Endpoint],
               training: heldout.TrainingExamples | None) -> Played:
    from dpo_operator.collect import nat as nat_mod
    from dpo_operator.evaluate import nat_side

    assert spec.workflow.nat is not None
    config_file = nat_mod.nat_config_file(spec.workflow.nat)
    raw = nat_side.raw_config(config_file)
    evaluator = nat_side.evaluator_name(spec, raw)
    source_file = nat_side.dataset_file(spec, config_file, raw)
    entries = nat_side.read_entries(source_file)
    keys, source = None, None
    if training is not None:
        same = training.workflow.get("nat") == spec.workflow.nat.to_api()
        keys = {heldout.content_key(e) for e in entries} if same else set()
        source = (f"DPOCollection {training.collection} ran (the same NAT config and dataset: every entry)" if same
                  else f"DPOCollection {training.collection} ran (another workflow or dataset, not readable here)")
    selection = heldout.select(spec, entries, lambda e: e, keys, source)
    id_key = nat_side.id_key(raw)
    ids = [str(e.get(id_key)) for e in selection.examples]
    if not ids:
        return Played(ids, selection, SideScores(scores=[]), SideScores(scores=[]))
    with tempfile.TemporaryDirectory(prefix="dpo-eval-") as scratch:
        subset = Path(scratch) / source_file.name
        text = source_file.read_text(encoding="utf-8")
        subset.write_text(json.dumps(selection.examples) if text.lstrip().startswith("[")
                          else "".join(json.dumps(e) + "\n" for e in selection.examples), encoding="utf-8")
        sides = [await nat_side.nat_side(spec, config_file, subset, ids, endpoints[name], evaluator,
                                         Path(scratch) / name) for name in ("candidate", "baseline")]
    return Played(ids, selection, sides[0], sides[1])


def _side_result(endpoint: Endpoint, scores: SideScores, comparison: Comparison, candidate: bool) -> SideResult:
    summary = comparison.candidate if candidate else comparison.baseline
    return SideResult(endpoint=endpoint.base_url, model=endpoint.model,
                      mean=None if summary.mean is None else round(summary.mean, 6), count=summary.count,
                      failures=summary.failures, failures_by_reason=dict(sorted(scores.failures.items())),
                      invalid_answers=scores.invalid_answers, first_error=scores.first_error)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def summarize(spec: DPOEvaluationSpec, endpoints: dict[str, Endpoint], played: Played,
              result_path: str | None) -> EvaluationResult:
    gate = spec.gate
    comparison = compare(played.candidate.scores, played.baseline.scores,
                         confidence=gate.confidence if gate else 0.95, resamples=spec.bootstrap_resamples,
                         seed=spec.seed, min_improvement=gate.min_improvement if gate else None)
    interval = comparison.interval
    return EvaluationResult(
        examples=len(played.ids), pool=played.selection.pool, excluded=played.selection.excluded,
        held_out=played.selection.description,
        candidate=_side_result(endpoints["candidate"], played.candidate, comparison, True),
        baseline=_side_result(endpoints["baseline"], played.baseline, comparison, False),
        verdict=comparison.verdict.value, verdict_message=comparison.verdict_message, pairs=comparison.pairs,
        mean_difference=_rounded(comparison.mean_difference),
        lower=_rounded(interval.lower if interval else None), upper=_rounded(interval.upper if interval else None),
        confidence=gate.confidence if gate else 0.95, method=PAIRED_BOOTSTRAP, resamples=spec.bootstrap_resamples,
        seed=spec.seed, wins=comparison.wins, ties=comparison.ties, losses=comparison.losses, result_path=result_path)


def result_document(spec: DPOEvaluationSpec, played: Played, result: EvaluationResult) -> dict[str, Any]:
    """Everything behind the figures: the spec, the summary, and each example's scores on both sides."""
    rows = []
    for index, example_id in enumerate(played.ids):
        c, b = played.candidate.scores[index], played.baseline.scores[index]
        rows.append({"index": index, "id": example_id, "candidate": c, "baseline": b,
                     "difference": None if c is None or b is None else c - b,
                     "candidateDetail": played.candidate.details[index] if played.candidate.details else None,
                     "baselineDetail": played.baseline.details[index] if played.baseline.details else None})
    return {"spec": spec.to_api(), "summary": json.loads(result.to_json()), "examples": rows}


def _write(target_dir: Path, document: dict[str, Any]) -> None:
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=target_dir, delete=False, suffix=".tmp", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2, ensure_ascii=False, allow_nan=False)
    os.replace(handle.name, target_dir / RESULT_FILE)  # atomic: never a partial result file


def run_evaluation(spec: DPOEvaluationSpec, *, data_root: Path, output_dir: Path | None = None,
                   transport: httpx.AsyncBaseTransport | None = None) -> EvaluationResult:
    endpoints = resolve(spec)
    training = heldout.TrainingExamples.from_json(os.environ.get(heldout.TRAINING_EXAMPLES_ENV))
    if spec.workflow.nat is not None:
        played = asyncio.run(_nat(spec, endpoints, training))
    else:
        played = asyncio.run(_plugin(spec, endpoints, training, transport))
    target, shown = None, None
    if output_dir is not None:
        target, shown = output_dir, str(output_dir / RESULT_FILE)
    elif spec.output is not None:
        target = inside(data_root, spec.output.path)  # never outside the volume
        shown = f"pvc://{spec.output.claim_name}/{spec.output.path.strip('/')}/{RESULT_FILE}".replace("//" + RESULT_FILE,
                                                                                                      "/" + RESULT_FILE)
    result = summarize(spec, endpoints, played, shown)
    if target is not None:
        _write(target, result_document(spec, played, result))
    log.info("evaluation: %s", result.to_json())
    if result.verdict == Verdict.INCONCLUSIVE.value:
        log.warning("verdict Inconclusive: %s", result.verdict_message)
    return result
