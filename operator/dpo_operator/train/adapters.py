"""Where a run starts from and what it is compared with: a saved LoRA adapter to continue (``model.adapter``) and
a reference policy other than the starting one (``referenceModel``).

The saved adapter fixes the shape of what is trained (rank, alpha, target modules): a ``hyperparameters.lora`` that
sets one of them otherwise is refused, here before any weight is read, and by the operator when it can tell from
the job that wrote the adapter (:func:`lora_contradictions` serves both). The adapter's dropout is the spec's: it is
no part of the weights. Nothing here imports torch or peft at module level: the operator imports it too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dpo_operator.api.exits import NotFound
from dpo_operator.api.training import LoraParams

log = logging.getLogger(__name__)
ADAPTER_CONFIG = "adapter_config.json"
FIELD = "spec.hyperparameters.lora"


def _modules(value: str | Iterable[str] | None) -> frozenset[str] | str | None:
    """Target modules as a comparable value: a set of names, a pattern string, or None (unknown)."""
    if value is None or isinstance(value, str):
        return value
    return frozenset(value)


def lora_contradictions(saved: Mapping[str, Any], wanted: LoraParams, source: str) -> list[str]:
    """What the spec's LoRA settings set differently from the saved adapter's config (``adapter_config.json`` keys:
    ``r``, ``lora_alpha``, ``target_modules``; a key that is absent or None is not known, so not compared), each
    naming the field and what to do. Only the fields the spec sets count (``model_fields_set``)."""
    set_here = wanted.model_fields_set
    problems: list[str] = []
    for field, key, shown in (("rank", "r", "rank"), ("alpha", "lora_alpha", "alpha")):
        known = saved.get(key)
        if field in set_here and known is not None and getattr(wanted, field) != known:
            problems.append(f"{FIELD}.{shown} is {getattr(wanted, field)} but the adapter it starts from ({source}) "
                            f"has {shown} {known}: leave {shown} out (the adapter's applies) or set it to {known}")
    known_modules = _modules(saved.get("target_modules"))
    if "target_modules" in set_here and wanted.target_modules is not None and known_modules is not None \
            and _modules(wanted.target_modules) != known_modules:
        shown = sorted(known_modules) if isinstance(known_modules, frozenset) else known_modules
        problems.append(f"{FIELD}.targetModules {list(wanted.target_modules)} differ from the adapter it starts "
                        f"from ({source}), which targets {shown}: leave targetModules out (the adapter's apply) or "
                        "name the same modules")
    return problems


def read_adapter_config(directory: str) -> dict[str, Any]:
    """The saved adapter's config; NotFound (exit 5) for a missing directory, ValueError (exit 3) for one that is
    not a PEFT LoRA adapter."""
    path = Path(directory)
    if not path.is_dir():
        raise NotFound(f"model.adapter: directory {directory} does not exist; check the path, or that the job that "
                       "trained the adapter succeeded")
    config_file = path / ADAPTER_CONFIG
    if not config_file.is_file():
        raise ValueError(f"model.adapter: {directory} holds no {ADAPTER_CONFIG}, so it is not a PEFT adapter "
                         "directory (name the directory a LoRA DPOTrainingJob wrote: <output>/<job>/final)")
    try:
        config: dict[str, Any] = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"model.adapter: {config_file} cannot be read: {exc}") from None
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise ValueError(f"model.adapter: {directory} is a {config.get('peft_type')!r} adapter, not LoRA")
    return config


def check_adapter(directory: str, wanted: LoraParams) -> dict[str, Any]:
    """The saved adapter's config, once it agrees with the spec's LoRA settings (ValueError naming the field)."""
    saved = read_adapter_config(directory)
    if problems := lora_contradictions(saved, wanted, directory):
        raise ValueError("; ".join(problems))
    return saved


def attach_adapter(model: Any, directory: str, wanted: LoraParams, on_meta: bool) -> Any:
    """``model`` with the saved adapter on it, trainable (with the spec's dropout). ``on_meta``: the same structure
    without reading the adapter's weights (they come from rank 0 under FSDP)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    check_adapter(directory, wanted)
    config = LoraConfig.from_pretrained(directory)
    config.lora_dropout = wanted.dropout
    config.inference_mode = False
    if on_meta:
        return get_peft_model(model, config)
    log.info("continuing from LoRA adapter %s (rank %s, alpha %s)", directory, config.r, config.lora_alpha)
    return PeftModel.from_pretrained(model, directory, config=config, is_trainable=True)


def load_reference(name: str, dtype: Any, token: str | None, vocabulary: int, on_meta: bool = False) -> Any:
    """A reference policy other than the starting one, frozen and in eval mode (on the CPU: the caller places it;
    ``on_meta``: its structure without weights). Refused when its embedding table cannot hold the tokenizer's ids
    (another tokenizer's model)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    options = {"token": token} if token else {}
    if on_meta:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(name, **options), dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **options)
    model.config.use_cache = False
    model.requires_grad_(False)
    model.eval()
    rows = model.get_input_embeddings().num_embeddings
    if rows < vocabulary:
        raise ValueError(f"referenceModel {name}: its embeddings have {rows} rows but the model's tokenizer has "
                         f"{vocabulary} tokens; the reference must share the model's tokenizer")
    return model
