"""Offline checks on the validation split: what DPO changed, measured against the reference on the same pairs.

The DPO metrics of the reference policy are constants, not measurements: its implicit reward
``beta * (log pi(y) - log pi_ref(y))`` is 0 for every response, so its DPO loss is ln 2, its reward margin 0 and its
reward accuracy 0 (no pair is strictly preferred). What can be compared is which response each model finds more
likely: the *likelihood preference accuracy*, the share of pairs whose chosen response has the higher summed
log-probability (and, since a longer response has a lower sum, the higher mean log-probability per token). The
reference's figure is where the base model already stood; the trained policy's on the same pairs says how far
training moved it. Ties count as not preferred.
"""

from __future__ import annotations

import torch

# the sum over pairs of each indicator, in this order
LIKELIHOOD_KEYS = ("logps_accuracy", "logps_per_token_accuracy", "reference/logps_accuracy",
                   "reference/logps_per_token_accuracy")


def likelihood_preferences(sums: torch.Tensor, counts: torch.Tensor, reference_sums: torch.Tensor) -> torch.Tensor:
    """[4]: pairs (of the ``2B`` rows: chosen rows, then rejected) each model prefers the chosen response in,
    summed; the order of :data:`LIKELIHOOD_KEYS`."""
    pairs = sums.shape[0] // 2
    tokens = counts.clamp(min=1).float()

    def preferred(values: torch.Tensor) -> torch.Tensor:
        return (values[:pairs] > values[pairs:]).float().sum()

    return torch.stack([preferred(sums.float()), preferred(sums.float() / tokens),
                        preferred(reference_sums.float()), preferred(reference_sums.float() / tokens)])
