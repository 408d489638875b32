"""The statistics of a paired comparison (pure, plain Python): per-side means, paired differences, win/tie/loss,
a seeded paired-bootstrap confidence interval of the mean difference, and the verdict against a gate.

Scores are given per example as ``None`` (no score: the episode failed) or a finite float. Only examples scored on
both sides are paired; any missing score makes the verdict ``Inconclusive``: a gate never passes on missing data.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from dpo_operator.api.evaluation import PAIRED_BOOTSTRAP, Verdict


@dataclass(frozen=True)
class Side:
    mean: float | None
    count: int
    failures: int


@dataclass(frozen=True)
class Interval:
    lower: float
    upper: float
    confidence: float
    resamples: int
    seed: int
    method: str = PAIRED_BOOTSTRAP


@dataclass(frozen=True)
class Comparison:
    candidate: Side
    baseline: Side
    pairs: int
    mean_difference: float | None
    interval: Interval | None
    wins: int
    ties: int
    losses: int
    verdict: Verdict
    verdict_message: str


def side(scores: Sequence[float | None]) -> Side:
    present = [s for s in scores if s is not None]
    return Side(mean=sum(present) / len(present) if present else None, count=len(present),
                failures=len(scores) - len(present))


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile by linear interpolation between order statistics (numpy's default 'linear' method)."""
    position = (len(sorted_values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def bootstrap_means(differences: Sequence[float], resamples: int, seed: int) -> list[float]:
    """Means of ``resamples`` resamples (with replacement, the size of ``differences``), seeded; sorted."""
    rng = random.Random(seed)
    n = len(differences)
    return sorted(sum(rng.choices(differences, k=n)) / n for _ in range(resamples))


def paired_bootstrap(differences: Sequence[float], confidence: float, resamples: int, seed: int) -> Interval:
    """The percentile interval of the mean paired difference: resampling examples keeps each pair together."""
    means = bootstrap_means(differences, resamples, seed)
    alpha = 1.0 - confidence
    return Interval(quantile(means, alpha / 2), quantile(means, 1 - alpha / 2), confidence, resamples, seed)


def compare(candidate: Sequence[float | None], baseline: Sequence[float | None], *, confidence: float,
            resamples: int, seed: int, min_improvement: float | None) -> Comparison:
    """The whole comparison of per-example scores (the same examples, in the same order, on both sides).

    ``min_improvement`` None: no gate (verdict NoGate). The candidate passes when the interval's lower bound exceeds
    ``min_improvement``."""
    if len(candidate) != len(baseline):
        raise ValueError(f"paired scores need the same examples: {len(candidate)} candidate, {len(baseline)} baseline")
    for score in (*candidate, *baseline):
        if score is not None and not math.isfinite(score):
            raise ValueError(f"scores must be finite or None (no score), got {score}")
    paired = [(c, b) for c, b in zip(candidate, baseline, strict=True) if c is not None and b is not None]
    differences = [c - b for c, b in paired]
    wins = sum(d > 0 for d in differences)
    ties = sum(d == 0 for d in differences)
    mean = sum(differences) / len(differences) if differences else None
    interval = paired_bootstrap(differences, confidence, resamples, seed) if differences else None
    missing = len(candidate) - len(paired)
    verdict, message = _verdict(interval, missing, len(candidate), min_improvement)
    return Comparison(side(candidate), side(baseline), len(paired), mean, interval, wins, ties,
                      len(differences) - wins - ties, verdict, message)


def _verdict(interval: Interval | None, missing: int, examples: int, min_improvement: float | None,
             ) -> tuple[Verdict, str]:
    if examples == 0:
        return Verdict.INCONCLUSIVE, "no examples were evaluated"
    if missing:
        return Verdict.INCONCLUSIVE, (f"{missing} of {examples} examples lack a score on at least one side: "
                                      "no verdict on missing data")
    assert interval is not None
    bounds = f"{interval.confidence:.0%} interval [{interval.lower:.4g}, {interval.upper:.4g}]"
    if min_improvement is None:
        return Verdict.NO_GATE, f"no gate; {bounds} of the mean paired difference"
    if interval.lower > min_improvement:
        return Verdict.PASSED, f"lower bound of the {bounds} exceeds minImprovement {min_improvement:g}"
    return Verdict.FAILED, f"lower bound of the {bounds} does not exceed minImprovement {min_improvement:g}"
