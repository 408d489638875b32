"""AdamW with decoupled weight decay on matrices only, and transformers' learning-rate schedules (as TRL uses)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters; biases, norms (1-D) and embedding tables (tied LM heads included) get no decay."""
    embeddings = {id(module.weight) for module in model.modules() if isinstance(module, nn.Embedding)}
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim >= 2 and id(param) not in embeddings else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def build_optimizer(model: nn.Module, learning_rate: float, weight_decay: float, fused: bool) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=learning_rate, fused=fused or None)


def warmup_steps(total_steps: int, steps: int, ratio: float) -> int:
    return steps if steps else math.ceil(ratio * total_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, total_steps: int, warmup: int) -> Any:
    """``constant`` (after warmup), ``linear`` or ``cosine`` decay to 0 at the last step, warmup linear from 0."""
    from transformers import get_scheduler

    kwargs: dict[str, Any] = {"num_warmup_steps": warmup}
    if name != "constant":
        kwargs["num_training_steps"] = total_steps
    return get_scheduler(SCHEDULES[name], optimizer, **kwargs)
