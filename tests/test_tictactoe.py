"""The tic-tac-toe workflow: exact minimax values, move parsing and scoring, positions, episodes."""

from __future__ import annotations

import asyncio

from dpo_operator.collect import tictactoe as ttt


def test_minimax_values() -> None:
    assert ttt.value("." * 9) == 0  # perfect play draws
    # X to move can win at once on cell 3 (index 2)
    board = "XX.OO...."
    assert ttt.to_move(board) == "X"
    assert ttt.move_value(board, 2) == 1
    assert ttt.move_value(board, 8) == -1  # O then completes its row
    # O to move must block at index 2 to draw
    board = "XX..O...."
    assert ttt.to_move(board) == "O"
    assert ttt.move_value(board, 2) == 0
    assert ttt.move_value(board, 8) == -1


def test_scoring_and_parsing() -> None:
    board = "XX.OO...."
    assert ttt.score_move(board, "3") == 1.0
    assert ttt.score_move(board, "I play cell 3.") == 1.0
    assert ttt.score_move(board, "9") == -1.0
    assert ttt.score_move(board, "1") == ttt.ILLEGAL_MOVE_SCORE  # occupied
    assert ttt.score_move(board, "center please") == ttt.ILLEGAL_MOVE_SCORE


def test_positions_are_distinct_seeded_and_playable() -> None:
    positions = ttt.random_positions(40, seed=5)
    assert positions == ttt.random_positions(40, seed=5)
    assert len(set(positions)) == 40
    assert all(not ttt.is_over(p) for p in positions)


def test_episode_emits_scored_candidates_and_finishes_the_game() -> None:
    workflow = ttt.TicTacToeWorkflow({})
    example = workflow.examples(1, seed=0)[0]

    async def sample(messages: list[dict[str, str]]) -> list[str]:
        board_text = messages[-1]["content"].split(":\n", 1)[1].split("\nYour move")[0]
        board = board_text.replace(" ", "").replace("\n", "")
        legal = ttt.legal_moves(board)
        return [str(legal[0] + 1), "nonsense", str(legal[-1] + 1)]

    events = asyncio.run(workflow.episode(example, sample, seed=1))
    assert events and len(events) % 3 == 0
    assert {e.candidate_index for e in events} == {0, 1, 2}
    assert all(e.score == ttt.ILLEGAL_MOVE_SCORE for e in events if e.output == "nonsense")
    assert all(e.score >= -1 for e in events if e.output != "nonsense")
    assert events[0].input[0]["role"] == "system"
