"""The paired-comparison statistics against a direct computation on known scores."""

from __future__ import annotations

import math
import random

import pytest

from dpo_operator.api.evaluation import Verdict
from dpo_operator.evaluate.stats import compare, quantile

np = pytest.importorskip("numpy")

CANDIDATE = [1.0, 0.0, 1.0, -1.0, 0.0, 1.0, 1.0, 0.0, -2.0, 1.0]
BASELINE = [0.0, 0.0, -1.0, -1.0, 1.0, -2.0, 1.0, -1.0, -2.0, 0.0]


def direct_interval(differences: list[float], confidence: float, resamples: int, seed: int) -> tuple[float, float]:
    """The paired bootstrap written out: draw n example indices with replacement, average their differences."""
    rng = random.Random(seed)
    n = len(differences)
    means = []
    for _ in range(resamples):
        indices = [math.floor(rng.random() * n) for _ in range(n)]
        means.append(sum(differences[i] for i in indices) / n)
    alpha = 1 - confidence
    return float(np.percentile(means, 100 * alpha / 2)), float(np.percentile(means, 100 * (1 - alpha / 2)))


def test_known_scores_match_a_direct_computation() -> None:
    result = compare(CANDIDATE, BASELINE, confidence=0.9, resamples=2000, seed=11, min_improvement=None)
    differences = [c - b for c, b in zip(CANDIDATE, BASELINE, strict=True)]
    assert result.candidate.mean == pytest.approx(sum(CANDIDATE) / 10)
    assert result.baseline.mean == pytest.approx(sum(BASELINE) / 10)
    assert result.candidate.count == result.baseline.count == result.pairs == 10
    assert result.mean_difference == pytest.approx(sum(differences) / 10) == pytest.approx(0.7)
    # differences: 1, 0, 2, 0, -1, 3, 0, 1, 0, 1 -> 5 wins, 4 ties, 1 loss
    assert (result.wins, result.ties, result.losses) == (5, 4, 1)
    assert result.interval is not None
    lower, upper = direct_interval(differences, 0.9, 2000, 11)
    assert (result.interval.lower, result.interval.upper) == (pytest.approx(lower), pytest.approx(upper))
    assert result.interval.lower < 0.7 < result.interval.upper
    assert (result.interval.method, result.interval.resamples, result.interval.seed) == ("pairedBootstrap", 2000, 11)
    assert result.verdict == Verdict.NO_GATE


def test_the_same_seed_gives_the_same_interval_and_another_seed_another() -> None:
    one = compare(CANDIDATE, BASELINE, confidence=0.95, resamples=500, seed=3, min_improvement=0.0)
    again = compare(CANDIDATE, BASELINE, confidence=0.95, resamples=500, seed=3, min_improvement=0.0)
    other = compare(CANDIDATE, BASELINE, confidence=0.95, resamples=500, seed=4, min_improvement=0.0)
    assert one.interval == again.interval
    assert one.interval != other.interval


def test_gate_passes_only_when_the_lower_bound_clears_min_improvement() -> None:
    better = [1.0] * 20 + [0.0] * 5
    worse = [0.0] * 25
    passed = compare(better, worse, confidence=0.95, resamples=1000, seed=1, min_improvement=0.1)
    assert passed.verdict == Verdict.PASSED and passed.interval is not None and passed.interval.lower > 0.1
    refused = compare(better, worse, confidence=0.95, resamples=1000, seed=1, min_improvement=0.9)
    assert refused.verdict == Verdict.FAILED
    assert "does not exceed minImprovement 0.9" in refused.verdict_message
    reversed_ = compare(worse, better, confidence=0.95, resamples=1000, seed=1, min_improvement=0.0)
    assert reversed_.verdict == Verdict.FAILED and (reversed_.wins, reversed_.losses) == (0, 20)


def test_all_equal_scores_give_a_point_interval_all_ties_and_no_pass() -> None:
    same = [0.5] * 12
    result = compare(same, same, confidence=0.95, resamples=300, seed=9, min_improvement=0.0)
    assert result.interval is not None
    assert (result.interval.lower, result.interval.upper) == (0.0, 0.0)
    assert (result.wins, result.ties, result.losses) == (0, 12, 0)
    assert result.verdict == Verdict.FAILED  # no improvement is not an improvement of more than 0
    shifted = compare([1.5] * 12, same, confidence=0.95, resamples=300, seed=9, min_improvement=0.5)
    assert shifted.interval is not None and shifted.interval.lower == shifted.interval.upper == 1.0
    assert shifted.verdict == Verdict.PASSED and shifted.wins == 12


def test_missing_scores_are_counted_and_never_pass() -> None:
    candidate = [1.0, None, 1.0, 1.0]
    baseline = [0.0, 0.0, None, 0.0]
    result = compare(candidate, baseline, confidence=0.95, resamples=200, seed=0, min_improvement=-10.0)
    assert result.verdict == Verdict.INCONCLUSIVE
    assert "2 of 4 examples lack a score" in result.verdict_message
    assert (result.candidate.count, result.candidate.failures) == (3, 1)
    assert (result.baseline.count, result.baseline.failures) == (3, 1)
    assert result.pairs == 2 and result.mean_difference == 1.0


def test_nothing_scored_is_inconclusive_without_an_interval() -> None:
    result = compare([None, None], [None, None], confidence=0.95, resamples=200, seed=0, min_improvement=0.0)
    assert result.verdict == Verdict.INCONCLUSIVE and result.interval is None and result.mean_difference is None
    assert result.candidate.mean is None
    empty = compare([], [], confidence=0.95, resamples=200, seed=0, min_improvement=0.0)
    assert empty.verdict == Verdict.INCONCLUSIVE and empty.verdict_message == "no examples were evaluated"


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        compare([float("nan")], [0.0], confidence=0.95, resamples=200, seed=0, min_improvement=None)
    with pytest.raises(ValueError, match="same examples"):
        compare([1.0], [0.0, 1.0], confidence=0.95, resamples=200, seed=0, min_improvement=None)


def test_quantile_is_numpys_linear_method() -> None:
    values = sorted(random.Random(5).uniform(-1, 1) for _ in range(37))
    for q in (0.0, 0.025, 0.3, 0.5, 0.975, 1.0):
        assert quantile(values, q) == pytest.approx(float(np.quantile(values, q)))
