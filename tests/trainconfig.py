"""Trainer tests name settings flat (``batch_size=4, precision="fp32", lora_rank=8``); ``flat_config`` places each in
the model the trainer takes (``Hyperparameters``, its ``dpo`` and ``lora`` blocks, ``LocalBackend``, ``TrainConfig``).
Precision defaults to fp32 here (CPU tests), not the spec's bf16."""

from __future__ import annotations

from typing import Any

from dpo_operator.api.training import DPOParams, Hyperparameters, LocalBackend, LoraParams
from dpo_operator.train.trainer import TrainConfig

RENAMED = {"beta": ("dpo", "ref_policy_kl_penalty"), "lora_rank": ("lora", "rank"), "lora_alpha": ("lora", "alpha"),
           "lora_dropout": ("lora", "dropout"), "lora_target_modules": ("lora", "target_modules")}


def flat_config(model: str, dataset_dir: str, output_dir: str, **fields: Any) -> TrainConfig:
    hyper: dict[str, Any] = {"dpo": {}, "lora": {}}
    local: dict[str, Any] = {"precision": "fp32"}
    top: dict[str, Any] = {}
    for name, value in fields.items():
        if name in RENAMED:
            block, key = RENAMED[name]
            hyper[block][key] = value
        elif name in DPOParams.model_fields:
            hyper["dpo"][name] = value
        elif name in LoraParams.model_fields:
            hyper["lora"][name] = value
        elif name in Hyperparameters.model_fields:
            hyper[name] = value
        elif name in LocalBackend.model_fields:
            local[name] = value
        elif name in TrainConfig.model_fields:
            top[name] = value
        else:
            raise TypeError(f"no trainer setting named {name!r}")
    return TrainConfig(model=model, dataset_dir=dataset_dir, output_dir=output_dir,
                       hyperparameters=Hyperparameters.model_validate(hyper), local=LocalBackend.model_validate(local),
                       **top)
