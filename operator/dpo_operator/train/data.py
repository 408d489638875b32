"""Preference rows -> token ids -> padded batches with chosen and rejected concatenated along the batch.

Only completion tokens are ever scored: prompt and padding positions are masked out. Prompts go through the
tokenizer's chat template when it has one (as text, then tokenized without adding special tokens again, so
there is no double BOS).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass(frozen=True)
class EncodedPair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = {"prompt", "chosen_response", "rejected_response"} - set(row)
        if missing:
            raise ValueError(f"{path}:{number}: row lacks {sorted(missing)}")
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no preference rows")
    return rows


def prompt_ids(tokenizer: Any, prompt: str | list[dict[str, str]]) -> list[int]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in messages)
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def encode(tokenizer: Any, row: dict[str, Any], max_length: int) -> EncodedPair:
    """Token ids; the completion keeps at most ``max_length // 2`` tokens and the prompt is cut from the left."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    completion_budget = max(1, max_length // 2)
    chosen = (list(tokenizer(row["chosen_response"], add_special_tokens=False)["input_ids"]) + eos)[:completion_budget]
    rejected = (list(tokenizer(row["rejected_response"], add_special_tokens=False)["input_ids"]) + eos)[:completion_budget]
    prompt = prompt_ids(tokenizer, row["prompt"])
    keep = max(1, max_length - max(len(chosen), len(rejected)))
    return EncodedPair(prompt[-keep:], chosen, rejected)


@dataclass
class Batch:
    """2B sequences: rows [0, B) are prompt+chosen, rows [B, 2B) prompt+rejected."""

    input_ids: torch.Tensor  # [2B, T]
    attention_mask: torch.Tensor  # [2B, T]
    completion_mask: torch.Tensor  # [2B, T] bool: True at completion tokens
    indices: list[int]  # the dataset index of each pair

    @property
    def pairs(self) -> int:
        return len(self.indices)

    def to(self, device: torch.device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.completion_mask.to(device), self.indices)


def collate(pairs: list[EncodedPair], indices: list[int], pad_id: int) -> Batch:
    sequences = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    width = max(len(prompt) + len(completion) for prompt, completion in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    completion = torch.zeros((len(sequences), width), dtype=torch.bool)
    for row, (prompt, answer) in enumerate(sequences):
        tokens = prompt + answer
        input_ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        attention[row, : len(tokens)] = 1
        completion[row, len(prompt): len(tokens)] = True
    return Batch(input_ids, attention, completion, list(indices))
