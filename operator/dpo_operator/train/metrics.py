"""Per-step metrics: ``StepReports`` turns the totals a step leaves on the device into a record; ``MetricsSink``
writes records (rank 0 only) as JSON lines in ``metrics.jsonl``, TensorBoard event files in ``tensorboard/`` beside
it, and to Weights & Biases when ``WANDB_API_KEY`` is set (from a Secret reference). The pod's log gets readable
lines instead (:mod:`dpo_operator.train.progress`; a progress bar on a terminal)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

NOT_SCALARS = {"step", "epoch"}
# what a step's totals hold, in order: the sum over its pairs of each of these, then pairs, tokens, gradient norm
METRIC_KEYS = ("loss", "preference_loss", "sft_loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies",
               "rewards/margins", "logps/chosen", "logps/rejected")


class MetricsSink:
    def __init__(self, output_dir: Path, total_steps: int, enabled: bool, run_config: dict[str, Any]) -> None:
        self.enabled = enabled
        self.file = None
        self.bar = None
        self.tensorboard = None
        self.wandb = None
        if not enabled:
            return
        self.file = open(output_dir / "metrics.jsonl", "a")  # noqa: SIM115
        from torch.utils.tensorboard import SummaryWriter

        self.tensorboard = SummaryWriter(log_dir=str(output_dir / "tensorboard"))
        if os.environ.get("WANDB_API_KEY"):
            self.wandb = _start_wandb(output_dir, run_config)
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, desc="dpo", unit="step")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps(record, sort_keys=True)
        assert self.file is not None and self.tensorboard is not None
        self.file.write(line + "\n")
        self.file.flush()
        step = int(record["step"])
        scalars = {k: v for k, v in record.items() if k not in NOT_SCALARS and isinstance(v, int | float)}
        for key, value in scalars.items():
            self.tensorboard.add_scalar(key if "/" in key or key.startswith("val") else f"train/{key}", value, step)
        self.tensorboard.flush()
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)
        if self.bar is not None and "loss" in record:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{record.get('loss', 0):.4f}", acc=f"{record.get('rewards/accuracies', 0):.2f}")

    def close(self) -> None:
        """Everything written and closed (a second call does nothing)."""
        if self.bar is not None:
            self.bar.close()
        if self.file is not None:
            self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
        self.bar = self.file = self.tensorboard = self.wandb = None
        self.enabled = False


def _start_wandb(output_dir: Path, run_config: dict[str, Any]) -> Any:
    try:
        import wandb
    except ImportError as exc:
        raise RuntimeError("WANDB_API_KEY is set but the wandb package is not installed in this image "
                           "(pip install 'dpo-operator[wandb]')") from exc
    return wandb.init(project=os.environ.get("WANDB_PROJECT", "dpo-operator"), entity=os.environ.get("WANDB_ENTITY") or None,
                      name=os.environ.get("WANDB_NAME") or os.environ.get("DPO_RESOURCE_NAME"), dir=str(output_dir),
                      config=run_config, resume="allow", id=os.environ.get("WANDB_RUN_ID") or None)


class StepReports:
    """Each step's metrics record, from the totals a training step leaves on the device (``METRIC_KEYS`` sums over
    its pairs, then pairs, tokens and the gradient norm).

    Reading them makes the host wait for the step to finish. ``deferred`` (on a GPU): a step's record is read once
    the next step is queued, so the GPU always has work while the host waits. On a CPU the work is done when the
    call returns, so records are read at once and their timestamps stay exact.
    """

    def __init__(self, sink: MetricsSink, deferred: bool,
                 on_record: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.sink, self.deferred, self.on_record = sink, deferred, on_record
        self.started = time.perf_counter()
        self.last: dict[str, Any] = {}
        self._tokens = 0.0
        self._unread: tuple[torch.Tensor, int, float, float] | None = None

    def add(self, totals: torch.Tensor, step: int, epoch: float, learning_rate: float, now: bool = False) -> None:
        """A step just queued; ``now``: write its record before returning (e.g. before a checkpoint)."""
        self.flush()
        self._unread = (totals, step, epoch, learning_rate)
        if now or not self.deferred:
            self.flush()

    def flush(self) -> None:
        if self._unread is None:
            return
        totals, step, epoch, learning_rate = self._unread
        self._unread = None
        values = totals.tolist()
        pairs = values[len(METRIC_KEYS)]
        self._tokens += values[len(METRIC_KEYS) + 1]
        elapsed = time.perf_counter() - self.started
        self.last = {**{key: values[i] / pairs for i, key in enumerate(METRIC_KEYS)}, "grad_norm": values[-1],
                     "learning_rate": learning_rate, "step": step, "epoch": epoch,
                     "tokens_per_second": self._tokens / max(elapsed, 1e-9), "elapsed_seconds": round(elapsed, 4)}
        self.sink.write(self.last)
        if self.on_record is not None:
            self.on_record(self.last)
