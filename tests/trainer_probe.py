"""Test harness: ``[torchrun ...] python tests/trainer_probe.py CONFIG_JSON RESULT_DIR`` trains with the real
``Trainer`` (the same ``TrainConfig`` fields as JSON) and records what a test cannot see from outside the process:

- calls of every decoder layer (its forward hooks) and of every decoder layer's body (its ``mlp.forward``,
  wrapped), and forward hooks of every LoRA ``lora_A`` module, split by phase (``reference``: the reference log-prob
  passes, ``evaluate``: validation, ``layout``: the shared-prompt layout's check on the first pairs, ``train``: the
  training steps, ``probe``: the logits below). Activation
  checkpointing shows in the bodies only: transformers checkpoints a layer's ``forward`` inside its ``__call__``,
  so the layer's hooks fire once, and torch's recomputation in backward (2.13, non-reentrant) does not fire module
  hooks either; the wrapped ``mlp.forward`` does run again;
- how many causal LMs and decoder layers exist in the process (one model: no reference copy);
- the trained model's logits on ``PROBE_TEXTS`` (taken from the live, possibly sharded, model after training).

Rank 0 writes ``RESULT_DIR/probe.json`` and ``RESULT_DIR/logits.pt``. ``probe()`` also runs in-process.
"""

from __future__ import annotations

import gc
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dpo_operator.train.trainer import TrainConfig, Trainer

PROBE_TEXTS = ["Q1: is 6 fine? yes fine", "Q3: is 8 fine? no!no!no!", "hello"]


@dataclass
class ForwardCounter:
    """Counts module forwards (recomputations under activation checkpointing included) by the current phase."""

    phase: str = "train"
    layers: Counter = field(default_factory=Counter)
    bodies: Counter = field(default_factory=Counter)
    lora: Counter = field(default_factory=Counter)

    def attach(self, trainer: Trainer) -> None:
        for layer in decoder_layers(trainer.model):
            layer.register_forward_hook(lambda *_: self.layers.update([self.phase]))
            layer.mlp.forward = self._counting(layer.mlp.forward)
        for name, module in trainer.model.named_modules():
            if name.endswith("lora_A.default"):
                module.register_forward_hook(lambda *_: self.lora.update([self.phase]))
        trainer.reference_logps = self._tagged(trainer.reference_logps, "reference")  # type: ignore[method-assign]
        trainer.evaluate = self._tagged(trainer.evaluate, "evaluate")  # type: ignore[method-assign]
        trainer.check_shared_prompt = self._tagged(trainer.check_shared_prompt, "layout")  # type: ignore[method-assign]
        trainer.check_logits = self._tagged(trainer.check_logits, "layout")  # type: ignore[method-assign]

    def _counting(self, forward: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            self.bodies.update([self.phase])
            return forward(*args, **kwargs)

        return run

    def _tagged(self, function: Any, phase: str) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            self.phase = phase
            try:
                return function(*args, **kwargs)
            finally:
                self.phase = "train"

        return run


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """As ``distributed.decoder_layers``, also once ``fully_shard`` has renamed their classes (FSDP<name>)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(base._no_split_modules or [])
    return [m for m in base.modules() if any(c.__name__ in names for c in type(m).__mro__)]


def live_models() -> dict[str, int]:
    from transformers import PreTrainedModel

    gc.collect()
    objects = gc.get_objects()
    kinds = [type(o) for o in objects]  # type(), not isinstance(): no attribute lookups on arbitrary objects
    causal = [k for k in kinds if issubclass(k, PreTrainedModel) and k.__name__.endswith("ForCausalLM")]
    layers = [k for k in kinds if issubclass(k, torch.nn.Module) and k.__name__.endswith("DecoderLayer")]
    return {"causal_lms": len(causal), "decoder_layers": len(layers)}


@torch.no_grad()
def trained_logits(trainer: Trainer) -> torch.Tensor:
    """Logits of the model as trained. Under FSDP the root group (embeddings, norm, LM head) is gathered by hand:
    only the scorer's forward would gather it; each decoder layer gathers its own shards."""
    encoded = trainer.tokenizer(PROBE_TEXTS, return_tensors="pt", padding=True)
    root = trainer.scorer
    sharded = hasattr(root, "unshard")
    if sharded:
        root.unshard()
    trainer.model.eval()
    logits = trainer.model(input_ids=encoded.input_ids.to(trainer.device),
                           attention_mask=encoded.attention_mask.to(trainer.device)).logits
    if sharded:
        root.reshard()
    return logits.float().cpu()


def probe(config: TrainConfig, result_dir: Path) -> dict[str, Any]:
    trainer = Trainer(config)
    try:
        counter = ForwardCounter()
        counter.attach(trainer)
        models = live_models()
        params = list(trainer.model.parameters())
        models["parameters"] = sum(p.numel() for p in params)  # a DTensor's numel is its global size
        models["local_parameters"] = sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in params)
        summary = trainer.train()
        counter.phase = "probe"
        logits = trained_logits(trainer)
        layer_count = len(decoder_layers(trainer.model))
        result = {"summary": summary, "forwards_per_layer": {k: v / layer_count for k, v in counter.layers.items()},
                  "bodies_per_layer": {k: v / layer_count for k, v in counter.bodies.items()},
                  "lora_forwards": dict(counter.lora), "live": models, "layers": layer_count,
                  "world_size": trainer.env.world_size, "strategy": trainer.strategy.name}
        if trainer.env.is_main:
            result_dir.mkdir(parents=True, exist_ok=True)
            torch.save(logits, result_dir / "logits.pt")
            (result_dir / "probe.json").write_text(json.dumps(result, indent=2, default=str))
        trainer.env.barrier()
        return result
    finally:
        trainer.env.close()


def main() -> None:
    probe(TrainConfig.model_validate_json(sys.argv[1]), Path(sys.argv[2]))


if __name__ == "__main__":
    main()
