"""NeMo Agent Toolkit (NAT) workflows as a candidate source: their ``TTC_END`` steps become candidate events.

A NAT workflow that collects preference data emits, per candidate, a ``TTC_END`` intermediate step named e.g.
``dpo_candidate_move`` whose ``data`` is a ``TTCEventData`` (``turn_id``, ``turn_index``, ``candidate_index``,
``input``, ``output``, ``score``). The steps come either from running the workflow here with NAT's evaluation
runner (:func:`run_nat_eval`, which needs the ``[nat]`` extra), or from the ``workflow_output.json`` files that
``nat eval`` writes (:func:`read_workflow_output`). Both give the same items: ``{"id": ..., "intermediate_steps":
[step, ...]}`` with each step as NAT serialises an ``IntermediateStep``. :func:`nat_runs` lays out a
DPOCollection's runs from either source. This module imports NAT only inside
:func:`evaluate`; the operator never imports it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from dpo_operator.api.collection import (
    NAT_CONFIG_DIR,
    NAT_CONFIG_ENV,
    NAT_DATASET_DIR,
    NAT_DATASET_ENV,
    NAT_OUTPUT_ENV,
    DPOCollectionSpec,
    NatWorkflowSpec,
)
from dpo_operator.collect.events import CandidateCheck, CandidateEvent, RunOutput

TTC_END = "TTC_END"
WORKFLOW_OUTPUT = "workflow_output.json"
ID_KEY, STEPS_KEY = "id", "intermediate_steps"  # NAT's default dataset structure keys


class NatError(RuntimeError):
    """A NAT run or a NAT output file cannot yield candidates; the message says why."""


class NatInputError(NatError, ValueError):
    """The NAT input itself is wrong (a missing or malformed file, no NAT in the image): no retry can fix it, so
    the collector exits with code 3 (a ValueError, see cli._exit_code)."""


class StepNameMismatch(NatError, ValueError):
    """No TTC_END step carries the configured name: no retry can help (a ValueError: the pod exits 3)."""


def _payload(step: Any) -> dict[str, Any]:
    payload = step.get("payload") if isinstance(step, dict) else None
    return payload if isinstance(payload, dict) else {}


def is_candidate_step(step: Any, step_names: str | Collection[str]) -> bool:
    """A ``TTC_END`` step with a configured name (what NAT's ``dpo_traj_builder`` collects)."""
    payload = _payload(step)
    names = (step_names,) if isinstance(step_names, str) else step_names
    return payload.get("event_type") == TTC_END and payload.get("name") in names


def _mismatch(step_names: Collection[str], seen: Counter[str], items: int) -> StepNameMismatch:
    wanted = ", ".join(repr(n) for n in step_names)
    if not seen:
        return StepNameMismatch(f"no TTC_END steps at all in {items} evaluation items (looking for {wanted}): the "
                                "workflow records no TTC candidates (TTCEventData pushed as TTC_END steps)")
    found = ", ".join(f"{name!r} ({count})" for name, count in seen.most_common(10))
    return StepNameMismatch(f"no TTC_END step is named {wanted}; the workflow's TTC_END steps are named {found}: set "
                            "workflow.nat.ttcStepName (or the config's trajectory_builders.<builder>.ttc_step_name) "
                            "to the workflow's step name")


def candidates_from_items(items: Iterable[dict[str, Any]], step_names: str | Collection[str],
                          check: CandidateCheck) -> list[CandidateEvent]:
    """The checked candidates of one run's evaluation items, in emission order (example by example).

    A run in which no ``TTC_END`` step carries a configured name fails at once, naming the names it saw.
    """
    events: list[CandidateEvent] = []
    seen: Counter[str] = Counter()
    matched, count = 0, 0
    for item in items:
        count += 1
        example_id = item.get(ID_KEY)
        for step in item.get(STEPS_KEY) or []:
            if _payload(step).get("event_type") == TTC_END:
                seen[str(_payload(step).get("name"))] += 1
            if not is_candidate_step(step, step_names):
                continue
            matched += 1
            data = _payload(step).get("data")
            raw = dict(data) if isinstance(data, dict) else {}
            raw["example_id"] = example_id
            event = check.raw(raw)
            if event is not None:
                events.append(event)
    if not matched and count:
        raise _mismatch((step_names,) if isinstance(step_names, str) else step_names, seen, count)
    return events


def workflow_output_files(path: Path) -> list[Path]:
    """``path`` itself, or every ``workflow_output.json`` below the directory ``path`` (sorted: one run each)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(path.rglob(WORKFLOW_OUTPUT))
        if files:
            return files
        raise NatInputError(f"no {WORKFLOW_OUTPUT} under {path}")
    raise NatInputError(f"NAT workflow output {path} does not exist")


def read_workflow_output(path: Path) -> list[dict[str, Any]]:
    """The items of a ``workflow_output.json`` (written with ``workflow_output_step_filter: [TTC_END]``)."""
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NatInputError(f"cannot read NAT workflow output {path}: {exc}") from None
    if not isinstance(items, list) or not all(isinstance(i, dict) and STEPS_KEY in i for i in items):
        raise NatInputError(f"{path} is not a NAT workflow output: expected a list of items with {STEPS_KEY!r} "
                       "(a structured dataset; an unstructured one has no intermediate steps)")
    return items


async def evaluate(config_file: Path, output_dir: Path, *, dataset: Path | None = None,
                   max_concurrency: int | None = None) -> Any:
    """Run the NAT workflow of ``config_file`` over its dataset once, with NAT's own evaluation runner.

    The workflow runs unchanged; only where NAT writes its output (``output_dir``, with only ``TTC_END`` steps in
    ``workflow_output.json``) and, when given, the dataset file and ``eval.general.max_concurrency`` are set.
    Returns NAT's ``EvaluationRunOutput``.
    """
    try:
        from nat.data_models.evaluate_config import EvalOutputConfig
        from nat.data_models.evaluate_runtime import EvaluationRunConfig
        from nat.data_models.intermediate_step import IntermediateStepType
        from nat.plugins.eval.runtime.evaluate import EvaluationRun
    except ImportError as exc:
        raise NatInputError("NAT workflows need NeMo Agent Toolkit: the workload image's NAT environment "
                            f"($DPO_NAT_PYTHON, /opt/nat), or the [nat] extra: {exc}") from None

    config = load_runnable_config(config_file, dataset_given=dataset is not None)
    general = config.eval.general
    general.output_dir = output_dir
    if general.output is None:
        general.output = EvalOutputConfig(dir=output_dir)
    general.output.dir = output_dir
    general.output.workflow_output_step_filter = [IntermediateStepType.TTC_END]
    if max_concurrency is not None:
        general.max_concurrency = max_concurrency
    run = EvaluationRun(config=EvaluationRunConfig(config_file=config, dataset=str(dataset) if dataset else None))
    return await run.run_and_evaluate()


def _resolve_dataset(config: dict[str, Any], config_dir: Path) -> None:
    """A relative ``eval.general.dataset.file_path`` names a file next to the config (or, as NAT's repository
    examples write it, below one of the config's parent directories); the working directory comes last."""
    dataset = ((config.get("eval") or {}).get("general") or {}).get("dataset")
    file_path = dataset.get("file_path") if isinstance(dataset, dict) else None
    if not isinstance(file_path, str) or not file_path or Path(file_path).is_absolute():
        return
    bases = [config_dir, *config_dir.parents, Path.cwd()]
    for base in bases:
        if (base / file_path).exists():
            dataset["file_path"] = str(base / file_path)
            return
    raise NatInputError(f"eval.general.dataset.file_path {file_path!r} is not next to the NAT config ({config_dir}), under "
                   "one of its parent directories, nor in the working directory: give an absolute path, or the "
                   "dataset by workflow.nat.datasetRef")


def load_runnable_config(config_file: Path, *, dataset_given: bool = False,
                         patch: Callable[[dict[str, Any]], None] | None = None) -> Any:
    """The NAT ``Config`` of the sections the collection pod runs.

    The ``nat finetune`` sections (``trajectory_builders``, ``trainers``, ``trainer_adapters``, ``finetuning``)
    are read as settings, never run: they are left out before NAT validates the file, so their plugins need not
    be installed and ``${VAR}`` references in them need no value. NAT's own reading applies to the rest
    (``${VAR:-default}``, ``file://`` references relative to the config); ``patch`` may change the rest first.
    """
    import yaml
    from nat.data_models.config import Config
    from nat.runtime.loader import PluginTypes, discover_and_register_plugins
    from nat.utils.data_models.schema_validator import validate_schema
    from nat.utils.io.yaml_tools import yaml_load, yaml_loads

    from dpo_operator.collect import nat_finetune

    if not config_file.is_file():
        raise NatInputError(f"NAT config {config_file} does not exist")
    raw = nat_finetune.load(config_file)
    if "base" in raw:  # NAT's config inheritance: NAT reads the chain
        raw = yaml_load(config_file)
    runnable = {k: v for k, v in raw.items() if k not in nat_finetune.FINETUNE_SECTIONS}
    if patch is not None:  # e.g. a DPOEvaluation points the config's llms at the endpoint under test
        patch(runnable)
    config_dir = config_file.resolve().parent
    loaded = yaml_loads(yaml.safe_dump(runnable), config_dir)
    if not dataset_given:
        _resolve_dataset(loaded, config_dir)
    discover_and_register_plugins(PluginTypes.CONFIG_OBJECT)
    return validate_schema(loaded, Config)


def items_of(result: Any) -> list[dict[str, Any]]:
    """The evaluation items of an ``EvaluationRunOutput``, as ``workflow_output.json`` holds them."""
    return [{ID_KEY: item.id, STEPS_KEY: [step.model_dump(mode="json") for step in item.trajectory]}
            for item in result.eval_input.eval_input_items]


def evaluator_reward(result: Any, name: str) -> float | None:
    """The mean reward the evaluator ``name`` gave this run's examples, as NAT computes a reward from an
    evaluator's item (``TrajectoryBuilder.compute_reward``: its score, 0.0 without one); None if it did not run."""
    for metric, output in result.evaluation_results:
        if metric != name:
            continue
        rewards = []
        for item in output.eval_output_items:
            try:
                rewards.append(float(item.score) if item.score is not None else 0.0)
            except (TypeError, ValueError):
                raise NatInputError(f"finetuning.reward_function names evaluator {name!r}, whose scores are not "
                                    f"numbers (item {item.id!r}: {item.score!r}): name a numeric evaluator") from None
        return sum(rewards) / len(rewards) if rewards else 0.0
    return None


async def _checked_eval(config_file: Path, output_dir: Path, dataset: Path | None, max_concurrency: int | None) -> Any:
    result = await evaluate(config_file, output_dir, dataset=dataset, max_concurrency=max_concurrency)
    if result.workflow_interrupted:
        raise NatError("the NAT workflow failed on an example and NAT's evaluation runner stopped (see the pod log)")
    return result


async def run_nat_eval(config_file: Path, output_dir: Path, *, dataset: Path | None = None,
                       max_concurrency: int | None = None) -> list[dict[str, Any]]:
    """One evaluation run's items; a run that NAT's runner stopped on a workflow error is an error."""
    return items_of(await _checked_eval(config_file, output_dir, dataset, max_concurrency))


def nat_config_file(nat: NatWorkflowSpec) -> Path:
    """The NAT config: a path in the image, or the ConfigMap file the operator mounted (``$DPO_NAT_CONFIG``)."""
    if nat.config_file is not None:
        return Path(nat.config_file)
    return Path(os.environ.get(NAT_CONFIG_ENV) or NAT_CONFIG_DIR + "/" + nat.config_map_ref.key)  # type: ignore[union-attr]


def nat_dataset_file(nat: NatWorkflowSpec) -> Path | None:
    if nat.dataset_ref is None:
        return None
    return Path(os.environ.get(NAT_DATASET_ENV) or NAT_DATASET_DIR + "/" + nat.dataset_ref.key)


def nat_workflow_output(nat: NatWorkflowSpec, data_root: Path) -> Path:
    """The offline NAT output: ``$DPO_NAT_WORKFLOW_OUTPUT`` (set by the operator) or the path under the data root."""
    assert nat.workflow_output is not None
    return Path(os.environ.get(NAT_OUTPUT_ENV) or data_root / nat.workflow_output.path.lstrip("/"))


def nat_runs(spec: DPOCollectionSpec, data_root: Path, scratch: Path, check: CandidateCheck,
             step_names: Collection[str] | None = None, reward_function: str | None = None,
             ) -> Iterator[tuple[str, Callable[[], Awaitable[RunOutput]]]]:
    """(label, thunk) per run: offline, one per workflow_output.json file; else ``numRuns`` NAT evaluation runs
    (with ``reward_function``, that evaluator's average score per run)."""
    nat = spec.workflow.nat
    assert nat is not None
    names = tuple(step_names) if step_names else (nat.ttc_step_name,)
    if nat.workflow_output is not None:
        for path in workflow_output_files(nat_workflow_output(nat, data_root)):
            async def offline(path: Path = path) -> RunOutput:
                return RunOutput(candidates_from_items(read_workflow_output(path), names, check))
            yield str(path), offline
        return
    config, dataset_file = nat_config_file(nat), nat_dataset_file(nat)
    for run in range(spec.num_runs):
        async def live(run: int = run) -> RunOutput:
            result = await _checked_eval(config, scratch / f"run-{run}", dataset_file,
                                         spec.workflow.max_concurrent_episodes)
            events = candidates_from_items(items_of(result), names, check)
            if reward_function is None:
                return RunOutput(events)
            reward = evaluator_reward(result, reward_function)
            if reward is None:
                raise NatInputError(f"finetuning.reward_function names evaluator {reward_function!r}, which NAT's "
                                    "evaluation did not run: add it to eval.evaluators")
            return RunOutput(events, (reward_function, reward))
        yield f"{run + 1}/{spec.num_runs}", live
