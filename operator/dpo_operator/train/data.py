"""Preference rows -> token ids -> padded batches, read lazily so host memory does not grow with the dataset.

- Rows come from ``sources`` (files and formats) and are read, parsed and validated only when a batch needs them;
  ``templates`` turns them into token ids.
- ``epoch_batches`` orders one epoch: a seeded shuffle, then length grouping inside mega-batches (less padding),
  then a seeded shuffle of the batches. Every rank computes the same order.
- ``rank_share`` splits a global batch between ranks so every rank runs the same number of forward/backward
  passes; a rank left without pairs (a last batch smaller than the world) scores a filler pair at weight 0.
- ``collate`` lays a batch out as two sequences a pair, or as one sequence a pair that shares the prompt (see
  ``Batch``). Only completion tokens are ever scored: prompt and padding positions are masked out. Prompts go through the
  tokenizer's chat template when it has one (as text, then tokenized without adding special tokens again, so
  there is no double BOS).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from dpo_operator.train.formats import RowError, prompt_problem  # noqa: F401  (API: the trainer's row errors)
from dpo_operator.train.jsonl import MAX_ROW_BYTES, PreferenceFile  # noqa: F401  (API)
from dpo_operator.train.templates import prompt_ids, row_ids  # noqa: F401  (API: prompt_ids for the NIM stand-in)

MEGABATCH_FACTOR = 50  # length grouping sorts within windows of this many batches (as transformers' sampler)


@dataclass(frozen=True)
class EncodedPair:
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


def encode(tokenizer: Any, row: dict[str, Any], max_length: int) -> EncodedPair:
    """Token ids (``templates.row_ids``); the completion keeps at most ``max_length // 2`` tokens and the prompt is
    cut from the left."""
    completion_budget = max(1, max_length // 2)
    prompt, chosen, rejected = row_ids(tokenizer, row)
    chosen, rejected = chosen[:completion_budget], rejected[:completion_budget]
    if not prompt:  # an empty prompt without BOS: a start token, so the first completion token is predicted too
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        prompt = [start if start is not None else 0]
    keep = max(1, max_length - max(len(chosen), len(rejected)))
    return EncodedPair(prompt[-keep:], chosen, rejected)


class Rows(Protocol):
    """Preference rows in our format by index (``jsonl.PreferenceFile``, ``sources.PreferenceRows``)."""

    def __len__(self) -> int: ...
    def row(self, index: int) -> dict[str, Any]: ...
    def where(self, index: int) -> str: ...
    def sizes(self) -> np.ndarray: ...


class EncodedDataset:
    """Rows encoded on access."""

    def __init__(self, rows: Rows, tokenizer: Any, max_length: int) -> None:
        self.rows, self.tokenizer, self.max_length = rows, tokenizer, max_length

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> EncodedPair:
        row = self.rows.row(index)
        try:
            return encode(self.tokenizer, row, self.max_length)
        except (TypeError, KeyError, AttributeError, ValueError) as exc:  # e.g. a chat template refusing the messages
            raise RowError(f"{self.rows.where(index)}: cannot tokenise the row: {type(exc).__name__}: {exc}") from None


@dataclass
class Batch:
    """The model inputs for B pairs and where the 2B scored sequences' completion tokens sit in them.

    Two layouts (``collate``):
    - separate: 2B rows, prompt+chosen for pairs [0, B) then prompt+rejected; a [2B, T] padding mask.
    - shared prompt: B rows of prompt+chosen+rejected; a [B, 1, T, T] boolean mask in which the rejected tokens
      see the prompt and themselves but not the chosen ones, and position ids that restart the rejected response
      where the prompt ends. The prompt is computed once per pair instead of twice.
    Sequence s (chosen of pair i: s = i, rejected: s = B + i) owns the completion tokens ``score_owner == s``; the
    hidden state at flat position ``score_positions[m]`` (of the [rows * T] hidden states) predicts
    ``score_targets[m]``.
    """

    input_ids: torch.Tensor  # [R, T]
    attention_mask: torch.Tensor  # [R, T] (separate) or [R, 1, T, T] bool (shared prompt)
    position_ids: torch.Tensor | None  # [R, T] (shared prompt) or None (0..T-1)
    score_positions: torch.Tensor  # [M] long
    score_targets: torch.Tensor  # [M] long
    score_owner: torch.Tensor  # [M] long, in [0, 2B)
    indices: list[int]  # the dataset index of each pair
    tokens: int  # real tokens of the 2B sequences (prompt counted twice): the same in both layouts
    token_weights: torch.Tensor | None = None  # [R, T] how many of the 2B sequences hold each token (a shared prompt: 2)

    @property
    def pairs(self) -> int:
        return len(self.indices)

    def inputs(self) -> dict[str, Any]:
        """Keyword arguments of ``CompletionLogps``."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "position_ids": self.position_ids,
                "score_positions": self.score_positions, "score_targets": self.score_targets,
                "score_owner": self.score_owner, "sequences": 2 * self.pairs, "token_weights": self.token_weights}

    def _map(self, move: Any) -> "Batch":
        return Batch(move(self.input_ids), move(self.attention_mask),
                     None if self.position_ids is None else move(self.position_ids), move(self.score_positions),
                     move(self.score_targets), move(self.score_owner), self.indices, self.tokens,
                     None if self.token_weights is None else move(self.token_weights))

    def to(self, device: torch.device) -> "Batch":
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin(self) -> "Batch":
        """Page-locked host memory, so the copy to the GPU overlaps compute."""
        return self._map(lambda t: t.pin_memory())


def collate(pairs: list[EncodedPair], indices: list[int], pad_id: int, pad_to_multiple_of: int = 1,
            shared_prompt: bool = False) -> Batch:
    tokens = sum(2 * len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs)
    if shared_prompt:
        return _collate_shared(pairs, indices, pad_id, pad_to_multiple_of, tokens)
    sequences = [(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]
    width = _padded(max(len(prompt) + len(completion) for prompt, completion in sequences), pad_to_multiple_of)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    positions, targets, owners = [], [], []
    for row, (prompt, answer) in enumerate(sequences):
        sequence = prompt + answer
        input_ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        attention[row, : len(sequence)] = 1
        start = row * width + len(prompt) - 1  # the hidden state at t predicts the token at t + 1
        positions.append(torch.arange(start, start + len(answer)))
        targets += answer
        owners += [row] * len(answer)
    return Batch(input_ids, attention, None, torch.cat(positions), torch.tensor(targets, dtype=torch.long),
                 torch.tensor(owners, dtype=torch.long), list(indices), tokens, attention)


def _collate_shared(pairs: list[EncodedPair], indices: list[int], pad_id: int, pad_to_multiple_of: int,
                    tokens: int) -> Batch:
    count = len(pairs)
    width = _padded(max(len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs), pad_to_multiple_of)
    input_ids = torch.full((count, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((count, width), dtype=torch.long)
    segment = torch.full((count, width), -1, dtype=torch.long)  # 0 prompt, 1 chosen, 2 rejected, -1 padding
    positions, targets, owners = [], [], []
    for row, pair in enumerate(pairs):
        prompt, chosen, rejected = len(pair.prompt), len(pair.chosen), len(pair.rejected)
        end = prompt + chosen + rejected
        input_ids[row, :end] = torch.tensor(pair.prompt + pair.chosen + pair.rejected, dtype=torch.long)
        position_ids[row, :end] = torch.cat([torch.arange(prompt + chosen), torch.arange(prompt, prompt + rejected)])
        segment[row, :prompt], segment[row, prompt: prompt + chosen], segment[row, prompt + chosen: end] = 0, 1, 2
        base, last_prompt = row * width, row * width + prompt - 1
        # chosen token j is predicted at prompt-1+j; rejected token 0 by the last prompt token, token j>0 at its left
        positions += [torch.arange(last_prompt, last_prompt + chosen)]
        if rejected:
            positions += [torch.tensor([last_prompt]), torch.arange(base + prompt + chosen, base + end - 1)]
        targets += pair.chosen + pair.rejected
        owners += [row] * chosen + [count + row] * rejected
    query, key = segment.unsqueeze(2), segment.unsqueeze(1)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    visible = (key == 0) | ((key == query) & (query > 0))  # the prompt, and one's own response
    mask = causal & visible & (query >= 0)
    mask |= torch.eye(width, dtype=torch.bool) & (query < 0)  # padding sees itself: no all-masked row (NaN)
    weights = torch.where(segment == 0, 2, (segment > 0).long())  # the prompt is in both sequences of its pair
    return Batch(input_ids, mask.unsqueeze(1), position_ids, torch.cat(positions), torch.tensor(targets, dtype=torch.long),
                 torch.tensor(owners, dtype=torch.long), list(indices), tokens, weights)


CANDIDATES = 32  # rows, largest in bytes first, encoded to find the longest pairs in tokens


def longest_pairs(dataset: "EncodedDataset", sizes: np.ndarray | None = None, count: int = 2) -> list[int]:
    """Indices of the pairs with the most tokens, and of the one with the longest prompt, among the ``CANDIDATES``
    largest rows in bytes (``sizes``; the first rows when not given): what checks of a layout must see, since a
    sliding window or a position-dependent error shows only past some length."""
    if sizes is None:
        candidates = list(range(min(len(dataset), CANDIDATES)))
    else:
        candidates = np.argsort(-np.asarray(sizes), kind="stable")[:CANDIDATES].tolist()
    encoded = {index: dataset[index] for index in candidates}
    total = sorted(candidates, key=lambda i: -(len(encoded[i].prompt) + len(encoded[i].chosen) + len(encoded[i].rejected)))
    chosen = total[:count]
    longest_prompt = max(candidates, key=lambda i: len(encoded[i].prompt))
    return chosen if longest_prompt in chosen else [*chosen, longest_prompt]


def _padded(width: int, multiple: int) -> int:
    return -(-width // multiple) * multiple


def epoch_batches(sizes: np.ndarray, batch_size: int, seed: int, epoch: int, group_by_length: bool = True) -> list[list[int]]:
    """The global batches of one epoch (dataset indices), identical on every rank."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(sizes))
    if group_by_length:
        window = batch_size * MEGABATCH_FACTOR
        chunks = [order[i: i + window] for i in range(0, len(order), window)]
        order = np.concatenate([chunk[np.argsort(-sizes[chunk], kind="stable")] for chunk in chunks])
    batches = [order[i: i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if group_by_length:
        shuffled = rng.permutation(len(batches))
        batches = [batches[i] for i in shuffled]
    return batches


@dataclass(frozen=True)
class Share:
    """One rank's part of a global batch and the weight that makes the ranks' average the global mean."""

    indices: list[int]
    weight: float


def rank_share(global_indices: list[int], rank: int, world: int, pairs_in_step: int) -> Share:
    """Pairs ``rank::world`` of the batch, weighted ``world * n / pairs_in_step``; a filler at weight 0 when empty."""
    mine = global_indices[rank::world]
    if not mine:
        return Share(global_indices[:1], 0.0)
    return Share(mine, world * len(mine) / pairs_in_step)


def sharded_chunks(count: int, rank: int, world: int, batch_size: int, sizes: np.ndarray | None = None) -> Iterator[tuple[list[int], int]]:
    """This rank's items ``rank::world`` of ``range(count)`` in batches, longest first (no grad: order is free).

    Yields (indices, real) where only the first ``real`` indices are this rank's; every rank yields the same
    number of chunks (sharded models need every rank in every forward), padded with item 0 where short.
    """
    mine = np.arange(rank, count, world)
    if sizes is not None and len(mine):
        mine = mine[np.argsort(-sizes[mine], kind="stable")]
    per_rank = -(-count // world)
    chunks = -(-per_rank // batch_size)
    for chunk in range(chunks):
        part = mine[chunk * batch_size: (chunk + 1) * batch_size].tolist()
        yield (part or [0]), len(part)
