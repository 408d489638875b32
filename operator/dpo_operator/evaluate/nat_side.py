"""One side of an evaluation of a NeMo Agent Toolkit workflow: NAT's evaluation runner, its evaluator as the scorer.

The NAT config runs unchanged except that its ``llms`` entries (all, or ``spec.nat.llmNames``) are pointed at the
side's endpoint (``base_url``, ``model_name``, ``api_key``, ``temperature``). The per-item score of one evaluator
(``spec.nat.evaluator``, else the config's ``finetuning.reward_function``, else its only evaluator: NAT's
``reward_function``) is the episode score. NAT is imported only here and in :mod:`dpo_operator.collect.nat`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dpo_operator.api.evaluation import DPOEvaluationSpec
from dpo_operator.collect import nat as nat_mod
from dpo_operator.collect import nat_finetune
from dpo_operator.evaluate.endpoints import Endpoint
from dpo_operator.evaluate.episodes import NON_FINITE_SCORE, SideScores

EVALUATOR_ERROR = "evaluatorError"
NO_SCORE = "noScore"
WORKFLOW_ERROR = "workflowError"


def raw_config(config_file: Path) -> dict[str, Any]:
    if not config_file.is_file():
        raise nat_mod.NatInputError(f"NAT config {config_file} does not exist")
    return nat_finetune.load(config_file)


def evaluator_name(spec: DPOEvaluationSpec, raw: dict[str, Any]) -> str:
    """The scorer: spec.nat.evaluator, else finetuning.reward_function.name, else the config's only evaluator."""
    configured = sorted((((raw.get("eval") or {}).get("evaluators")) or {}))
    reward = ((raw.get("finetuning") or {}).get("reward_function") or {})
    name = spec.nat.evaluator or (reward.get("name") if isinstance(reward, dict) else None)
    if name is None and len(configured) == 1:
        name = configured[0]
    if name is None:
        raise nat_mod.NatInputError(f"set spec.nat.evaluator: the NAT config has {len(configured)} evaluators "
                                    f"({', '.join(configured) or 'none'}) and no finetuning.reward_function")
    if name not in configured:
        raise nat_mod.NatInputError(f"evaluator {name!r} is not in the NAT config's eval.evaluators "
                                    f"({', '.join(configured) or 'none'})")
    return name


def dataset_file(spec: DPOEvaluationSpec, config_file: Path, raw: dict[str, Any]) -> Path:
    """The dataset NAT would read: workflow.nat.datasetRef's file, else eval.general.dataset.file_path."""
    nat = spec.workflow.nat
    assert nat is not None
    given = nat_mod.nat_dataset_file(nat)
    if given is not None:
        return given
    copy = {"eval": json.loads(json.dumps(raw.get("eval") or {}, default=str))}
    nat_mod._resolve_dataset(copy, config_file.resolve().parent)  # noqa: SLF001  (the collector's own rule)
    path = (((copy.get("eval") or {}).get("general") or {}).get("dataset") or {}).get("file_path")
    if not isinstance(path, str):
        raise nat_mod.NatInputError("the NAT config has no eval.general.dataset.file_path and spec.workflow.nat has "
                                    "no datasetRef: nothing to evaluate on")
    return Path(path)


def read_entries(path: Path) -> list[dict[str, Any]]:
    """A JSON list or JSON Lines dataset (the formats an evaluation can subset)."""
    try:
        text = path.read_text(encoding="utf-8")
        entries = json.loads(text) if text.lstrip().startswith("[") else [json.loads(line) for line in text.splitlines()
                                                                          if line.strip()]
    except (OSError, ValueError) as exc:
        raise nat_mod.NatInputError(f"cannot read the NAT dataset {path} as JSON or JSON Lines: {exc}") from None
    if not all(isinstance(e, dict) for e in entries):
        raise nat_mod.NatInputError(f"the NAT dataset {path} is not a list of objects")
    return entries


def id_key(raw: dict[str, Any]) -> str:
    structure = (((raw.get("eval") or {}).get("general") or {}).get("dataset") or {}).get("structure") or {}
    return str(structure.get("id_key", nat_mod.ID_KEY))


def _point_llms(spec: DPOEvaluationSpec, endpoint: Endpoint) -> Any:
    def patch(runnable: dict[str, Any]) -> None:
        llms = runnable.get("llms") or {}
        names = spec.nat.llm_names or sorted(llms)
        missing = [n for n in names if n not in llms]
        if missing or not names:
            raise nat_mod.NatInputError(f"spec.nat.llmNames {missing or names} are not in the NAT config's llms "
                                        f"({', '.join(sorted(llms)) or 'none'})")
        for name in names:
            entry = llms[name]
            entry.pop("model", None)
            entry.update(base_url=endpoint.base_url, model_name=endpoint.model, temperature=spec.sampling.temperature)
            if endpoint.api_key:
                entry["api_key"] = endpoint.api_key
    return patch


async def nat_side(spec: DPOEvaluationSpec, config_file: Path, dataset: Path, ids: list[str], endpoint: Endpoint,
                   evaluator: str, scratch: Path) -> SideScores:
    """Run the workflow over ``dataset`` (the selected entries) against ``endpoint``; the evaluator's per-item
    scores in the order of ``ids``."""
    from nat.data_models.evaluate_config import EvalOutputConfig
    from nat.data_models.evaluate_runtime import EvaluationRunConfig
    from nat.plugins.eval.runtime.evaluate import EvaluationRun

    config = nat_mod.load_runnable_config(config_file, dataset_given=True, patch=_point_llms(spec, endpoint))
    general = config.eval.general
    general.output_dir = scratch
    general.output = general.output or EvalOutputConfig(dir=scratch)
    general.output.dir = scratch
    if spec.workflow.max_concurrent_episodes is not None:
        general.max_concurrency = spec.workflow.max_concurrent_episodes
    run = EvaluationRun(config=EvaluationRunConfig(config_file=config, dataset=str(dataset)))
    result = await run.run_and_evaluate()
    side = SideScores(scores=[None] * len(ids))
    side.details = [{"id": i} for i in ids]
    outputs = {str(item.id): item.output_obj for item in result.eval_input.eval_input_items}
    scored = dict(result.evaluation_results).get(evaluator)
    items = {str(item.id): item for item in (scored.eval_output_items if scored is not None else [])}
    for index, item_id in enumerate(ids):
        detail, item = side.details[index], items.get(item_id)
        output = outputs.get(item_id)
        detail["answer"] = None if output is None else str(output)[:500]
        if output is None or (result.workflow_interrupted and output == ""):
            # the workflow failed on it, or NAT's runner stopped first (it leaves the dataset's empty output): the
            # evaluator scored nothing the model said
            side.fail(WORKFLOW_ERROR, f"item {item_id}: the NAT workflow produced no output"
                      + (" (NAT's runner stopped on a workflow error, e.g. an endpoint that failed: see the pod log)"
                         if result.workflow_interrupted else ""))
            detail["error"] = WORKFLOW_ERROR
            continue
        if item is None:
            reason = WORKFLOW_ERROR if result.workflow_interrupted else NO_SCORE
            side.fail(reason, f"item {item_id}: no {evaluator} score"
                              + (" (NAT's runner stopped on a workflow error)" if result.workflow_interrupted else ""))
            detail["error"] = reason
            continue
        if item.error:
            side.fail(EVALUATOR_ERROR, f"item {item_id}: {item.error}")
            detail["error"] = EVALUATOR_ERROR
            continue
        try:
            value = float(item.score)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or isinstance(item.score, bool):
            side.fail(NON_FINITE_SCORE, f"item {item_id}: evaluator {evaluator} scored {item.score!r}")
            detail["error"] = NON_FINITE_SCORE
            continue
        side.scores[index] = detail["score"] = value
    return side
