"""Mixed precision as production trainers do it: fp32 master weights and optimizer state, low-precision compute.

- ``bf16``: autocast to bfloat16 (under FSDP, its mixed-precision policy instead: bf16 parameters for compute,
  fp32 gradient reduction). Frozen base weights of a LoRA run are stored in bf16: nothing updates them.
- ``fp16``: autocast to float16 with dynamic loss scaling (GradScaler); not with FSDP (refused).
- ``fp32``: plain fp32.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class MixedPrecision:
    name: str
    device_type: str
    autocast_enabled: bool = True  # off under FSDP, whose policy casts the parameters itself

    def __post_init__(self) -> None:
        if self.name not in DTYPES:
            raise ValueError(f"precision must be one of {sorted(DTYPES)}, not {self.name!r}")
        self.scaler: Any = torch.amp.GradScaler(self.device_type) if self.name == "fp16" else None

    @property
    def compute_dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    def autocast(self) -> AbstractContextManager[Any]:
        if self.name == "fp32" or not self.autocast_enabled:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.compute_dtype)

    def frozen_weight_dtype(self, lora: bool) -> torch.dtype:
        """The dtype weights are loaded in: fp32 masters, except frozen LoRA base weights in the compute dtype."""
        return self.compute_dtype if lora and self.name == "bf16" else torch.float32

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)  # skipped when the unscaled gradients hold inf/NaN
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
