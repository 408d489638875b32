"""The DPO loss: NeMo RL's by default, or a weighted sum of TRL 1.16's loss types.

**Default** (``loss_types`` empty): NeMo RL's ``DPOLossFn`` with ``NLLLoss(dpo_loss=True)`` as its SFT term. Per pair,
with r = sum over completion tokens of (log pi_theta - log pi_ref), or the per-token mean when
``preference_average_log_probs``:

    preference = -log sigmoid(beta * (r_chosen - r_rejected))
    sft        = -sum of the chosen completion's token log-probs (its per-token mean when ``sft_average_log_probs``)
    L          = w_pref * mean_pairs(preference) + w_sft * mean_pairs(sft)

**TRL loss types** (``loss_types`` set): ``DPOTrainer._compute_loss`` of TRL 1.16 (reverse KL, no LD-DPO length
weighting, no WPO weighting): L = sum_t w_t * mean_pairs(loss_t), each ``loss_t`` computed from the per-sequence
log-prob sums as TRL computes it (``_trl_terms``). ``sft`` is TRL's: the mean NLL over all chosen completion tokens
of the batch. ``preference`` is then the weighted sum of the other types, ``sft`` TRL's sft term.

Both are means over pairs (TRL's ``sft`` is spread over the batch's pairs so that its mean is the token mean), so a
batch split unevenly across ranks is re-weighted exactly by pair counts. Rewards are *logged* as beta * r (TRL's
convention; with the default and ``preference_average_log_probs``, r is the per-token mean); NeMo RL logs r
without beta.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from dpo_operator.api.training import Hyperparameters


@dataclass(frozen=True)
class DPOLossConfig:
    beta: float = 0.1
    preference_loss_weight: float = 1.0
    sft_loss_weight: float = 0.0
    preference_average_log_probs: bool = False
    sft_average_log_probs: bool = False
    loss_types: tuple[str, ...] = ()  # TRL's names; empty: NeMo RL's loss above
    loss_weights: tuple[float, ...] = ()  # one per loss type
    label_smoothing: float = 0.0  # robust, exo_pair, aot, aot_unpaired (TRL)
    discopop_tau: float = 0.05

    @classmethod
    def from_hyperparameters(cls, h: Hyperparameters) -> DPOLossConfig:
        """The loss a spec asks for; ``trainingType: sft`` is the SFT term alone."""
        dpo = h.dpo
        if h.training_type == "sft":
            return cls(beta=dpo.ref_policy_kl_penalty, preference_loss_weight=0.0, sft_loss_weight=1.0,
                       preference_average_log_probs=dpo.preference_average_log_probs,
                       sft_average_log_probs=dpo.effective_sft_average_log_probs)
        types = tuple(str(getattr(t, "value", t)) for t in dpo.loss_type or ())
        return cls(beta=dpo.ref_policy_kl_penalty, preference_loss_weight=dpo.preference_loss_weight,
                   sft_loss_weight=dpo.sft_loss_weight, preference_average_log_probs=dpo.preference_average_log_probs,
                   sft_average_log_probs=dpo.effective_sft_average_log_probs, loss_types=types,
                   loss_weights=tuple(dpo.loss_weights or [1.0] * len(types)), label_smoothing=dpo.label_smoothing,
                   discopop_tau=dpo.discopop_tau)


@dataclass
class LossOutput:
    """Per-pair terms; ``loss`` is their weighted mean."""

    loss: torch.Tensor
    preference: torch.Tensor  # [B]
    sft: torch.Tensor  # [B]
    chosen_rewards: torch.Tensor  # [B] beta * r_c
    rejected_rewards: torch.Tensor  # [B] beta * r_r
    config: DPOLossConfig
    chosen_logps: torch.Tensor | None = None  # [B] the policy's summed completion log-probs (TRL's logps/*)
    rejected_logps: torch.Tensor | None = None

    def per_pair(self) -> dict[str, torch.Tensor]:
        """Each logged quantity per pair (sums of these over any set of pairs give exact means)."""
        margins = self.chosen_rewards - self.rejected_rewards
        c = self.config
        if c.loss_types:
            loss = self.preference + _sft_weight(c) * self.sft
        else:
            loss = c.preference_loss_weight * self.preference + c.sft_loss_weight * self.sft
        values = {
            "loss": loss.detach(),
            "preference_loss": self.preference.detach(),
            "sft_loss": self.sft.detach(),
            "rewards/chosen": self.chosen_rewards,
            "rewards/rejected": self.rejected_rewards,
            "rewards/accuracies": (margins > 0).float(),
            "rewards/margins": margins,
        }
        if self.chosen_logps is not None and self.rejected_logps is not None:
            values["logps/chosen"], values["logps/rejected"] = self.chosen_logps, self.rejected_logps
        return values

    def metrics(self) -> dict[str, float]:
        return {key: float(value.float().mean()) for key, value in self.per_pair().items()}


def dpo_loss(policy_sums: torch.Tensor, counts: torch.Tensor, reference_sums: torch.Tensor,
             config: DPOLossConfig) -> LossOutput:
    """Inputs are per sequence, chosen rows first then rejected rows (2B entries each)."""
    pairs = policy_sums.shape[0] // 2
    policy_sums = policy_sums.float()
    reference_sums = reference_sums.float().to(policy_sums.device)
    lengths = counts.to(policy_sums.device).clamp(min=1).float()
    logps = policy_sums.detach()
    if config.loss_types:
        return _trl_loss(policy_sums, lengths, reference_sums, config)
    log_ratio = policy_sums - reference_sums
    if config.preference_average_log_probs:
        log_ratio = log_ratio / lengths
    chosen, rejected = log_ratio[:pairs], log_ratio[pairs:]
    preference = -F.logsigmoid(config.beta * (chosen - rejected))
    sft = -policy_sums[:pairs]
    if config.sft_average_log_probs:
        sft = sft / lengths[:pairs]
    loss = config.preference_loss_weight * preference.mean() + config.sft_loss_weight * sft.mean()
    return LossOutput(loss, preference, sft, (config.beta * chosen).detach(), (config.beta * rejected).detach(), config,
                      logps[:pairs], logps[pairs:])


def _sft_weight(config: DPOLossConfig) -> float:
    return sum(w for t, w in zip(config.loss_types, config.loss_weights, strict=True) if t == "sft")


def _trl_loss(policy_sums: torch.Tensor, lengths: torch.Tensor, reference_sums: torch.Tensor,
              config: DPOLossConfig) -> LossOutput:
    pairs = policy_sums.shape[0] // 2
    terms = _trl_terms(policy_sums, lengths, reference_sums, config)
    preference = torch.zeros(pairs, device=policy_sums.device)
    loss = torch.zeros((), device=policy_sums.device)
    for loss_type, weight in zip(config.loss_types, config.loss_weights, strict=True):
        loss = loss + terms[loss_type].mean() * weight  # TRL: loss += per_sequence_loss.mean() * loss_weight
        if loss_type != "sft":
            preference = preference + weight * terms[loss_type]
    sft = terms["sft"] if "sft" in terms else torch.zeros_like(preference)
    log_ratio = (policy_sums - reference_sums).detach()
    logps = policy_sums.detach()
    return LossOutput(loss, preference, sft, config.beta * log_ratio[:pairs], config.beta * log_ratio[pairs:], config,
                      logps[:pairs], logps[pairs:])


def _trl_terms(policy_sums: torch.Tensor, lengths: torch.Tensor, reference_sums: torch.Tensor,
               config: DPOLossConfig) -> dict[str, torch.Tensor]:
    """Each requested loss type per pair, as TRL 1.16's ``DPOTrainer._compute_loss`` writes it."""
    pairs = policy_sums.shape[0] // 2
    beta, smoothing = config.beta, config.label_smoothing
    chosen_logps, rejected_logps = policy_sums[:pairs], policy_sums[pairs:]
    ref_chosen, ref_rejected = reference_sums[:pairs], reference_sums[pairs:]
    chosen_lengths, rejected_lengths = lengths[:pairs], lengths[pairs:]
    chosen_logratios, rejected_logratios = chosen_logps - ref_chosen, rejected_logps - ref_rejected
    delta = chosen_logratios - rejected_logratios
    terms: dict[str, torch.Tensor] = {}
    for loss_type in config.loss_types:
        if loss_type == "sigmoid":
            term = -F.logsigmoid(beta * delta)
        elif loss_type == "hinge":
            term = torch.relu(1 - beta * delta)
        elif loss_type == "ipo":  # per-token means of the log-ratios (TRL's normalisation)
            term = (chosen_logratios / chosen_lengths - rejected_logratios / rejected_lengths - 1 / (2 * beta)) ** 2
        elif loss_type == "exo_pair":
            epsilon = torch.tensor(smoothing, device=delta.device)
            term = (torch.sigmoid(beta * delta) * (F.logsigmoid(beta * delta) - torch.log1p(-epsilon))
                    + torch.sigmoid(-beta * delta) * (F.logsigmoid(-beta * delta) - torch.log(epsilon)))
        elif loss_type == "nca_pair":
            chosen_rewards, rejected_rewards = beta * chosen_logratios, beta * rejected_logratios
            term = (-F.logsigmoid(chosen_rewards) - 0.5 * F.logsigmoid(-chosen_rewards)
                    - 0.5 * F.logsigmoid(-rejected_rewards))
        elif loss_type == "robust":
            term = (-(1 - smoothing) * F.logsigmoid(beta * delta) + smoothing * F.logsigmoid(-beta * delta)) \
                / (1 - 2 * smoothing)
        elif loss_type == "bco_pair":
            term = -F.logsigmoid(beta * chosen_logratios) - F.logsigmoid(-beta * rejected_logratios)
        elif loss_type == "sppo_hard":
            term = (chosen_logratios - 0.5 / beta) ** 2 + (rejected_logratios + 0.5 / beta) ** 2
        elif loss_type in ("aot", "aot_unpaired"):  # sorted over the batch: a term per rank, not per pair
            if loss_type == "aot":
                sorted_delta = (torch.sort(chosen_logps - rejected_logps, dim=0)[0]
                                - torch.sort(ref_chosen - ref_rejected, dim=0)[0])
            else:
                sorted_delta = torch.sort(chosen_logratios, dim=0)[0] - torch.sort(rejected_logratios, dim=0)[0]
            term = (-F.logsigmoid(beta * sorted_delta) * (1 - smoothing)
                    - F.logsigmoid(-beta * sorted_delta) * smoothing)
        elif loss_type == "apo_zero":
            term = 1 - torch.sigmoid(beta * chosen_logratios) + torch.sigmoid(beta * rejected_logratios)
        elif loss_type == "apo_down":
            term = torch.sigmoid(beta * chosen_logratios) + 1 - torch.sigmoid(beta * delta)
        elif loss_type == "discopop":
            logits = beta * delta
            modulation = torch.sigmoid(logits / config.discopop_tau)
            term = -F.logsigmoid(logits) * (1 - modulation) + torch.exp(-logits) * modulation
        elif loss_type == "sft":  # the batch's token mean, spread so that the mean over pairs equals it
            term = -chosen_logps * (pairs / chosen_lengths.sum())
        elif loss_type == "sigmoid_norm":
            term = -F.logsigmoid(beta * (chosen_logratios / chosen_lengths - rejected_logratios / rejected_lengths))
        else:
            raise ValueError(f"unknown loss type {loss_type!r}")
        terms[loss_type] = term
    return terms
