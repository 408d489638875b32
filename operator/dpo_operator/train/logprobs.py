"""Per-sequence log-probabilities of completion tokens, with the LM head applied only where it is needed.

Materialising [B, T, V] logits dominates memory and time for small batches of long prompts; here the backbone
yields hidden states, and only the hidden states that predict a completion token go through the LM head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass
class SequenceLogps:
    sums: torch.Tensor  # [N] sum of completion-token log-probs per sequence
    counts: torch.Tensor  # [N] number of completion tokens per sequence

    def value(self, average: bool) -> torch.Tensor:
        return self.sums / self.counts.clamp(min=1) if average else self.sums


def _backbone_and_head(model: Any) -> tuple[nn.Module, nn.Module]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft model wraps the LM
    return base.get_decoder(), base.get_output_embeddings()


class CompletionLogps(nn.Module):
    """Wraps a causal LM; ``forward`` returns completion log-probs (a module, so DDP hooks see the forward)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                completion_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        backbone, head = _backbone_and_head(self.model)
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        predicts = completion_mask[:, 1:]  # the hidden state at t predicts the token at t+1
        selected = hidden[:, :-1][predicts]  # [M, H]
        targets = input_ids[:, 1:][predicts]  # [M]
        logits = head(selected).float()
        token_logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device).unsqueeze(1).expand_as(predicts)[predicts]
        sums = torch.zeros(input_ids.shape[0], device=input_ids.device, dtype=token_logps.dtype).index_add(0, rows, token_logps)
        return sums, predicts.sum(dim=1)


def full_logits_logps(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      completion_mask: torch.Tensor) -> SequenceLogps:
    """The straightforward computation over full logits (a reference for tests and benchmarks)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    mask = completion_mask[:, 1:].float()
    return SequenceLogps((token_logps * mask).sum(1), mask.sum(1).long())
