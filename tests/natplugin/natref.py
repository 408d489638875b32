"""NAT's own pair builder (``dpo_traj_builder`` of nvidia-nat-nemo-customizer 1.9.0) run on NAT evaluation items.

The reference for our capture and pair builder. It needs ``nat.plugins.customizer``, which is not in the test
extras (its huggingface-hub<2 pin conflicts with ours): ``record_reference.py`` runs it in a separate venv and
stores its pairs in ``nat_reference_pairs.json``; the tests compare against the live builder when it is
importable, and against that recording otherwise.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any


def nat_builder_pairs(items: list[dict[str, Any]], step_name: str, *, exhaustive: bool = True,
                      min_score_diff: float = 0.0, max_pairs_per_turn: int | None = None) -> list[dict[str, Any]]:
    """Pairs as NAT's DPOTrajectoryBuilder yields them (its start_run/finalize), in its order."""
    from nat.data_models.evaluator import EvalInput, EvalInputItem
    from nat.data_models.intermediate_step import IntermediateStep
    from nat.plugins.customizer.dpo.config import DPOTrajectoryBuilderConfig
    from nat.plugins.customizer.dpo.trajectory_builder import DPOTrajectoryBuilder

    eval_input = EvalInput(eval_input_items=[
        EvalInputItem(id=item["id"], input_obj=None, expected_output_obj=None, full_dataset_entry=None,
                      trajectory=[IntermediateStep.model_validate(step) for step in item["intermediate_steps"]])
        for item in items])
    builder = DPOTrajectoryBuilder(DPOTrajectoryBuilderConfig(
        ttc_step_name=step_name, exhaustive_pairs=exhaustive, min_score_diff=min_score_diff,
        max_pairs_per_turn=max_pairs_per_turn))

    async def evaluated() -> Any:  # the evaluation has already run: hand its output to the builder
        return SimpleNamespace(eval_input=eval_input)

    async def build() -> Any:
        builder.run_eval = evaluated  # type: ignore[method-assign]
        await builder.start_run("reference")
        return await builder.finalize("reference")

    collection = asyncio.run(build())
    pairs = []
    for group in collection.trajectories:
        for trajectory in group:
            item = trajectory.episode[0]
            prompt = item.prompt if isinstance(item.prompt, str) else [m.model_dump() for m in item.prompt]
            pairs.append({"prompt": prompt, "chosen": item.chosen_response, "rejected": item.rejected_response,
                          "score_diff": trajectory.metadata["score_diff"], "example_id": trajectory.metadata["example_id"],
                          "turn_id": trajectory.metadata["turn_id"]})
    return pairs
