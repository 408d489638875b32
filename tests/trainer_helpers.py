"""Test-only helpers of the trainer tests: straightforward reference computations and loaders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dpo_operator.train.data import Batch
from dpo_operator.train.precision import MixedPrecision
from dpo_operator.train.trainer import TrainConfig, load_model, load_tokenizer


@dataclass
class SequenceLogps:
    sums: torch.Tensor  # [N] sum of completion-token log-probs per sequence
    counts: torch.Tensor  # [N] number of completion tokens per sequence

    def value(self, average: bool) -> torch.Tensor:
        return self.sums / self.counts.clamp(min=1) if average else self.sums


def full_logits_logps(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      completion_mask: torch.Tensor) -> SequenceLogps:
    """The straightforward computation over full logits (a reference for tests and benchmarks)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    mask = completion_mask[:, 1:].float()
    return SequenceLogps((token_logps * mask).sum(1), mask.sum(1).long())


def load_model_and_tokenizer(config: TrainConfig, precision: MixedPrecision) -> tuple[Any, Any]:
    return load_model(config, precision), load_tokenizer(config)


def completion_counts(batch: Batch) -> list[int]:
    """Scored (completion) tokens per sequence of a batch."""
    return torch.bincount(batch.score_owner, minlength=2 * batch.pairs).tolist()
