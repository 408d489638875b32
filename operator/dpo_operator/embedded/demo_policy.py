"""The embedded demo's starting policy: a tiny char-level model taught, by a short supervised warm-up, to answer a
tic-tac-toe prompt with a random legal cell. It plays legal-ish moves with no sense of which ones are good: the
room DPO on minimax-scored pairs has to improve it (the demo's promotion gate measures whether it did).
"""

from __future__ import annotations

import random
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
