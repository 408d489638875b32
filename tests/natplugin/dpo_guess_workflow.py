"""A small NeMo Agent Toolkit workflow for the tests: a number-guessing agent with test-time compute.

Each dataset question names a secret number. For ``turns`` turns the agent proposes ``candidates`` guesses
(a deterministic stand-in for sampling an LLM: no network), scores each by how close it is, records every
candidate as a ``TTC_START``/``TTC_END`` step pair named ``dpo_candidate_move`` carrying ``TTCEventData`` (as
NAT's DPO tic-tac-toe example does), and goes on with the best one. Guesses repeat and tie on purpose.
An evaluator scores the final guess (NAT writes ``workflow_output.json`` only when some evaluator ran).
Both are registered with NAT through the ``nat.components`` entry point of the ``dist-info`` next to it, as an
installed workflow package would be.
"""

from __future__ import annotations

import hashlib
import re
import uuid

from nat.builder.builder import Builder, EvalBuilder
from nat.builder.context import Context
from nat.builder.evaluator import EvaluatorInfo
from nat.builder.function_info import FunctionInfo
from nat.cli.register_workflow import register_evaluator, register_function
from nat.data_models.evaluator import EvalInputItem, EvaluatorBaseConfig

from nat.data_models.function import FunctionBaseConfig
from nat.data_models.intermediate_step import IntermediateStepPayload, IntermediateStepType, TTCEventData
from nat.plugins.eval.data_models.evaluator_io import EvalOutputItem
from nat.plugins.eval.evaluator.base_evaluator import BaseEvaluator


class GuessWorkflowConfig(FunctionBaseConfig, name="dpo_guess"):
    candidates: int = 4
    turns: int = 2
    step_name: str = "dpo_candidate_move"


def propose(question: str, turn: int, index: int) -> str:
    digest = hashlib.sha256(f"{question}|{turn}|{index}".encode()).digest()
    return str(digest[0] % 10)


@register_function(config_type=GuessWorkflowConfig)
async def guess_workflow(config: GuessWorkflowConfig, builder: Builder):  # noqa: ANN201, ARG001
    async def _play(question: str) -> str:
        steps = Context.get().intermediate_step_manager
        secret = int(re.search(r"\d+", question).group())
        history = [{"role": "system", "content": "Guess the secret number (0-9). Answer with one digit."},
                   {"role": "user", "content": question}]
        best = ""
        for turn in range(config.turns):
            turn_id = f"turn_{turn}_{uuid.uuid4().hex[:8]}"
            guesses = [propose(question, turn, i) for i in range(config.candidates)]
            scores = [-abs(int(g) - secret) / 10 for g in guesses]
            chosen = max(range(len(guesses)), key=lambda i: scores[i])
            for index, (guess, score) in enumerate(zip(guesses, scores, strict=True)):
                step_id = str(uuid.uuid4())
                steps.push_intermediate_step(IntermediateStepPayload(
                    event_type=IntermediateStepType.TTC_START, name=config.step_name, UUID=step_id))
                steps.push_intermediate_step(IntermediateStepPayload(
                    event_type=IntermediateStepType.TTC_END, name=config.step_name, UUID=step_id,
                    data=TTCEventData(turn_id=turn_id, turn_index=turn, candidate_index=index,
                                      input=list(history), output=guess, score=score),
                    metadata={"is_selected": index == chosen}))
            best = guesses[chosen]
            history = [*history, {"role": "assistant", "content": best},
                       {"role": "user", "content": "higher" if int(best) < secret else "lower or equal"}]
        return best

    yield FunctionInfo.from_fn(_play, description="Guess a secret number with test-time compute.")


class GuessEvaluatorConfig(EvaluatorBaseConfig, name="dpo_guess_exact"):
    pass


class ExactGuess(BaseEvaluator):
    async def evaluate_item(self, item: EvalInputItem) -> EvalOutputItem:
        hit = str(item.output_obj) == str(item.expected_output_obj)
        return EvalOutputItem(id=item.id, score=1.0 if hit else 0.0, reasoning={"guess": str(item.output_obj)})


@register_evaluator(config_type=GuessEvaluatorConfig)
async def exact_guess_evaluator(config: GuessEvaluatorConfig, builder: EvalBuilder):  # noqa: ANN201
    yield EvaluatorInfo(config=config, evaluate_fn=ExactGuess(builder.get_max_concurrency()).evaluate,
                        description="1 when the final guess is the secret number")
