"""The embedded demo's starting policy: a tiny char-level model taught, by a short supervised warm-up, to answer a
tic-tac-toe prompt with a random legal cell. It plays legal-ish moves with no sense of which ones are good: the
room DPO on minimax-scored pairs has to improve it. Also: move quality of a served policy on held-out positions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from dpo_operator.collect import tictactoe
from dpo_operator.embedded.tiny_model import CHAT_TEMPLATE, build_tiny_model


def user_prompt(board: str) -> str:
    return tictactoe.prompt_for(board)[-1]["content"]


def build_base_policy(path: Path, seed: int = 0, steps: int = 300, batch: int = 32, lr: float = 3e-3,
                      hidden: int = 64, layers: int = 2) -> Path:
    """Build the tiny model and warm it up on (position → a uniformly random legal cell)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    build_tiny_model(path, seed=seed, hidden=hidden, layers=layers, heads=4, chat_template=CHAT_TEMPLATE)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    positions = tictactoe.random_positions(2000, seed=seed + 1000)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        rows = []
        for board in rng.sample(positions, batch):
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": user_prompt(board)}],
                                                   add_generation_prompt=True, tokenize=False)
            answer = str(rng.choice(tictactoe.legal_moves(board)) + 1)
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            rows.append((prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids))
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.tensor([ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids, _ in rows])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
        attention = (torch.arange(width)[None, :] < torch.tensor([len(ids) for ids, _ in rows])[:, None]).long()
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(path)
    return path


@dataclass(frozen=True)
class MoveQuality:
    positions: int
    mean_value: float      # mean minimax value of the chosen move (+1 win, 0 draw, -1 loss; illegal counts -2)
    optimal: float         # share of positions where the move is among the best
    illegal: float         # share of unparseable or illegal answers

    def line(self) -> str:
        return (f"mean move value {self.mean_value:+.3f}   optimal moves {self.optimal:6.1%}   "
                f"illegal {self.illegal:6.1%}   ({self.positions} held-out positions)")


def held_out_positions(count: int, exclude: set[str], seed: int = 777) -> list[str]:
    return [b for b in tictactoe.random_positions(count * 3, seed=seed) if b not in exclude][:count]


def move_quality(base_url: str, model: str, positions: list[str]) -> MoveQuality:
    """Greedy answers of a served policy (OpenAI-compatible chat completions), scored by minimax."""
    import httpx

    values, optimal, illegal = [], 0, 0
    with httpx.Client(base_url=base_url.rstrip("/") + "/", timeout=60) as http:
        for board in positions:
            answer = http.post("chat/completions", json={"model": model, "messages": tictactoe.prompt_for(board),
                                                         "temperature": 0.0, "max_tokens": 4})
            answer.raise_for_status()
            text = answer.json()["choices"][0]["message"]["content"]
            score = tictactoe.score_move(board, text)
            values.append(score)
            if score == tictactoe.ILLEGAL_MOVE_SCORE:
                illegal += 1
            elif score == max(tictactoe.move_value(board, m) for m in tictactoe.legal_moves(board)):
                optimal += 1
    n = len(positions)
    return MoveQuality(n, sum(values) / n, optimal / n, illegal / n)
