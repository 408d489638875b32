"""A small NeMo Agent Toolkit workflow for the evaluation tests: one LLM call per question, scored by an evaluator.

Each dataset question is a tic-tac-toe board (9 characters). The workflow asks the LLM named in its config (an
``openai`` entry of the config's ``llms``: ``base_url``, ``model_name``, ``api_key``) for a move with the built-in
workflow's prompt, one response, and returns the answer. The evaluator ``dpo_move_value`` scores the answer by the
exact value of the move (-2 for an unparsable or illegal one), as the built-in workflow's scorer does. Registered
through the ``nat.components`` entry point of the ``dist-info`` next to it, as an installed package would be.
"""

from __future__ import annotations

import httpx
from nat.builder.builder import Builder, EvalBuilder
from nat.builder.evaluator import EvaluatorInfo
from nat.builder.function_info import FunctionInfo
from nat.cli.register_workflow import register_evaluator, register_function
from nat.data_models.component_ref import LLMRef
from nat.data_models.evaluator import EvalInputItem, EvaluatorBaseConfig
from nat.data_models.function import FunctionBaseConfig
from nat.plugins.eval.data_models.evaluator_io import EvalOutputItem
from nat.plugins.eval.evaluator.base_evaluator import BaseEvaluator

from dpo_operator.collect import tictactoe as ttt


class AskWorkflowConfig(FunctionBaseConfig, name="dpo_ask"):
    llm: LLMRef


@register_function(config_type=AskWorkflowConfig)
async def ask_workflow(config: AskWorkflowConfig, builder: Builder):  # noqa: ANN201
    llm = builder.get_llm_config(config.llm)
    key = llm.api_key.get_secret_value() if getattr(llm, "api_key", None) else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    async def _ask(board: str) -> str:
        body = {"model": llm.model_name, "messages": ttt.prompt_for(board), "max_tokens": 8,
                "temperature": llm.temperature or 0.0, "seed": 1}
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(f"{llm.base_url.rstrip('/')}/chat/completions", json=body, headers=headers)
            response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"]

    yield FunctionInfo.from_fn(_ask, description="Ask the LLM for a tic-tac-toe move.")


class MoveValueConfig(EvaluatorBaseConfig, name="dpo_move_value"):
    pass


class MoveValue(BaseEvaluator):
    async def evaluate_item(self, item: EvalInputItem) -> EvalOutputItem:
        board, answer = str(item.input_obj), str(item.output_obj)
        return EvalOutputItem(id=item.id, score=ttt.score_move(board, answer), reasoning={"answer": answer})


@register_evaluator(config_type=MoveValueConfig)
async def move_value_evaluator(config: MoveValueConfig, builder: EvalBuilder):  # noqa: ANN201
    yield EvaluatorInfo(config=config, evaluate_fn=MoveValue(builder.get_max_concurrency()).evaluate,
                        description="the exact value of the proposed move (-2: unparsable or illegal)")
