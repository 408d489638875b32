"""The DPO loss exactly as NeMo RL defines it (``DPOLossFn``, with ``NLLLoss(dpo_loss=True)`` as its SFT term).

Per pair, with r = sum over completion tokens of (log pi_theta - log pi_ref), or the per-token mean when
``preference_average_log_probs``:

    preference = -log sigmoid(beta * (r_chosen - r_rejected))
    sft        = -sum of the chosen completion's token log-probs (its per-token mean when ``sft_average_log_probs``)
    L          = w_pref * mean_pairs(preference) + w_sft * mean_pairs(sft)

Both terms are means over pairs, so a batch split unevenly across ranks is re-weighted exactly by pair counts.
Rewards are *logged* as beta * r (TRL's convention); NeMo RL logs r without beta.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DPOLossConfig:
    beta: float = 0.1
    preference_loss_weight: float = 1.0
    sft_loss_weight: float = 0.0
    preference_average_log_probs: bool = False
    sft_average_log_probs: bool = False


@dataclass
class LossOutput:
    """Per-pair terms; ``loss`` is their weighted mean."""

    loss: torch.Tensor
    preference: torch.Tensor  # [B]
    sft: torch.Tensor  # [B]
    chosen_rewards: torch.Tensor  # [B] beta * r_c
    rejected_rewards: torch.Tensor  # [B] beta * r_r
    config: DPOLossConfig

    def per_pair(self) -> dict[str, torch.Tensor]:
        """Each logged quantity per pair (sums of these over any set of pairs give exact means)."""
        margins = self.chosen_rewards - self.rejected_rewards
        c = self.config
        return {
            "loss": (c.preference_loss_weight * self.preference + c.sft_loss_weight * self.sft).detach(),
            "preference_loss": self.preference.detach(),
            "sft_loss": self.sft.detach(),
            "rewards/chosen": self.chosen_rewards,
            "rewards/rejected": self.rejected_rewards,
            "rewards/accuracies": (margins > 0).float(),
            "rewards/margins": margins,
        }

    def metrics(self) -> dict[str, float]:
        return {key: float(value.float().mean()) for key, value in self.per_pair().items()}


def dpo_loss(policy_sums: torch.Tensor, counts: torch.Tensor, reference_sums: torch.Tensor,
             config: DPOLossConfig) -> LossOutput:
    """Inputs are per sequence, chosen rows first then rejected rows (2B entries each)."""
    pairs = policy_sums.shape[0] // 2
    policy_sums = policy_sums.float()
    reference_sums = reference_sums.float().to(policy_sums.device)
    lengths = counts.to(policy_sums.device).clamp(min=1).float()
    log_ratio = policy_sums - reference_sums
    if config.preference_average_log_probs:
        log_ratio = log_ratio / lengths
    chosen, rejected = log_ratio[:pairs], log_ratio[pairs:]
    preference = -F.logsigmoid(config.beta * (chosen - rejected))
    sft = -policy_sums[:pairs]
    if config.sft_average_log_probs:
        sft = sft / lengths[:pairs]
    loss = config.preference_loss_weight * preference.mean() + config.sft_loss_weight * sft.mean()
    return LossOutput(loss, preference, sft, (config.beta * chosen).detach(), (config.beta * rejected).detach(), config)
