"""Resumable checkpoints: weights (trainable ones), optimizer, scheduler, loss scaler, RNG and data position.

Written with ``torch.distributed.checkpoint`` (each rank writes its own shards; a checkpoint saved at one world
size loads at another, FSDP or not). A checkpoint is written into ``tmp-step-N`` and renamed to ``step-N`` only
once every rank has finished and ``state.pt`` is in place, so a crash mid-write never leaves one that looks
complete; ``latest`` skips anything else. The newest ``KEEP`` complete checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dpo_operator.train.distributed import Environment

KEEP = 2
STATE_FILE = "state.pt"
_COMPLETE = re.compile(r"^step-(\d+)$")


@dataclass
class Position:
    """Where training stands: optimizer steps taken, and the global batches of ``epoch`` already consumed."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0


def latest(root: Path) -> Path | None:
    if not root.is_dir():
        return None
    complete = [(int(m.group(1)), p) for p in root.iterdir() if (m := _COMPLETE.match(p.name)) and (p / STATE_FILE).is_file()]
    return max(complete)[1] if complete else None


def _state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any], Any]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    # a LoRA checkpoint holds the adapters only; loading leaves frozen weights as they are (dcp.load itself fails
    # when a trainable tensor is missing from the checkpoint)
    options = StateDictOptions(ignore_frozen_params=True, strict=False)
    model_state, optimizer_state = get_state_dict(model, optimizer, options=options)
    return model_state, optimizer_state, options


def save(root: Path, position: Position, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
         scaler_state: dict[str, Any], env: Environment) -> Path:
    import torch.distributed.checkpoint as dcp

    final = root / f"step-{position.step}"
    staging = root / f"tmp-step-{position.step}"
    if env.is_main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    env.barrier()
    model_state, optimizer_state, _ = _state_dicts(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(staging))
    torch.save(_rng_state(), staging / f"rng-{env.rank}.pt")
    env.barrier()
    if env.is_main:
        state = {"position": asdict(position), "scheduler": scheduler.state_dict(), "scaler": scaler_state,
                 "world_size": env.world_size}
        torch.save(state, staging / STATE_FILE)
        (staging / "position.json").write_text(json.dumps(asdict(position)))  # for people
        os.replace(staging, final)
        _prune(root)
    env.barrier()
    return final


def load(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, env: Environment) -> tuple[Position, dict[str, Any]]:
    """Restores everything in place; returns the position and the loss scaler's state."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    model_state, optimizer_state, options = _state_dicts(model, optimizer)
    dcp.load({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state, options=options)
    state = torch.load(path / STATE_FILE, weights_only=False)
    scheduler.load_state_dict(state["scheduler"])
    rng = path / f"rng-{env.rank}.pt"
    if rng.is_file() and state.get("world_size") == env.world_size:  # other world sizes: streams start afresh
        _set_rng_state(torch.load(rng, weights_only=False))
    return Position(**state["position"]), state.get("scaler") or {}


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _prune(root: Path) -> None:
    complete = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _COMPLETE.match(p.name)))
    for _, path in complete[:-KEEP]:
        shutil.rmtree(path, ignore_errors=True)
    for path in root.glob("tmp-step-*"):  # leftovers of an interrupted save
        shutil.rmtree(path, ignore_errors=True)
