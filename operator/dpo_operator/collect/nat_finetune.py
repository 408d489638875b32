"""The ``nat finetune`` sections of a NAT config, read as plain YAML (no NAT import, no plugin needed).

A NAT user's config names a trajectory builder (``dpo_traj_builder``), a trainer (``nemo_customizer_trainer``) and
a trainer adapter (``nemo_customizer_trainer_adapter``) from ``nvidia-nat-nemo-customizer``. The collector reads
the first two as a DPOCollection's settings where the CR does not set them, and ``dpo-operator from-nat`` maps all
three onto our resources. Defaults are NAT 1.9.0's (``nat.plugins.customizer.dpo.config``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

FINETUNE_SECTIONS = ("trajectory_builders", "trainers", "trainer_adapters", "finetuning")
BUILDER_TYPE, TRAINER_TYPE, ADAPTER_TYPE = "dpo_traj_builder", "nemo_customizer_trainer", "nemo_customizer_trainer_adapter"

BUILDER_DEFAULTS: dict[str, Any] = {
    "ttc_step_name": "dpo_candidate_move", "exhaustive_pairs": True, "min_score_diff": 0.0,
    "max_pairs_per_turn": None, "reward_from_score_diff": True, "require_multiple_candidates": True}
TRAINER_DEFAULTS: dict[str, Any] = {
    "num_runs": 1, "continue_on_collection_error": False, "deduplicate_pairs": True, "max_pairs": None,
    "wait_for_completion": True}
HYPERPARAMETER_DEFAULTS: dict[str, Any] = {
    "training_type": "dpo", "finetuning_type": "all_weights", "epochs": 3, "batch_size": 4, "learning_rate": 5e-5,
    "dpo": {"ref_policy_kl_penalty": 0.1, "preference_loss_weight": 1.0, "preference_average_log_probs": False,
            "sft_loss_weight": 0.0}}
ADAPTER_DEFAULTS: dict[str, Any] = {
    "hf_token": "", "dataset_name": "nat-dpo", "dataset_output_dir": None, "create_namespace_if_missing": True,
    "hyperparameters": HYPERPARAMETER_DEFAULTS, "use_full_message_history": False, "deploy_on_completion": False,
    "deployment_config": {"image_name": "nvcr.io/nim/meta/llama-3.1-8b-instruct", "image_tag": "latest", "gpu": 1,
                          "deployment_name": None, "description": "Fine-tuned model deployment"},
    "poll_interval_seconds": 30.0, "deployment_timeout_seconds": 1800.0, "max_consecutive_status_failures": 3}
OLD_STEP_KEY = "custom_step_name"


class NatConfigError(ValueError):
    """The NAT config cannot be read or is inconsistent; the message names the key."""


def load(path: Path) -> dict[str, Any]:
    """The config as YAML (``${VAR}`` references left as written: nothing here needs their values)."""
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise NatConfigError(f"cannot read NAT config {path}: {exc}") from None
    if not isinstance(config, dict):
        raise NatConfigError(f"NAT config {path} is not a YAML mapping")
    return config


def apply_overrides(config: dict[str, Any], overrides: list[tuple[str, str]]) -> dict[str, Any]:
    """``nat finetune -o key value`` as NAT applies it: dotted paths; the value takes the existing value's type
    (bool from true/false, int, float, a comma-separated list); a new key gets the value as YAML reads it."""
    result = copy.deepcopy(config)
    for path, value in overrides:
        parts = path.split(".")
        node = result
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise NatConfigError(f"-o {path}: '{'.'.join(parts[:i + 1])}' is not a mapping")
            node = child
        old = node.get(parts[-1])
        try:
            if isinstance(old, bool):
                if value.strip().lower() not in ("true", "false"):
                    raise ValueError(f"expected true or false, got {value!r}")
                new: Any = value.strip().lower() == "true"
            elif isinstance(old, int | float):
                new = type(old)(value)
            elif isinstance(old, list):
                new = [v.strip() for v in value.split(",")]
            elif parts[-1] in node and isinstance(old, str):
                new = value
            else:
                new = yaml.safe_load(value)
        except (ValueError, yaml.YAMLError) as exc:
            raise NatConfigError(f"-o {path} {value}: {exc}") from None
        node[parts[-1]] = new
    return result


def _section(config: dict[str, Any], section: str, selector: str, type_name: str) -> tuple[str, dict[str, Any]] | None:
    """The entry ``finetuning.<selector>`` names, else the only entry of ``type_name``; None when there is none."""
    entries = config.get(section) or {}
    if not isinstance(entries, dict):
        raise NatConfigError(f"{section} must be a mapping of names to components")
    chosen = (config.get("finetuning") or {}).get(selector)
    if chosen is not None:
        if chosen not in entries:
            raise NatConfigError(f"finetuning.{selector} names '{chosen}', which is not in {section} "
                                 f"(it has: {', '.join(entries) or 'nothing'})")
        entry = entries[chosen]
        name = str(chosen)
    else:
        typed = [(n, e) for n, e in entries.items() if isinstance(e, dict) and e.get("_type") == type_name]
        if not typed:
            return None
        if len(typed) > 1:
            raise NatConfigError(f"{section} has several {type_name} entries ({', '.join(n for n, _ in typed)}); "
                                 f"name one in finetuning.{selector}")
        name, entry = typed[0]
    if not isinstance(entry, dict):
        raise NatConfigError(f"{section}.{name} must be a mapping")
    if entry.get("_type") != type_name:
        raise NatConfigError(f"{section}.{name} is a '{entry.get('_type')}', not a {type_name}: only NeMo "
                             "Customizer's DPO components have an equivalent here")
    return name, entry


def builder(config: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    return _section(config, "trajectory_builders", "trajectory_builder", BUILDER_TYPE)


def trainer(config: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    return _section(config, "trainers", "trainer", TRAINER_TYPE)


def adapter(config: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    return _section(config, "trainer_adapters", "trainer_adapter", ADAPTER_TYPE)


def step_names(value: Any, where: str) -> tuple[str, ...]:
    """``ttc_step_name`` as a name or a list of names (candidates are the TTC_END steps with any of them)."""
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise NatConfigError(f"{where}: expected a step name or a list of step names, got {value!r}")
    return tuple(names)


def old_step_key_warning(name: str, entry: dict[str, Any]) -> str | None:
    """NVIDIA's example still writes ``custom_step_name``, which NAT 1.9.0 ignores without a word."""
    if OLD_STEP_KEY not in entry:
        return None
    effective = entry.get("ttc_step_name", BUILDER_DEFAULTS["ttc_step_name"])
    return (f"trajectory_builders.{name}.{OLD_STEP_KEY} ({entry[OLD_STEP_KEY]!r}) is not a dpo_traj_builder field "
            f"and is ignored (by NAT too); the step name is ttc_step_name ({effective!r}"
            f"{'' if 'ttc_step_name' in entry else ', its default'}): rename the key")


def reward_function(config: dict[str, Any]) -> str | None:
    """The evaluator ``finetuning.reward_function.name`` names (NAT's reward), checked against ``eval.evaluators``."""
    reward = (config.get("finetuning") or {}).get("reward_function")
    if reward is None:
        return None
    name = reward.get("name") if isinstance(reward, dict) else None
    if not isinstance(name, str) or not name:
        raise NatConfigError(f"finetuning.reward_function must be a mapping with the evaluator's name "
                             f"(name: <evaluator>), got {reward!r}")
    evaluators = ((config.get("eval") or {}).get("evaluators")) or {}
    if "base" not in config and isinstance(evaluators, dict) and name not in evaluators:
        raise NatConfigError(f"finetuning.reward_function.name names {name!r}, which is not in eval.evaluators "
                             f"(it has: {', '.join(evaluators) or 'nothing'})")
    return name
