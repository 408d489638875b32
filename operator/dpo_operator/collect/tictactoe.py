"""Tic-tac-toe move selection, scored by the exact game-theoretic value of the move (minimax).

The board is a 9-character string of 'X', 'O' and '.', cells numbered 1-9 row by row. At each of the
agent's turns the LLM proposes candidate moves; each is scored by the value of the position it leads to
(+1 win, 0 draw, -1 loss with best play on both sides), and an unparseable or illegal move scores -2.
The episode goes on with the best candidate (best-of-n), against an opponent that plays perfectly.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache
from typing import Any

from dpo_operator.collect.events import CandidateEvent, Message
from dpo_operator.collect.workflow import Example, Sampler

LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
ILLEGAL_MOVE_SCORE = -2.0
SYSTEM_PROMPT = (
    "You are an expert tic-tac-toe player. Cells are numbered 1-9, left to right, top to bottom. "
    "Answer with the number of the cell you play and nothing else."
)


def winner(board: str) -> str | None:
    for a, b, c in LINES:
        if board[a] != "." and board[a] == board[b] == board[c]:
            return board[a]
    return None


def is_over(board: str) -> bool:
    return winner(board) is not None or "." not in board


def to_move(board: str) -> str:
    return "X" if board.count("X") == board.count("O") else "O"


def legal_moves(board: str) -> list[int]:
    return [i for i, cell in enumerate(board) if cell == "."]


def play(board: str, cell: int) -> str:
    return board[:cell] + to_move(board) + board[cell + 1:]


@lru_cache(maxsize=None)
def value(board: str) -> int:
    """The value of ``board`` for the player to move, with perfect play: +1 win, 0 draw, -1 loss."""
    win = winner(board)
    if win is not None:
        return 1 if win == to_move(board) else -1
    if "." not in board:
        return 0
    return max(-value(play(board, cell)) for cell in legal_moves(board))


def move_value(board: str, cell: int) -> int:
    """The value of playing ``cell`` for the player to move."""
    return -value(play(board, cell))


def parse_move(text: str) -> int | None:
    match = re.search(r"[1-9]", text or "")
    return int(match.group()) - 1 if match else None


def score_move(board: str, text: str) -> float:
    cell = parse_move(text)
    if cell is None or board[cell] != ".":
        return ILLEGAL_MOVE_SCORE
    return float(move_value(board, cell))


def render(board: str) -> str:
    rows = [" ".join(board[r * 3:(r + 1) * 3]) for r in range(3)]
    return "\n".join(rows)


def prompt_for(board: str) -> list[Message]:
    player = to_move(board)
    user = f"You play {player}. Board ('.' is empty):\n{render(board)}\nYour move (1-9):"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def random_positions(count: int, seed: int, max_plies: int = 6) -> list[str]:
    """Distinct non-final positions reached by random play, reproducibly."""
    rng = random.Random(seed)
    positions: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(positions) < count and attempts < count * 200:
        attempts += 1
        board = "." * 9
        for _ in range(rng.randint(0, max_plies)):
            board = play(board, rng.choice(legal_moves(board)))
            if is_over(board):
                break
        if not is_over(board) and board not in seen:
            seen.add(board)
            positions.append(board)
    while len(positions) < count:  # fewer distinct positions exist than asked for: repeat them
        positions.append(positions[len(positions) % max(1, len(seen))])
    return positions


def perfect_reply(board: str, rng: random.Random) -> int:
    moves = legal_moves(board)
    best = max(move_value(board, m) for m in moves)
    return rng.choice([m for m in moves if move_value(board, m) == best])


class TicTacToeWorkflow:
    invalid_answer_score = ILLEGAL_MOVE_SCORE  # what an evaluation counts as an unparsable or illegal answer

    def __init__(self, config: dict[str, Any]) -> None:
        self.max_plies = int(config.get("maxOpeningPlies", 6))

    def examples(self, count: int, seed: int) -> list[Example]:
        return [Example(f"ttt-{i}-{board}", board) for i, board in enumerate(random_positions(count, seed, self.max_plies))]

    async def episode(self, example: Example, sample: Sampler, seed: int) -> list[CandidateEvent]:
        rng = random.Random(f"{seed}:{example.example_id}")
        board: str = example.payload
        agent = to_move(board)
        events: list[CandidateEvent] = []
        turn_index = 0
        while not is_over(board):
            if to_move(board) != agent:
                board = play(board, perfect_reply(board, rng))
                continue
            messages = prompt_for(board)
            outputs = await sample(messages)
            scores = [score_move(board, text) for text in outputs]
            for index, (text, score) in enumerate(zip(outputs, scores, strict=True)):
                events.append(CandidateEvent(example.example_id, f"turn-{turn_index}", turn_index, index,
                                             messages, text, score))
            best = max(range(len(outputs)), key=lambda i: scores[i])
            cell = parse_move(outputs[best]) if scores[best] > ILLEGAL_MOVE_SCORE else None
            board = play(board, cell if cell is not None else rng.choice(legal_moves(board)))
            turn_index += 1
        return events
