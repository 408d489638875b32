"""The DPO training loop: reference log-probs once up front, one concatenated forward per step.

- The reference policy is the model before training. Its completion log-probs are computed once, under
  ``no_grad``, before the first step; with LoRA they come from the model with its adapters disabled, so no
  second copy of the weights ever exists.
- Each step runs chosen and rejected sequences through one forward pass, and the LM head sees only the
  positions that predict completion tokens.
- Multi-GPU / multi-node: launched with the torchrun environment (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR,
  MASTER_PORT); each rank trains on its shard of every batch under DistributedDataParallel; rank 0 writes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from dpo_operator.train.data import Batch, EncodedPair, collate, encode, read_jsonl
from dpo_operator.train.logprobs import CompletionLogps
from dpo_operator.train.loss import DPOLossConfig, dpo_loss

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    model: str  # a local directory or a hub repo id (offline: must be cached)
    dataset_dir: str  # holds training/training_file.jsonl and validation/validation_file.jsonl
    output_dir: str
    training_type: str = "dpo"  # or "sft"
    finetuning_type: str = "lora"  # or "all_weights"
    epochs: int = 1
    batch_size: int = 8
    learning_rate: float = 5e-6
    max_seq_length: int = 1024
    seed: int = 42
    beta: float = 0.1
    preference_loss_weight: float = 1.0
    preference_average_log_probs: bool = False
    sft_loss_weight: float = 0.0
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | None = None
    precision: str = "fp32"  # bf16 / fp16 apply on GPU only
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    save_every_steps: int | None = None
    max_steps: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: Any, model: str, dataset_dir: str, output_dir: str) -> "TrainConfig":
        """From a DPOTrainingJobSpec (api.training)."""
        h = spec.hyperparameters
        local = spec.local
        return cls(
            model=model, dataset_dir=dataset_dir, output_dir=output_dir, training_type=h.training_type,
            finetuning_type=h.finetuning_type, epochs=h.epochs, batch_size=h.batch_size, learning_rate=h.learning_rate,
            max_seq_length=h.max_seq_length, seed=h.seed, beta=h.dpo.ref_policy_kl_penalty,
            preference_loss_weight=h.dpo.preference_loss_weight, preference_average_log_probs=h.dpo.preference_average_log_probs,
            sft_loss_weight=h.dpo.sft_loss_weight, lora_rank=h.lora.rank, lora_alpha=h.lora.alpha,
            lora_dropout=h.lora.dropout, lora_target_modules=h.lora.target_modules,
            precision=local.precision if local else "bf16",
            gradient_accumulation_steps=local.gradient_accumulation_steps if local else 1,
            save_every_steps=local.save_every_steps if local else None,
        )


@dataclass
class Distributed:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Distributed":
        return cls(int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def load_model_and_tokenizer(config: TrainConfig, device: torch.device) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.float32
    if device.type == "cuda" and config.precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if config.precision == "bf16" else torch.float16
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(config.model, dtype=dtype).to(device)
    if config.finetuning_type == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=config.lora_target_modules or "all-linear", task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    return model, tokenizer


def batches(pairs: list[EncodedPair], batch_size: int, seed: int, epoch: int, pad_id: int,
            shard: tuple[int, int] = (0, 1)) -> list[Batch]:
    """Shuffled batches for one epoch; with several ranks each takes its share of every batch."""
    order = list(range(len(pairs)))
    random.Random(seed + epoch).shuffle(order)
    rank, world = shard
    out = []
    for start in range(0, len(order), batch_size):
        indices = order[start: start + batch_size][rank::world]
        if indices:
            out.append(collate([pairs[i] for i in indices], indices, pad_id))
    return out


@torch.no_grad()
def reference_logps(model: Any, pairs: list[EncodedPair], batch_size: int, pad_id: int,
                    device: torch.device) -> torch.Tensor:
    """[N, 2] (chosen, rejected) summed completion log-probs of the model as it is now (the reference)."""
    scorer = CompletionLogps(model)
    disable = model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
    out = torch.zeros(len(pairs), 2)
    was_training = model.training
    model.eval()
    with disable:
        for start in range(0, len(pairs), batch_size):
            indices = list(range(start, min(start + batch_size, len(pairs))))
            batch = collate([pairs[i] for i in indices], indices, pad_id).to(device)
            sums, _ = scorer(batch.input_ids, batch.attention_mask, batch.completion_mask)
            out[indices, 0] = sums[: len(indices)].float().cpu()
            out[indices, 1] = sums[len(indices):].float().cpu()
    model.train(was_training)
    return out


def _reference_for(batch: Batch, reference: torch.Tensor, device: torch.device) -> torch.Tensor:
    rows = reference[batch.indices]
    return torch.cat([rows[:, 0], rows[:, 1]]).to(device)


class MetricsSink:
    """JSON lines on stdout and in ``metrics.jsonl``; a progress bar on an interactive terminal."""

    def __init__(self, output_dir: Path, total_steps: int, enabled: bool) -> None:
        self.enabled = enabled
        self.file = open(output_dir / "metrics.jsonl", "a") if enabled else None  # noqa: SIM115
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, desc="dpo", unit="step")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps(record, sort_keys=True)
        assert self.file is not None
        self.file.write(line + "\n")
        self.file.flush()
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{record.get('loss', 0):.4f}", acc=f"{record.get('rewards/accuracies', 0):.2f}")
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.file is not None:
            self.file.close()


def save(model: Any, tokenizer: Any, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


@torch.no_grad()
def evaluate(scorer: Any, pairs: list[EncodedPair], reference: torch.Tensor, config: TrainConfig, loss_config: DPOLossConfig,
             pad_id: int, device: torch.device) -> dict[str, float]:
    totals: dict[str, float] = {}
    count = 0
    for start in range(0, len(pairs), config.batch_size):
        indices = list(range(start, min(start + config.batch_size, len(pairs))))
        batch = collate([pairs[i] for i in indices], indices, pad_id).to(device)
        sums, counts = scorer(batch.input_ids, batch.attention_mask, batch.completion_mask)
        metrics = dpo_loss(sums, counts, _reference_for(batch, reference, device), loss_config).metrics()
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + value * len(indices)
        count += len(indices)
    return {f"val/{k}": v / count for k, v in totals.items()}


def train(config: TrainConfig) -> dict[str, Any]:
    """Train; returns a summary (final loss, accuracies, output path)."""
    dist = Distributed.from_env()
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    device = torch.device(f"cuda:{dist.local_rank}" if torch.cuda.is_available() else "cpu")
    if dist.world_size > 1:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)
    output = Path(config.output_dir)
    if dist.is_main:
        output.mkdir(parents=True, exist_ok=True)

    model, tokenizer = load_model_and_tokenizer(config, device)
    dataset = Path(config.dataset_dir)
    train_pairs = [encode(tokenizer, row, config.max_seq_length) for row in read_jsonl(dataset / "training/training_file.jsonl")]
    validation_file = dataset / "validation/validation_file.jsonl"
    val_pairs = ([encode(tokenizer, row, config.max_seq_length) for row in read_jsonl(validation_file)]
                 if validation_file.exists() else [])
    pad_id = tokenizer.pad_token_id
    sft = config.training_type == "sft"
    loss_config = DPOLossConfig(beta=config.beta, average_log_probs=config.preference_average_log_probs,
                                preference_loss_weight=0.0 if sft else config.preference_loss_weight,
                                sft_loss_weight=1.0 if sft else config.sft_loss_weight)

    started = time.perf_counter()
    reference = reference_logps(model, train_pairs, config.batch_size, pad_id, device)
    val_reference = reference_logps(model, val_pairs, config.batch_size, pad_id, device) if val_pairs else None
    reference_seconds = time.perf_counter() - started

    scorer: Any = CompletionLogps(model)
    if dist.world_size > 1:
        scorer = torch.nn.parallel.DistributedDataParallel(scorer, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    steps_per_epoch = math.ceil(math.ceil(len(train_pairs) / config.batch_size) / config.gradient_accumulation_steps)
    total_steps = min(config.max_steps or 10**12, steps_per_epoch * config.epochs)
    sink = MetricsSink(output, total_steps, dist.is_main)
    model.train()
    step = 0
    last: dict[str, float] = {}
    tokens, loop_started = 0, time.perf_counter()
    try:
        for epoch in range(config.epochs):
            epoch_batches = batches(train_pairs, config.batch_size, config.seed, epoch, pad_id, (dist.rank, dist.world_size))
            for micro, batch in enumerate(epoch_batches):
                batch = batch.to(device)
                sums, counts = scorer(batch.input_ids, batch.attention_mask, batch.completion_mask)
                out = dpo_loss(sums, counts, _reference_for(batch, reference, device), loss_config)
                (out.loss / config.gradient_accumulation_steps).backward()
                tokens += int(batch.attention_mask.sum())
                if (micro + 1) % config.gradient_accumulation_steps and micro + 1 < len(epoch_batches):
                    continue
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                elapsed = time.perf_counter() - loop_started
                last = {**out.metrics(), "step": step, "epoch": epoch + (micro + 1) / len(epoch_batches),
                        "grad_norm": float(grad_norm), "tokens_per_second": tokens * dist.world_size / max(elapsed, 1e-9)}
                sink.write(last)
                if dist.is_main and config.save_every_steps and step % config.save_every_steps == 0:
                    save(model, tokenizer, output / f"checkpoint-{step}")
                if step >= total_steps:
                    break
            if step >= total_steps:
                break
        summary: dict[str, Any] = {"steps": step, "train": last, "referenceSeconds": round(reference_seconds, 3),
                                   "trainSeconds": round(time.perf_counter() - loop_started, 3)}
        if val_pairs and val_reference is not None:
            model.eval()
            summary["validation"] = evaluate(CompletionLogps(model), val_pairs, val_reference, config, loss_config, pad_id, device)
        if dist.is_main:
            save(model, tokenizer, output / "final")
            summary["outputModel"] = str(output / "final")
            (output / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        return summary
    finally:
        sink.close()
        if dist.world_size > 1:
            torch.distributed.destroy_process_group()


def config_to_json(config: TrainConfig) -> str:
    return json.dumps(asdict(config), sort_keys=True)
