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


def attention_implementation(model: Any) -> str | None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base.config, "_attn_implementation", None)


def supports_custom_masks(model: Any) -> bool:
    """Whether the model takes an arbitrary [B, 1, T, T] mask (the shared-prompt layout): SDPA and eager attention
    do; flash-attention kernels take padding masks only."""
    return attention_implementation(model) in ("sdpa", "eager")


class CompletionLogps(nn.Module):
    """Wraps a causal LM; ``forward`` returns completion log-probs (a module, so DDP hooks see the forward)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None,
                score_positions: torch.Tensor, score_targets: torch.Tensor, score_owner: torch.Tensor,
                sequences: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(sums, counts) per scored sequence, from a ``data.Batch``'s ``inputs()``."""
        backbone, head = _backbone_and_head(self.model)
        if attention_mask.dim() == 4 and attention_implementation(self.model) == "eager":
            attention_mask = self._additive(attention_mask, head.weight.dtype)  # eager adds the mask to the scores
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
        selected = hidden.reshape(-1, hidden.shape[-1])[score_positions]  # [M, H]
        logits = head(selected).float()
        token_logps = -nn.functional.cross_entropy(logits, score_targets, reduction="none")
        sums = torch.zeros(sequences, device=input_ids.device, dtype=token_logps.dtype).index_add(0, score_owner, token_logps)
        # not bincount: on a GPU it reads the largest owner back to the host, a wait for the GPU in every forward
        counts = torch.zeros(sequences, device=input_ids.device, dtype=torch.long).index_add(
            0, score_owner, torch.ones_like(score_owner))
        return sums, counts

    @staticmethod
    def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        dtype = dtype if dtype.is_floating_point else torch.float32
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def full_logits_logps(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      completion_mask: torch.Tensor) -> SequenceLogps:
    """The straightforward computation over full logits (a reference for tests and benchmarks)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    token_logps = torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    mask = completion_mask[:, 1:].float()
    return SequenceLogps((token_logps * mask).sum(1), mask.sum(1).long())
