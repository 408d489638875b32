"""The trainer's start-up guards: the shared-prompt check scores the longest pairs (a sliding window shows only
past its length), and a model whose log-probs through its head path differ from its own forward is refused."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from dpo_operator.train.data import EncodedPair, longest_pairs  # noqa: E402
from dpo_operator.train.distributed import DDP, Environment  # noqa: E402
from dpo_operator.train.logprobs import CompletionLogps  # noqa: E402
from dpo_operator.train.precision import MixedPrecision  # noqa: E402
from dpo_operator.train.trainer import Trainer  # noqa: E402

pytestmark = pytest.mark.workload

CONFIG = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "max_position_embeddings": 64, "pad_token_id": 0, "bos_token_id": 1,
          "eos_token_id": 2}
SHORT = [EncodedPair([1, 10], [20, 2], [30, 2]), EncodedPair([1, 11], [21, 2], [31, 2])]  # within a window of 4
LONG = [EncodedPair([1, *range(10, 19)], [20, 21, 22, 23, 2], [30, 31, 32, 2]),
        EncodedPair([1, *range(40, 52)], [24, 2], [33, 34, 2])]


class ListDataset(list):
    """EncodedPairs as the trainer's dataset."""


def trainer_for(model: Any) -> Trainer:
    trainer = Trainer.__new__(Trainer)  # the guards alone, on an already built model
    trainer.config = SimpleNamespace(precision="fp32")
    trainer.env, trainer.device, trainer.pad_id = Environment(), torch.device("cpu"), 0
    trainer.precision, trainer.model, trainer.scorer = MixedPrecision("fp32", "cpu"), model, CompletionLogps(model)
    trainer.strategy = DDP(trainer.env, trainer.device)
    trainer.shared_prompt = True
    return trainer


def mistral(window: int | None) -> Any:
    torch.manual_seed(0)
    return transformers.MistralForCausalLM(transformers.MistralConfig(**CONFIG, sliding_window=window)).eval()


def test_longest_pairs_are_found_by_tokens_among_the_largest_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = ListDataset([*SHORT, *LONG, EncodedPair([1, 2], [3], [4])])
    sizes = np.array([10, 11, 90, 80, 5])  # bytes: a proxy, then tokens decide
    assert longest_pairs(dataset, sizes) == [2, 3]  # the most tokens: 19, 18
    # the one with the most tokens, and the one with the longest prompt (13 tokens)
    assert longest_pairs(dataset, None, count=1) == [2, 3]
    monkeypatch.setattr("dpo_operator.train.data.CANDIDATES", 2)  # only the two largest rows in bytes are encoded
    assert longest_pairs(ListDataset([*LONG, *SHORT]), np.array([1, 2, 90, 80]), count=1) == [2]


def test_a_window_missing_from_the_mask_is_caught_on_long_pairs_behind_short_ones(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """With the window left out of the custom mask (as before it was put there), the first pairs, shorter than
    the window, score alike in both layouts; the longest do not, and the run falls back to two sequences."""
    dataset = ListDataset([*SHORT, *LONG])
    sizes = np.array([len(p.prompt) + len(p.chosen) + len(p.rejected) for p in dataset])
    exact = trainer_for(mistral(4))
    exact.check_shared_prompt(dataset, sizes)
    assert exact.shared_prompt is True  # the window in the mask: both layouts agree on the longest pairs

    monkeypatch.setattr("dpo_operator.train.logprobs.layer_windows", lambda config: {"*": None})
    first_pairs_only = trainer_for(mistral(4))
    first_pairs_only.check_shared_prompt(ListDataset(SHORT), None)
    assert first_pairs_only.shared_prompt is True  # short pairs cannot show the missing window
    windowless = trainer_for(mistral(4))
    with caplog.at_level("WARNING"):
        windowless.check_shared_prompt(dataset, sizes)
    assert windowless.shared_prompt is False
    assert "training with two sequences per pair" in caplog.text


def test_a_model_whose_forward_departs_from_its_head_path_is_refused() -> None:
    class InputBiased(transformers.LlamaForCausalLM):
        """Adds a logit bias from the input ids: something the decoder's output does not carry."""

        def forward(self, input_ids: Any = None, **kwargs: Any) -> Any:
            output = super().forward(input_ids=input_ids, **kwargs)
            if input_ids is not None:
                output.logits = output.logits + torch.nn.functional.one_hot(input_ids, output.logits.shape[-1])
            return output

    torch.manual_seed(0)
    trainer_for(transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG)).eval()).check_logits(ListDataset(LONG))
    biased = trainer_for(InputBiased(transformers.LlamaConfig(**CONFIG)).eval())
    with pytest.raises(ValueError, match="InputBiased: completion log-probs .* not supported by the local trainer"):
        biased.check_logits(ListDataset(LONG))
