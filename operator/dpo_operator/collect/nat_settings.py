"""A NAT workflow's collection settings: the CR's where it sets them, else the NAT config's finetune sections.

``trajectory_builders.<dpo_traj_builder>`` gives the pairing and the TTC step name(s), ``trainers.<nemo_customizer_
trainer>`` the runs, deduplication, sampling and error handling. The CR wins; ``metrics.json`` (``settings``) says
where each effective value came from: ``spec``, ``natConfig:<key>`` or ``default``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dpo_operator.api.collection import DPOCollectionSpec
from dpo_operator.collect import nat_finetune as nf

SPEC_FIELDS_ENV = "DPO_SPEC_FIELDS_SET"  # the spec fields the CR sets (the pod's spec JSON has every default filled)

# spec field -> (NAT key, conversion)
Mapping = dict[str, tuple[str, Callable[[Any], Any]]]
FROM_BUILDER: Mapping = {
    "pairing.strategy": ("exhaustive_pairs", lambda v: "exhaustive" if v else "bestVsWorst"),
    "pairing.minScoreDiff": ("min_score_diff", float),
    "pairing.maxPairsPerTurn": ("max_pairs_per_turn", lambda v: v),
    "pairing.rewardFromScoreDiff": ("reward_from_score_diff", bool),
    "pairing.requireMultipleCandidates": ("require_multiple_candidates", bool),
}
FROM_TRAINER: Mapping = {
    "numRuns": ("num_runs", int),
    "continueOnCollectionError": ("continue_on_collection_error", bool),
    "deduplicatePairs": ("deduplicate_pairs", bool),
    "maxPairs": ("max_pairs", lambda v: v),
}
STEP_FIELD = "workflow.nat.ttcStepName"


def fields_set(model: BaseModel, prefix: str = "") -> set[str]:
    """The camelCase paths of the fields a spec sets explicitly (nested models included)."""
    out: set[str] = set()
    for name in model.model_fields_set:
        info = type(model).model_fields[name]
        path = prefix + (info.alias or name)
        out.add(path)
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out |= fields_set(value, path + ".")
    return out


@dataclass
class Settings:
    spec: DPOCollectionSpec
    step_names: tuple[str, ...]
    sources: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    reward_function: str | None = None  # the evaluator finetuning.reward_function names (live runs only)


def _cr_fields(spec: DPOCollectionSpec) -> set[str]:
    given = os.environ.get(SPEC_FIELDS_ENV)
    return set(json.loads(given)) if given else fields_set(spec)


def resolve(spec: DPOCollectionSpec, config_file: Path | None) -> Settings:
    """The effective settings of a NAT collection (``config_file`` None: offline input, no config to read)."""
    nat = spec.workflow.nat
    assert nat is not None
    given = _cr_fields(spec)
    config = nf.load(config_file) if config_file is not None else {}
    built, trained = nf.builder(config), nf.trainer(config)
    updates: dict[str, Any] = {}
    settings = Settings(spec, (nat.ttc_step_name,), reward_function=nf.reward_function(config))
    for table, found, section in ((FROM_BUILDER, built, "trajectory_builders"), (FROM_TRAINER, trained, "trainers")):
        for path, (key, convert) in table.items():
            if path in given:
                settings.sources[path] = "spec"
            elif found is not None and key in found[1]:
                updates[path] = convert(found[1][key])
                settings.sources[path] = f"natConfig:{section}.{found[0]}.{key}"
            else:
                settings.sources[path] = "default"
    if STEP_FIELD in given:
        settings.sources[STEP_FIELD] = "spec"
    elif built is not None and "ttc_step_name" in built[1]:
        key = f"trajectory_builders.{built[0]}.ttc_step_name"
        settings.step_names = nf.step_names(built[1]["ttc_step_name"], key)
        settings.sources[STEP_FIELD] = f"natConfig:{key}"
    else:
        settings.sources[STEP_FIELD] = "default"
    if built is not None and (warning := nf.old_step_key_warning(*built)) is not None:
        settings.warnings.append(warning)
    pairing = {k.split(".", 1)[1]: v for k, v in updates.items() if k.startswith("pairing.")}
    top = {k: v for k, v in updates.items() if not k.startswith("pairing.")}
    data = spec.model_dump(by_alias=True)
    data["pairing"].update(pairing)
    data.update(top)
    try:
        settings.spec = DPOCollectionSpec.model_validate(data)
    except ValueError as exc:
        raise nf.NatConfigError(f"the NAT config's finetune sections give invalid settings: {exc}") from None
    return settings
