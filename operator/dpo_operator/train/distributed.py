"""How the model is spread over GPUs: one process, DDP (a full copy per rank), or FSDP2 (sharded per decoder layer).

The loop sees one interface: ``wrap`` the scoring module, ``accumulating`` (skip the gradient sync on all but the
last micro-batch of an optimizer step), ``clip_grad_norm``, ``full_state_dict`` (rank 0 gets the whole model for
saving). ``choose`` implements ``strategy: auto``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

BYTES_PER_PARAM_ALL_WEIGHTS = 16  # fp32 weights + fp32 gradients + AdamW's two fp32 moments
BYTES_PER_PARAM_LORA_BASE = 2  # frozen base weights in bf16 (adapters and their state are negligible)
USABLE_FRACTION = 0.75  # the rest is left for activations, the CUDA context and fragmentation


@dataclass
class Environment:
    """The torchrun environment (WORLD_SIZE, RANK, LOCAL_RANK)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Environment":
        return cls(int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def initialised(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    def device(self) -> torch.device:
        return torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")

    def init(self, device: torch.device, needs_group: bool) -> None:
        """A process group when there are several ranks (or FSDP, which shards over a group even of one)."""
        if not (self.world_size > 1 or needs_group) or self.initialised:
            return
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        os.environ.setdefault("WORLD_SIZE", str(self.world_size))
        os.environ.setdefault("RANK", str(self.rank))
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None)

    def barrier(self) -> None:
        if self.initialised:
            dist.barrier()

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.initialised:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def gather_strided(self, local: torch.Tensor, count: int) -> torch.Tensor:
        """Rows held as ``local[p]`` = item ``rank + p * world`` on each rank -> all ``count`` items on every rank."""
        if not self.initialised or self.world_size == 1:
            return local[:count].clone()
        pieces = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(pieces, local.contiguous())
        full = torch.empty((count, *local.shape[1:]), dtype=local.dtype, device=local.device)
        for rank, piece in enumerate(pieces):
            items = torch.arange(rank, count, self.world_size, device=local.device)
            full[items] = piece[: len(items)]
        return full

    def close(self) -> None:
        if self.initialised:
            dist.destroy_process_group()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def choose(requested: str, lora: bool, parameters: int, gpu_bytes: int | None, world_size: int) -> str:
    """``auto``: FSDP when a full copy per GPU would not fit in ``USABLE_FRACTION`` of its memory and there is more
    than one rank to shard over; DDP otherwise (also on CPU, where the memory of a GPU does not apply)."""
    if requested != "auto":
        return requested
    if gpu_bytes is None or world_size == 1:
        return "ddp"
    per_param = BYTES_PER_PARAM_LORA_BASE if lora else BYTES_PER_PARAM_ALL_WEIGHTS
    return "fsdp" if parameters * per_param > USABLE_FRACTION * gpu_bytes else "ddp"


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks, found by the class names transformers lists in ``_no_split_modules``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or [])
    layers = [module for module in base.modules() if type(module).__name__ in names]
    if not layers:
        raise ValueError(f"cannot find the decoder layers of {type(base).__name__} to shard")
    return layers


class DDP:
    """One process or DDP (DDP when the process group has several ranks)."""

    name = "ddp"

    def __init__(self, env: Environment, device: torch.device) -> None:
        self.env, self.device = env, device

    def place(self, model: nn.Module) -> nn.Module:
        return model.to(self.device)

    def wrap(self, scorer: nn.Module) -> nn.Module:
        if self.env.world_size == 1:
            return scorer
        # gradients as views of the all-reduce buckets: no second copy of them (4 bytes a trainable parameter)
        return nn.parallel.DistributedDataParallel(scorer, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                                                   gradient_as_bucket_view=True)

    def accumulating(self, wrapped: nn.Module, sync: bool) -> Any:
        return wrapped.no_sync() if not sync and isinstance(wrapped, nn.parallel.DistributedDataParallel) else nullcontext()

    def clip_grad_norm(self, parameters: list[nn.Parameter], max_norm: float) -> torch.Tensor:
        """Clips in place; returns the norm before clipping as a 0-d tensor on the device (reading it waits for
        the GPU, so the loop reads it later)."""
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        return None  # the model itself is whole: save_pretrained reads it directly

    def frozen(self, model: nn.Module, scorer: Any) -> nn.Module:
        """``scorer(model)`` for inference only (a reference policy loaded apart): on this rank's device, whole."""
        return scorer(model.to(self.device))  # type: ignore[no-any-return]

    def initialise(self, wrapped: nn.Module) -> None:
        """Called once the wrapped model holds its weights, before any forward."""

    def after_inference(self, scorer: nn.Module) -> None:
        """Called after forwards without backward (reference pass, evaluation)."""


class FSDP(DDP):
    """FSDP2: each decoder layer and the rest of the model are sharded over all ranks (``fully_shard``)."""

    name = "fsdp"

    def __init__(self, env: Environment, device: torch.device, compute_dtype: torch.dtype | None) -> None:
        super().__init__(env, device)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy

        self.mesh = init_device_mesh(device.type, (env.world_size,))
        self.policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
        self.model: nn.Module | None = None

    def place(self, model: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import fully_shard

        for layer in decoder_layers(model):  # fully_shard moves each shard to the mesh's device
            fully_shard(layer, mesh=self.mesh, mp_policy=self.policy)
        self.model = model
        return model

    def wrap(self, scorer: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import fully_shard

        # the root group (embeddings, final norm, LM head) is gathered when the scorer's forward runs
        return fully_shard(scorer, mesh=self.mesh, mp_policy=self.policy)

    def frozen(self, model: nn.Module, scorer: Any) -> nn.Module:
        """``scorer(model)`` for inference only, sharded as the policy is (each decoder layer, then the rest)."""
        from torch.distributed.fsdp import fully_shard

        for layer in decoder_layers(model):
            fully_shard(layer, mesh=self.mesh, mp_policy=self.policy)
        return fully_shard(scorer(model), mesh=self.mesh, mp_policy=self.policy)  # type: ignore[no-any-return]

    def initialise(self, wrapped: nn.Module) -> None:
        """FSDP2 fixes each group's gradient dtypes from the parameters that require grad when it initialises, by
        default at the first forward: the reference pass, inside peft's disable_adapter, which clears the adapters'
        requires_grad. Initialised then, bf16 LoRA gradients are never cast to the fp32 adapters and the first
        backward fails. So initialise once the weights are in place and while the adapters are trainable (there is
        no public API for this)."""
        wrapped._get_fsdp_state()._lazy_init()  # type: ignore[operator]

    @contextmanager
    def _sync(self, wrapped: Any, sync: bool) -> Iterator[None]:
        wrapped.set_requires_gradient_sync(sync)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)

    def accumulating(self, wrapped: nn.Module, sync: bool) -> Any:
        return self._sync(wrapped, sync)

    def materialize(self, model: nn.Module, source: nn.Module | None) -> None:
        """Fill a sharded model built on the meta device with ``source``'s weights and buffers, which only rank 0
        holds (None elsewhere): each rank allocates its shards and receives them from rank 0."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        model.to_empty(device=self.device)
        full = source.state_dict() if source is not None else {}
        set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        # buffers are not sharded and some (rotary frequencies) are in no state dict: rank 0 sends them all
        originals = dict(source.named_buffers()) if source is not None else {}
        for name, buffer in model.named_buffers():
            if source is not None:
                buffer.copy_(originals[name])
            torch.distributed.broadcast(buffer, src=0)

    def after_inference(self, scorer: nn.Module) -> None:
        # the root group stays gathered after a forward with no backward; a training forward would then write its
        # gradients to the gathered copies and never reduce-scatter them into the shards
        scorer.reshard()  # type: ignore[operator]

    def clip_grad_norm(self, parameters: list[nn.Parameter], max_norm: float) -> torch.Tensor:
        """The global norm from each rank's gradient shards (one all-reduce), then ``clip_grad_norm_``'s scaling."""
        shards = [p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad for p in parameters if p.grad is not None]
        squares = torch.zeros((), device=self.device, dtype=torch.float32)
        for shard in shards:
            squares += shard.detach().float().pow(2).sum()
        norm = self.env.all_sum(squares).sqrt()
        scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        torch._foreach_mul_(shards, scale.to(shards[0].dtype)) if shards else None
        return norm

    def full_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor] | None:
        """The whole model on rank 0's CPU (every rank takes part in the gathers)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(model, options=options)
        return state if self.env.is_main else None


def build(name: str, env: Environment, device: torch.device, compute_dtype: torch.dtype | None) -> DDP:
    if name == "fsdp":
        return FSDP(env, device, compute_dtype)
    if name == "ddp":
        return DDP(env, device)
    raise ValueError(f"strategy must be auto, ddp or fsdp, not {name!r}")
