"""Pair building: grouping, ordering, thresholds, truncation, ties, strategies, bad events."""

from __future__ import annotations

import math

import pytest

from dpo_operator.collect.events import CandidateEvent
from tests.events import BadEvent, event_from_dict
from dpo_operator.collect.pairs import PairingOptions, PairingStats, build_pairs


def ev(score: float, idx: int, out: str | None = None, turn: str = "t0", example: str = "e0") -> CandidateEvent:
    return CandidateEvent(example, turn, 0, idx, f"prompt {example}/{turn}", out or f"c{idx}", score)


def triples(pairs):  # noqa: ANN001, ANN201
    return [(p.chosen, p.rejected, p.score_diff) for p in pairs]


def test_exhaustive_pairs_every_higher_with_every_lower() -> None:
    pairs = build_pairs([ev(0.1, 0), ev(0.9, 1), ev(0.5, 2)], PairingOptions())
    # a turn's pairs come by score difference, largest first (as NAT orders them); equal differences in rank order
    assert triples(pairs) == [("c1", "c0", pytest.approx(0.8)), ("c1", "c2", pytest.approx(0.4)),
                              ("c2", "c0", pytest.approx(0.4))]
    assert all(p.prompt == "prompt e0/t0" for p in pairs)


def test_equal_scores_carry_no_preference() -> None:
    stats = PairingStats()
    pairs = build_pairs([ev(1.0, 0), ev(1.0, 1), ev(0.0, 2)], PairingOptions(), stats)
    assert triples(pairs) == [("c0", "c2", 1.0), ("c1", "c2", 1.0)]
    assert stats.tied_pairs_dropped == 1


def test_all_tied_turn_gives_nothing() -> None:
    assert build_pairs([ev(0.0, i) for i in range(4)], PairingOptions()) == []


def test_min_score_diff_is_inclusive() -> None:
    stats = PairingStats()
    pairs = build_pairs([ev(1.0, 0), ev(0.5, 1), ev(0.0, 2)], PairingOptions(min_score_diff=0.5), stats)
    assert triples(pairs) == [("c0", "c2", 1.0), ("c0", "c1", 0.5), ("c1", "c2", 0.5)]
    pairs = build_pairs([ev(1.0, 0), ev(0.5, 1), ev(0.0, 2)], PairingOptions(min_score_diff=0.6), stats)
    assert triples(pairs) == [("c0", "c2", 1.0)]
    assert stats.below_threshold_dropped == 2


def test_max_pairs_per_turn_keeps_largest_differences_stably() -> None:
    stats = PairingStats()
    events = [ev(3.0, 0), ev(2.0, 1), ev(1.0, 2), ev(0.0, 3)]
    pairs = build_pairs(events, PairingOptions(max_pairs_per_turn=3), stats)
    # diffs: (0,1)=1 (0,2)=2 (0,3)=3 (1,2)=1 (1,3)=2 (2,3)=1 -> keep 3, then the first 2 in rank order
    assert triples(pairs) == [("c0", "c3", 3.0), ("c0", "c2", 2.0), ("c1", "c3", 2.0)]
    assert stats.truncated == 3


def test_best_vs_worst_ignores_max_pairs_per_turn() -> None:
    events = [ev(0.2, 0), ev(0.9, 1), ev(0.5, 2), ev(-1.0, 3)]
    pairs = build_pairs(events, PairingOptions(strategy="bestVsWorst", max_pairs_per_turn=1))
    assert triples(pairs) == [("c1", "c3", pytest.approx(1.9))]
    assert build_pairs([ev(0.2, 0), ev(0.2, 1)], PairingOptions(strategy="bestVsWorst")) == []


def test_ties_in_sorting_follow_emission_order_as_in_nat() -> None:
    pairs = build_pairs([ev(1.0, 2), ev(1.0, 0), ev(0.0, 1)], PairingOptions())
    assert [p.chosen for p in pairs] == ["c2", "c0"]
    pairs = build_pairs([ev(0.0, 1), ev(1.0, 0), ev(1.0, 2)], PairingOptions(strategy="bestVsWorst"))
    assert triples(pairs) == [("c0", "c1", 1.0)]


def test_identical_texts_carry_no_preference() -> None:
    stats = PairingStats()
    pairs = build_pairs([ev(1.0, 0, out="5"), ev(0.5, 1, out="5"), ev(0.0, 2, out="7")], PairingOptions(), stats)
    assert triples(pairs) == [("5", "7", 1.0), ("5", "7", 0.5)]
    assert stats.identical_pairs_dropped == 1


def test_group_key_is_a_tuple_not_a_joined_string() -> None:
    # NAT's f"{example_id}::{turn_id}" would merge these two decision points into one
    events = [ev(1.0, 0, example="a::b", turn="c"), ev(0.0, 1, example="a", turn="b::c")]
    stats = PairingStats()
    assert build_pairs(events, PairingOptions(), stats) == []
    assert stats.turns == 2


def test_groups_are_per_example_and_turn() -> None:
    events = [ev(1.0, 0, turn="t0"), ev(0.0, 1, turn="t1"), ev(1.0, 0, example="e1"), ev(0.0, 1, example="e1")]
    stats = PairingStats()
    pairs = build_pairs(events, PairingOptions(), stats)
    assert [(p.example_id, p.turn_id) for p in pairs] == [("e1", "t0")]
    assert stats.turns == 3 and stats.single_candidate_turns == 2


def test_reward_is_score_diff_or_chosen_score() -> None:
    events = [ev(0.75, 0), ev(0.25, 1)]
    assert build_pairs(events, PairingOptions())[0].reward == 0.5
    assert build_pairs(events, PairingOptions(reward_from_score_diff=False))[0].reward == 0.75


@pytest.mark.parametrize("raw, error", [
    ({"turn_id": "t", "output": "o", "score": 1}, "example_id"),
    ({"example_id": "e", "output": "o", "score": 1}, "turn_id"),
    ({"example_id": "e", "turn_id": "t", "output": "o"}, "score"),
    ({"example_id": "e", "turn_id": "t", "output": "o", "score": "high"}, "not a number"),
    ({"example_id": "e", "turn_id": "t", "output": "o", "score": math.nan}, "not finite"),
    ({"example_id": "e", "turn_id": "t", "output": "o", "score": 1, "input": 42}, "input must be"),
])
def test_bad_events_are_rejected_with_a_reason(raw: dict, error: str) -> None:
    with pytest.raises(BadEvent, match=error):
        event_from_dict(raw)


def test_event_defaults() -> None:
    event = event_from_dict({"example_id": 1, "turn_id": "t", "output": "o", "score": "0.5"})
    assert (event.example_id, event.candidate_index, event.turn_index, event.score, event.input) == ("1", 0, 0, 0.5, "")


def test_max_pairs_per_turn_counts_only_pairs_we_keep() -> None:
    """Pairs we drop (ties, identical texts) are dropped before the per-turn cut, so they take no slot: NAT cuts
    first, and there the identical-text pair (largest difference) takes the only slot (README: Pairing semantics)."""
    stats = PairingStats()
    events = [ev(1.0, 0, out="a"), ev(0.5, 1, out="b"), ev(0.0, 2, out="a"), ev(0.5, 3, out="c")]
    pairs = build_pairs(events, PairingOptions(max_pairs_per_turn=1), stats)
    # NAT's turn: (a>a, 1.0) first, then the 0.5 pairs, the tie b=c last; cut to 1, minus identical texts: nothing
    assert triples(pairs) == [("a", "b", 0.5)]
    assert (stats.identical_pairs_dropped, stats.tied_pairs_dropped, stats.truncated) == (1, 1, 3)
