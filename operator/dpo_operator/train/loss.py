"""The DPO loss as NeMo RL defines it (DPOLossFn).

L = w_pref * mean(-log sigmoid(beta * (r_c - r_r))) + w_sft * NLL(chosen)
r = sum over completion tokens of (log pi_theta - log pi_ref), or the per-token mean when
``average_log_probs``; NLL(chosen) is the mean negative log-likelihood per chosen completion token.
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
    average_log_probs: bool = False


@dataclass
class LossOutput:
    loss: torch.Tensor
    preference_loss: torch.Tensor
    sft_loss: torch.Tensor
    chosen_rewards: torch.Tensor  # beta * r_c, per pair
    rejected_rewards: torch.Tensor  # beta * r_r, per pair

    def metrics(self) -> dict[str, float]:
        margins = self.chosen_rewards - self.rejected_rewards
        return {
            "loss": float(self.loss.detach()),
            "preference_loss": float(self.preference_loss.detach()),
            "sft_loss": float(self.sft_loss.detach()),
            "rewards/chosen": float(self.chosen_rewards.mean()),
            "rewards/rejected": float(self.rejected_rewards.mean()),
            "rewards/accuracies": float((margins > 0).float().mean()),
            "rewards/margins": float(margins.mean()),
        }


def dpo_loss(policy_sums: torch.Tensor, counts: torch.Tensor, reference_sums: torch.Tensor,
             config: DPOLossConfig) -> LossOutput:
    """Inputs are per sequence, chosen rows first then rejected rows (2B entries each)."""
    pairs = policy_sums.shape[0] // 2
    if config.average_log_probs:
        policy = policy_sums / counts.clamp(min=1)
        reference = reference_sums / counts.clamp(min=1)
    else:
        policy, reference = policy_sums, reference_sums
    log_ratio = policy - reference
    chosen, rejected = log_ratio[:pairs], log_ratio[pairs:]
    preference = -F.logsigmoid(config.beta * (chosen - rejected)).mean()
    sft = -policy_sums[:pairs].sum() / counts[:pairs].sum().clamp(min=1)
    loss = config.preference_loss_weight * preference + config.sft_loss_weight * sft
    return LossOutput(loss, preference, sft, (config.beta * chosen).detach(), (config.beta * rejected).detach())
