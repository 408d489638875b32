"""The DPO training loop. It reads as the algorithm; the rest lives beside it:

- ``data``: lazy rows, per-epoch length-grouped global batches, each rank's share of a batch;
- ``distributed``: one process, DDP or FSDP2 behind one interface;
- ``precision``: fp32 master weights with bf16 (or loss-scaled fp16) compute;
- ``optim``: AdamW parameter groups and learning-rate schedules;
- ``checkpoint``: resumable, atomic checkpoints; ``metrics``: per-step records to JSON lines, TensorBoard, W&B;
- ``prefetch``: the next steps' batches prepared on the host while a GPU computes.

The reference policy is the model before training: its completion log-probs are computed once, before the first
step, each rank scoring its own share of the pairs (with a fresh LoRA adapter: adapters disabled, so no second copy
of the weights exists). A run may continue a saved adapter (``adapter``) and name another reference: the base model
(``reference_base``: adapters disabled again) or a model loaded for the reference pass only (``reference``), then
freed (``adapters``). Each step runs chosen and rejected sequences through one forward pass and the LM head sees only the
positions that predict completion tokens. Where the attention takes a custom mask, a pair is one sequence
(prompt, chosen, rejected) in which the rejected response sees the prompt but not the chosen one, so the prompt is
computed once per pair rather than twice (``data.Batch``); a check on the longest pairs falls back to two sequences.
Every rank runs the same number of forward/backward passes and optimizer steps; ranks' losses are weighted by
their pair counts so the update equals the single-process one. Under FSDP only rank 0 reads the weights.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from dpo_operator.api.training import DatasetSource, DPOTrainingJobSpec, Hyperparameters, LocalBackend
from dpo_operator.train import adapters, checkpoint, distributed
from dpo_operator.train.preemption import Preempted, StopOnSigterm
from dpo_operator.train.data import (Batch, EncodedDataset, EncodedPair, collate, epoch_batches,
                                     longest_pairs, rank_share, sharded_chunks)
from dpo_operator.train.logprobs import CompletionLogps, custom_mask_problem, supports_custom_masks
from dpo_operator.train.loss import DPOLossConfig, dpo_loss
from dpo_operator.train.metrics import METRIC_KEYS, MetricsSink, StepReports
from dpo_operator.train.offline import LIKELIHOOD_KEYS, likelihood_preferences
from dpo_operator.train.optim import build_optimizer, build_scheduler, warmup_steps
from dpo_operator.train.plots import write_plots
from dpo_operator.train.precision import MixedPrecision
from dpo_operator.train.prefetch import Prefetcher
from dpo_operator.train.progress import TrainerProgress
from dpo_operator.train.sources import Reading, open_splits

log = logging.getLogger(__name__)
PREFETCH_DEPTH = 2  # steps (or scoring chunks) prepared ahead on the host while a GPU computes


@dataclass
class MicroBatch:
    """One rank's share of a global micro-batch, prepared on the host (pinned when the device is a GPU)."""

    batch: Batch
    reference: torch.Tensor  # [2B] the reference log-prob sums of its sequences (chosen rows, then rejected)
    weight: float  # its loss weight (0 for a filler pair)


@dataclass
class PlannedStep:
    """An optimizer step: the global micro-batches it accumulates and where training stands after it."""

    group: list[list[int]]
    after: checkpoint.Position
    epoch_length: int  # global micro-batches in this epoch


class TrainConfig(BaseModel):
    """What a training run takes: the spec's own models (``Hyperparameters``, the local backend's settings) and
    only what the spec does not hold (where things are, step limits, resume)."""

    model_config = ConfigDict(extra="forbid")

    model: str  # a local directory or a hub repo id (offline: must be cached)
    dataset_dir: str  # holds the dataset's files (read as ``dataset`` says: sources.Reading)
    output_dir: str
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    local: LocalBackend = Field(default_factory=LocalBackend)
    group_by_length: bool = True
    resume: bool = True
    max_steps: int | None = None
    log_every_steps: int = 10  # a readable log line every N steps (and the first and last)
    progress_seconds: float = 5.0  # a progress line for the operator at most this often (and at each phase change)
    plots: bool = True  # PNG curves beside metrics.jsonl at the end (needs matplotlib)
    dataset: DatasetSource | None = None  # files, format, split; None: our own layout
    adapter: str | None = None  # a saved LoRA adapter to continue (model.adapter): loaded trainable
    reference: str | None = None  # a reference policy loaded for the reference pass only (a directory or hub id)
    reference_base: bool = False  # the reference is the base model: scored with the adapters off (LoRA)

    @classmethod
    def from_spec(cls, spec: DPOTrainingJobSpec, model: str, dataset_dir: str, output_dir: str,
                  adapter: str | None = None, reference: str | None = None) -> "TrainConfig":
        """``adapter`` and ``reference``: where model.adapter and referenceModel are (mounted directories); a hub
        reference defaults to its name. A reference equal to the base model is never loaded again: with a starting
        adapter it is the base with the adapters off, otherwise it is the starting policy itself."""
        if spec.model.adapter is not None and adapter is None:
            raise ValueError("model.adapter is set but no adapter directory was given (--adapter)")
        chosen, lora = spec.reference_model, spec.hyperparameters.finetuning_type == "lora"
        separate = chosen is not None and not chosen.same_weights(spec.model)
        return cls(model=model, dataset_dir=dataset_dir, output_dir=output_dir, hyperparameters=spec.hyperparameters,
                   local=spec.local or LocalBackend(), dataset=spec.dataset,
                   adapter=adapter if spec.model.adapter is not None else None,
                   reference=(reference or chosen.name) if separate and chosen is not None else None,
                   reference_base=chosen is not None and not separate and lora and spec.model.adapter is not None)

    def reading(self) -> Reading:
        seed = self.hyperparameters.seed
        return Reading.from_spec(self.dataset, seed) if self.dataset is not None else Reading(seed=seed)

    @property
    def precision(self) -> str:
        return _name(self.local.precision)

    @property
    def lora(self) -> bool:
        return self.hyperparameters.finetuning_type == "lora"

    def loss_config(self) -> DPOLossConfig:
        return DPOLossConfig.from_hyperparameters(self.hyperparameters)

    def run_config(self) -> dict[str, Any]:
        """The run's configuration as W&B records it: the hyperparameters at the top level, the rest beside them."""
        settings = self.model_dump(mode="json")
        return {**settings.pop("hyperparameters"), **settings}


def _name(choice: Any) -> str:
    """An API enum's value (defaults are enum members; values read from a spec are already strings)."""
    return str(getattr(choice, "value", choice))


def load_tokenizer(config: TrainConfig) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(config.model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(config: TrainConfig, precision: MixedPrecision, on_meta: bool = False) -> Any:
    """On the CPU: the strategy places it (FSDP moves only each rank's shards to its GPU). ``on_meta``: the same
    model without its weights (no memory), to be filled in by the strategy."""
    from transformers import AutoConfig, AutoModelForCausalLM

    lora, local, adapters_spec = config.lora, config.local, config.hyperparameters.lora
    if on_meta:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(config.model),
                                                     dtype=precision.frozen_weight_dtype(lora))
    else:
        model = AutoModelForCausalLM.from_pretrained(config.model, dtype=precision.frozen_weight_dtype(lora))
    model.config.use_cache = False
    if local.activation_checkpointing:  # per decoder layer, recomputed in backward
        if hasattr(model, "activation_checkpointing_enable"):  # transformers 5.x; the older name is deprecated
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora and config.adapter is not None:
        model = adapters.attach_adapter(model, config.adapter, adapters_spec, on_meta)
    elif lora:
        from peft import LoraConfig, get_peft_model

        fresh = LoraConfig(r=adapters_spec.rank, lora_alpha=adapters_spec.alpha, lora_dropout=adapters_spec.dropout,
                              target_modules=adapters_spec.target_modules or "all-linear", task_type="CAUSAL_LM")
        model = get_peft_model(model, fresh)  # adapters stay fp32 on a bf16 base
    if local.compile:
        compile_layers(model)
    return model


def compile_layers(model: Any) -> None:
    """``torch.compile`` each decoder layer's ``forward``: its norms, rotary embedding, activations and residual
    adds become fused kernels. Only ``forward``: the hooks FSDP registers on a layer and the activation
    checkpointing around its call stay outside the compiled code. A layer compiles once per kind of input (shapes
    become dynamic after the first change; training, and scoring without gradients, are compiled apart)."""
    for layer in distributed.decoder_layers(model):
        layer.forward = torch.compile(layer.forward)


class Trainer:
    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.env = distributed.Environment.from_env()
        self.progress = TrainerProgress(config.max_steps, self.env.is_main, config.log_every_steps,
                                         config.progress_seconds)
        with self.progress.phase("loading model"):
            self._load(config)

    def _load(self, config: TrainConfig) -> None:
        self.device = self.env.device()
        self.precision = MixedPrecision(config.precision, self.device.type)
        torch.manual_seed(config.hyperparameters.seed)
        random.seed(config.hyperparameters.seed)
        self.tokenizer = load_tokenizer(config)
        skeleton = load_model(config, self.precision, on_meta=True)
        gpu_bytes = torch.cuda.get_device_properties(self.device).total_memory if self.device.type == "cuda" else None
        parameters = sum(p.numel() for p in skeleton.parameters())
        strategy = distributed.choose(_name(config.local.strategy), config.lora, parameters, gpu_bytes,
                                      self.env.world_size)
        if strategy == "fsdp" and config.precision == "fp16":
            raise ValueError("precision fp16 is not supported with strategy fsdp: use bf16")
        self.env.init(self.device, needs_group=strategy == "fsdp")
        self.strategy = distributed.build(strategy, self.env, self.device,
                                          self.precision.compute_dtype if config.precision != "fp32" else None)
        self.precision.autocast_enabled = strategy != "fsdp"  # FSDP's policy casts the parameters instead
        # sharded over several ranks, only rank 0 reads the weights (host memory for one copy, not one a rank): the
        # others shard the weightless skeleton and receive their shards from it
        self.loaded_by = "rank 0" if strategy == "fsdp" and self.env.world_size > 1 else "every rank"
        source = None
        if self.loaded_by == "every rank":
            self.model = load_model(config, self.precision)
        else:
            self.model = skeleton
            if self.env.is_main:
                source = load_model(config, self.precision)
        del skeleton
        self.model = self.strategy.place(self.model)
        self.scorer = CompletionLogps(self.model)  # under FSDP this very module becomes the sharded root
        self.trainable = self.strategy.wrap(self.scorer)
        if self.loaded_by == "rank 0":
            self.strategy.materialize(self.model, source)
            del source
        self.strategy.initialise(self.trainable)
        self.pad_id = self.tokenizer.pad_token_id
        self.output = Path(config.output_dir)
        self.loss_config = config.loss_config()
        self.last_validation: dict[str, float] = {}
        self.shared_prompt = config.local.shared_prompt and supports_custom_masks(self.model)
        self.reference_loads = 0  # reference models loaded besides the policy (referenceModel): 0 or 1 a run
        if config.local.shared_prompt and not self.shared_prompt:
            log.info("two sequences per pair: %s", custom_mask_problem(self.model))

    # -- host-side preparation (in the prefetch thread) and the copy to the device --------------------------------

    @property
    def _prefetch_depth(self) -> int:
        """Ahead of a GPU; inline on a CPU, where a preparing thread would take cores from the computation."""
        return PREFETCH_DEPTH if self.device.type == "cuda" else 0

    @property
    def _pinned(self) -> bool:
        return self.device.type == "cuda"  # page-locked memory: the copy to the GPU does not wait for it

    def _host_batch(self, dataset: EncodedDataset, indices: list[int], shared_prompt: bool | None = None) -> Batch:
        shared = self.shared_prompt if shared_prompt is None else shared_prompt
        batch = collate([dataset[i] for i in indices], indices, self.pad_id, shared_prompt=shared)
        return batch.pin() if self._pinned else batch

    def _host_tensor(self, values: torch.Tensor) -> torch.Tensor:
        return values.pin_memory() if self._pinned else values

    def _collate(self, dataset: EncodedDataset, indices: list[int], shared_prompt: bool | None = None) -> Batch:
        return self._host_batch(dataset, indices, shared_prompt).to(self.device)

    def _reference_rows(self, indices: list[int], reference: torch.Tensor) -> torch.Tensor:
        rows = reference[indices]
        return self._host_tensor(torch.cat([rows[:, 0], rows[:, 1]]))

    def _micro_batches(self, group: list[list[int]], dataset: EncodedDataset, reference: torch.Tensor) -> list[MicroBatch]:
        """This rank's micro-batches of an optimizer step over the global micro-batches ``group``."""
        pairs_in_step = sum(len(indices) for indices in group)
        shares = [rank_share(indices, self.env.rank, self.env.world_size, pairs_in_step) for indices in group]
        return [MicroBatch(self._host_batch(dataset, share.indices), self._reference_rows(share.indices, reference),
                           share.weight) for share in shares]

    @torch.no_grad()
    def check_logits(self, dataset: EncodedDataset) -> None:
        """Refuse a model whose log-probs through its own head path differ from its complete forward.

        The head path runs the model's ``ForCausalLM.forward`` from the decoder's output on (``logprobs``), so any
        post-head step is applied; this catches an architecture whose forward does something else besides (one
        short pair, full logits: cheap at any vocabulary). Every rank reaches the same decision."""
        pair = dataset[0]
        short = [EncodedPair(pair.prompt[-32:], pair.chosen[:16], pair.rejected[:16])]
        batch = collate(short, [0], self.pad_id).to(self.device)
        self.model.eval()
        with self.precision.autocast():
            ours, counts = self.scorer(**batch.inputs())
            full, _ = self.scorer(**batch.inputs(), full_forward=True)
        self.strategy.after_inference(self.scorer)
        self.model.train()
        difference = (ours.float() - full.float()).abs()
        worst = self.env.all_sum(torch.tensor([float((difference / counts.clamp(min=1)).max())], device=self.device))
        if float(worst[0]) > self._per_token_tolerance():
            name = type(self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model).__name__
            raise ValueError(f"{name}: completion log-probs computed through its LM head differ from its own forward "
                             f"by up to {float(difference.max()):.4g} nats a sequence; this architecture is not "
                             "supported by the local trainer")

    def _per_token_tolerance(self) -> float:
        return 1e-3 if self.config.precision == "fp32" else 5e-2

    @torch.no_grad()
    def check_shared_prompt(self, dataset: EncodedDataset, sizes: Any = None) -> None:
        """Keep the shared-prompt layout only if this model scores the longest pairs in it as in two sequences.

        A guard for architectures whose attention ignores a custom mask, position ids or a window in it (a wrong
        layout would silently train on rejected responses that see the chosen ones, or outside their window): the
        longest pairs are the likeliest to exceed a sliding window. Every rank reaches the same decision."""
        if not self.shared_prompt:
            return
        indices = longest_pairs(dataset, sizes)
        self.model.eval()
        problem = None
        with self.precision.autocast():
            separate, counts = self.scorer(**self._collate(dataset, indices, False).inputs())
            try:
                shared, _ = self.scorer(**self._collate(dataset, indices, True).inputs())
            except (TypeError, ValueError, KeyError, AttributeError, RuntimeError) as exc:  # a mask it cannot take
                problem, shared = f"{type(exc).__name__}: {exc}", torch.full_like(separate, float("inf"))
        self.strategy.after_inference(self.scorer)
        self.model.train()
        agrees = bool(((shared.float() - separate.float()).abs() <= self._per_token_tolerance() * counts.clamp(min=1)).all())
        agreed = self.env.all_sum(torch.tensor([0.0 if agrees else 1.0], device=self.device))
        if float(agreed[0]) > 0:
            log.warning("the shared-prompt layout scores differently from two sequences with this model "
                        "(|difference| up to %.4g%s); training with two sequences per pair",
                        float((shared.float() - separate.float()).abs().max()), f"; {problem}" if problem else "")
            self.shared_prompt = False

    # -- the reference policy and evaluation: no gradients, each rank scores its own share -----------------------

    def _chunk_size(self) -> int:
        return 2 * max(1, -(-self.config.hyperparameters.batch_size // self.env.world_size))

    def describe_reference(self) -> str:
        if self.config.reference is not None:
            return f"{self.config.reference} (loaded for the reference pass)"
        if self.config.lora and self.config.adapter is not None and not self.config.reference_base:
            return "the starting policy (base model and model.adapter)"
        return "the base model (adapters off)" if self.config.lora else "the starting model"

    @contextmanager
    def reference_policy(self) -> Iterator[Any]:
        """The scorer of the reference policy, for the reference passes inside: the policy as it is before training
        (adapters off when they are fresh, or when the reference is the base), or a model loaded apart and freed
        on leaving."""
        if self.config.reference is not None:
            with self._loaded_reference() as scorer:
                yield scorer
            return
        adapters_off = self.config.lora and (self.config.adapter is None or self.config.reference_base)
        disable = self.model.disable_adapter() if adapters_off and hasattr(self.model, "disable_adapter") \
            else nullcontext()
        self.model.eval()
        try:
            with disable:
                yield self.scorer
        finally:
            self.model.train()

    @contextmanager
    def _loaded_reference(self) -> Iterator[Any]:
        """referenceModel, placed as the policy is (each rank whole, or sharded with only rank 0 reading it)."""
        assert self.config.reference is not None
        name, dtype, token = self.config.reference, self.precision.frozen_weight_dtype(True), \
            os.environ.get("REFERENCE_HF_TOKEN")
        source = None
        if self.loaded_by == "rank 0":
            model = adapters.load_reference(name, dtype, token, len(self.tokenizer), on_meta=True)
            if self.env.is_main:
                source = adapters.load_reference(name, dtype, token, len(self.tokenizer))
        else:
            model = adapters.load_reference(name, dtype, token, len(self.tokenizer))
        self.reference_loads += 1
        log.info("reference policy: %s", name)
        scorer = self.strategy.frozen(model, CompletionLogps)
        if self.loaded_by == "rank 0":
            self.strategy.materialize(model, source)
            del source
        try:
            yield scorer
        finally:
            del scorer, model
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    @torch.no_grad()
    def reference_logps(self, dataset: EncodedDataset, sizes: Any, scorer: Any = None) -> torch.Tensor:
        """[N, 2] (chosen, rejected) summed completion log-probs of the reference policy (``scorer``: one already
        opened with :meth:`reference_policy`)."""
        if scorer is None:
            with self.reference_policy() as opened:
                return self.reference_logps(dataset, sizes, opened)
        count, env = len(dataset), self.env
        local = torch.zeros(-(-count // env.world_size), 2, device=self.device)
        shared = self.shared_prompt and (scorer is self.scorer or supports_custom_masks(scorer.model))

        def prepare(chunk: tuple[list[int], int]) -> tuple[Batch, torch.Tensor]:
            indices, real = chunk
            rows = torch.tensor([(i - env.rank) // env.world_size for i in indices[:real]], dtype=torch.long)
            return self._host_batch(dataset, indices, shared), self._host_tensor(rows)

        chunks = sharded_chunks(count, env.rank, env.world_size, self._chunk_size(), sizes)
        with Prefetcher(chunks, prepare, self._prefetch_depth) as prepared:
            for (indices, real), (host, host_rows) in prepared:
                batch, rows = host.to(self.device), host_rows.to(self.device, non_blocking=True)
                with self.precision.autocast():
                    sums, _ = scorer(**batch.inputs())
                pairs = len(indices)
                local[rows, 0] = sums[:real].float()
                local[rows, 1] = sums[pairs: pairs + real].float()
        self.strategy.after_inference(scorer)
        return env.gather_strided(local, count).cpu()

    @torch.no_grad()
    def evaluate(self, dataset: EncodedDataset, reference: torch.Tensor) -> dict[str, float]:
        """The validation pairs' DPO metrics (``val/<metric>``) and each model's likelihood preference accuracy
        (``val/logps_accuracy``, ``val/reference/logps_accuracy``...: :mod:`dpo_operator.train.offline`)."""
        width = len(METRIC_KEYS) + len(LIKELIHOOD_KEYS)
        totals = torch.zeros(width + 1, device=self.device)
        self.model.eval()
        chunks = sharded_chunks(len(dataset), self.env.rank, self.env.world_size, self._chunk_size())
        prepare = lambda chunk: (self._host_batch(dataset, chunk[0]), self._reference_rows(chunk[0], reference))  # noqa: E731
        with Prefetcher(chunks, prepare, self._prefetch_depth) as prepared:
            for (_, real), (host, host_reference) in prepared:
                batch = host.to(self.device)
                with self.precision.autocast():
                    sums, counts = self.scorer(**batch.inputs())
                reference_sums = host_reference.to(self.device, non_blocking=True)
                # only the real pairs: a filler would enter batch-wide terms (aot's sort, sft's token mean)
                rows = torch.cat([torch.arange(real), torch.arange(real) + batch.pairs]).to(self.device)
                per_pair = dpo_loss(sums[rows], counts[rows], reference_sums[rows], self.loss_config).per_pair()
                totals[: len(METRIC_KEYS)] += torch.stack([per_pair[key].float().sum() for key in METRIC_KEYS])
                totals[len(METRIC_KEYS): width] += likelihood_preferences(sums[rows], counts[rows], reference_sums[rows])
                totals[-1] += real
        self.strategy.after_inference(self.scorer)
        self.model.train()
        totals = self.env.all_sum(totals)
        metrics = {f"val/{key}": float(totals[i] / totals[-1]) for i, key in enumerate((*METRIC_KEYS, *LIKELIHOOD_KEYS))}
        return {**metrics, "val/pairs": float(totals[-1])}

    def _cached_reference(self, dataset: EncodedDataset) -> torch.Tensor | None:
        cache = self.output / "checkpoints" / "reference.pt"
        if cache.is_file():
            cached = torch.load(cache, weights_only=True)
            if cached.shape == (len(dataset), 2):
                return cached
        return None

    def _reference(self, dataset: EncodedDataset, sizes: Any, scorer: Any) -> torch.Tensor:
        """Computed once; kept beside the checkpoints so a resumed run does not score the dataset again."""
        cache = self.output / "checkpoints" / "reference.pt"
        reference = self.reference_logps(dataset, sizes, scorer)
        if self.env.is_main and self.config.local.save_every_steps:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save(reference, cache.with_suffix(".tmp"))
            cache.with_suffix(".tmp").replace(cache)
        return reference

    # -- training ----------------------------------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        config, env = self.config, self.env
        h, local = config.hyperparameters, config.local
        if env.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
        env.barrier()
        splits = open_splits(Path(config.dataset_dir), config.reading())
        rows = splits.training
        dataset = EncodedDataset(rows, self.tokenizer, h.max_seq_length)
        validation = EncodedDataset(splits.validation, self.tokenizer, h.max_seq_length) \
            if splits.validation is not None else None
        sizes = rows.sizes()

        batches_per_epoch = -(-len(dataset) // h.batch_size)
        steps_per_epoch = -(-batches_per_epoch // local.gradient_accumulation_steps)
        total_steps = min(config.max_steps or 10**12, steps_per_epoch * h.epochs)
        optimizer = build_optimizer(self.model, h.learning_rate, h.weight_decay,
                                    fused=self.device.type == "cuda" and self.strategy.name != "fsdp")
        scheduler = build_scheduler(optimizer, _name(h.lr_scheduler), total_steps,
                                    warmup_steps(total_steps, h.warmup_steps, h.warmup_ratio))
        saved = checkpoint.latest(self.output / "checkpoints") if config.resume else None
        self.progress.report.total_steps = total_steps
        started = time.perf_counter()
        with self.progress.phase("reference pass"):
            self.check_logits(dataset)
            self.check_shared_prompt(dataset, sizes)
            reference = self._cached_reference(dataset) if saved is not None else None
            val_reference = None
            if reference is None or validation is not None:  # a reference model is loaded only to be used
                log.info("reference policy: %s", self.describe_reference())
                with self.reference_policy() as scorer:
                    if reference is None:
                        reference = self._reference(dataset, sizes, scorer)
                    if validation is not None:
                        val_reference = self.reference_logps(validation, validation.rows.sizes(), scorer)
            reference_seconds = time.perf_counter() - started

        position = checkpoint.Position()
        if saved is not None:
            position, scaler_state = checkpoint.load(saved, self.model, optimizer, scheduler, env)
            self.precision.load_state_dict(scaler_state)
            log.info("resumed from %s (step %d)", saved, position.step)
        resumed_from = position.step if saved is not None else None
        sink = MetricsSink(self.output, total_steps, env.is_main, config.run_config())
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.model.train()
        reports = StepReports(sink, deferred=self.device.type == "cuda", on_record=self.progress.step)
        prepare = lambda planned: self._micro_batches(planned.group, dataset, reference)  # noqa: E731
        validated_at = None
        try:
            self.progress.training_from(position.step)
            with self.progress.phase("training"), \
                    Prefetcher(self._plan(position, total_steps, sizes), prepare, self._prefetch_depth) as steps, \
                    StopOnSigterm(env, self.device) as sigterm:
                for planned, micro_batches in steps:
                    totals = self._step(micro_batches, optimizer, scheduler, parameters)
                    position = planned.after
                    stopping = sigterm.agreed() and position.step < total_steps  # preempted: save, then exit
                    saving = stopping or (bool(local.save_every_steps) and position.step % local.save_every_steps == 0
                                          and position.step < total_steps)
                    epoch = position.epoch + position.batches_done / planned.epoch_length
                    validating = not stopping and validation is not None and bool(h.validate_every_steps) \
                        and position.step % (h.validate_every_steps or 1) == 0
                    reports.add(totals, position.step, epoch, scheduler.get_last_lr()[0], now=saving or validating)
                    if validating:
                        assert validation is not None and val_reference is not None
                        self._validate(validation, val_reference, sink, position.step, epoch)
                        validated_at = position.step
                    if saving:
                        checkpoint.save(self.output / "checkpoints", position, self.model, optimizer, scheduler,
                                        self.precision.state_dict(), env)
                    if stopping:
                        reports.flush()
                        raise Preempted(position.step)
                reports.flush()
            summary: dict[str, Any] = {"steps": position.step, "train": reports.last, "referenceSeconds": round(reference_seconds, 3),
                                       "trainSeconds": round(time.perf_counter() - reports.started, 3),
                                       "smoothedTrainLoss": self.progress.report.smoothed_train_loss,
                                       "strategy": self.strategy.name, "resumedFromStep": resumed_from,
                                       "sharedPrompt": self.shared_prompt, "weightsLoadedBy": self.loaded_by,
                                       "reference": self.describe_reference(), "referenceLoads": self.reference_loads}
            if validation is not None and val_reference is not None:
                summary["validation"] = self.last_validation if validated_at == position.step else \
                    self._validate(validation, val_reference, sink, position.step, float(position.epoch))
            with self.progress.phase("saving"):
                self.save_final(self.output / "final")
                if env.is_main:
                    summary["outputModel"] = str(self.output / "final")
                    (self.output / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
                    sink.close()
                    if config.plots:
                        write_plots(self.output)
            self.progress.finished()
            return summary
        finally:
            sink.close()
            rows.close()

    def _validate(self, validation: EncodedDataset, reference: torch.Tensor, sink: MetricsSink, step: int,
                  epoch: float) -> dict[str, float]:
        """Score the validation split now. With ``validateEverySteps`` the record (``val/...``) also goes to
        metrics.jsonl and TensorBoard; without, metrics.jsonl keeps one training record a step, as before."""
        with self.progress.phase("validating"):
            metrics = self.evaluate(validation, reference)
        if self.config.hyperparameters.validate_every_steps:
            sink.write({"step": step, "epoch": epoch, **metrics})
        self.progress.validation(metrics)
        self.last_validation = metrics
        return metrics

    def _plan(self, position: checkpoint.Position, total_steps: int, sizes: Any) -> Iterator[PlannedStep]:
        """The optimizer steps from ``position`` to the end of training (every rank plans the same)."""
        h, accumulate = self.config.hyperparameters, self.config.local.gradient_accumulation_steps
        while position.step < total_steps and position.epoch < h.epochs:
            epoch = epoch_batches(sizes, h.batch_size, h.seed, position.epoch, self.config.group_by_length)
            for first in range(position.batches_done, len(epoch), accumulate):
                group = epoch[first: first + accumulate]
                done = first + len(group)
                position = checkpoint.Position(position.step + 1, position.epoch, done) if done < len(epoch) \
                    else checkpoint.Position(position.step + 1, position.epoch + 1, 0)
                yield PlannedStep(group, position, len(epoch))
                if position.step >= total_steps:
                    return

    def _step(self, micro_batches: list[MicroBatch], optimizer: torch.optim.Optimizer, scheduler: Any,
              parameters: list[torch.nn.Parameter]) -> torch.Tensor:
        """One optimizer step over this rank's ``micro_batches``. Returns, on the device and summed over ranks, the
        metric sums, real pairs, real tokens, then the gradient norm: nothing here makes the host wait for the GPU."""
        totals = torch.zeros(len(METRIC_KEYS) + 3, device=self.device)
        for micro, part in enumerate(micro_batches):
            batch = part.batch.to(self.device)
            reference = part.reference.to(self.device, non_blocking=True)
            with self.strategy.accumulating(self.trainable, sync=micro == len(micro_batches) - 1):
                with self.precision.autocast():
                    sums, counts, router = self.trainable(**batch.inputs(), router_loss=True)
                out = dpo_loss(sums, counts, reference, self.loss_config)
                # a mixture-of-experts model's load-balancing loss, weighted as its config asks (0 otherwise)
                self.precision.backward((out.loss + self.scorer.router_aux_loss_coef * router) * part.weight)
            if part.weight:
                per_pair = out.per_pair()
                totals[: len(METRIC_KEYS)] += torch.stack([per_pair[key].float().sum() for key in METRIC_KEYS])
                totals[len(METRIC_KEYS)] += batch.pairs
                totals[len(METRIC_KEYS) + 1] += batch.tokens
        self.precision.unscale(optimizer)
        grad_norm = self.strategy.clip_grad_norm(parameters, self.config.hyperparameters.max_grad_norm)
        self.precision.step(optimizer)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        totals = self.env.all_sum(totals)
        totals[-1] = grad_norm  # the same on every rank: not summed
        return totals

    def save_final(self, path: Path) -> None:
        """Hugging Face format: the whole model (consolidated on rank 0 under FSDP) or the LoRA adapter."""
        state = self.strategy.full_state_dict(self.model)
        if self.env.is_main:
            path.mkdir(parents=True, exist_ok=True)
            if state is None:
                self.model.save_pretrained(path)
            else:
                self.model.save_pretrained(path, state_dict=state)
            self.tokenizer.save_pretrained(path)
        self.env.barrier()


# Trainers of several ranks, kept until the process ends: freeing a DDP model after its gloo group is gone can
# deadlock (torch joins the group's worker threads while holding the GIL one of them waits for; seen after a
# torchrun restart). The CLI leaves with os._exit instead (see dpo_operator.cli).
_FINISHED: list["Trainer"] = []


def train(config: TrainConfig) -> dict[str, Any]:
    """Train; returns a summary (steps, final metrics, validation, output path)."""
    trainer = Trainer(config)
    try:
        return trainer.train()
    finally:
        trainer.env.close()
        if trainer.env.world_size > 1:
            _FINISHED.append(trainer)


