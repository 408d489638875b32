"""The loop demo's per-round figures: a table for the terminal and a PNG of the score per round.

One :class:`RoundFigures` per round, read from the round's children (training job and gate evaluation) and the
loop's lineage; the plot uses matplotlib's Agg backend (no display), as ``train/plots.py`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

NAN = float("nan")


@dataclass(frozen=True)
class RoundFigures:
    """What one round produced and how its gate judged it."""

    round: int
    pairs: int | None
    final_loss: float | None
    candidate: float | None  # mean move value of the policy trained this round
    baseline: float | None  # mean move value of the policy it was trained from (the one served during the round)
    difference: float | None
    lower: float | None
    upper: float | None
    verdict: str | None
    promoted: bool


HEADER = ("round", "pairs", "final loss", "candidate", "baseline", "difference [95% interval]", "verdict", "promoted")


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, fmt)


def table(rounds: list[RoundFigures]) -> list[str]:
    """The per-round table as text lines, columns aligned."""
    rows = [HEADER] + [(
        str(r.round), "-" if r.pairs is None else str(r.pairs), _num(r.final_loss, ".4f"),
        _num(r.candidate, "+.3f"), _num(r.baseline, "+.3f"),
        f"{_num(r.difference, '+.3f')} [{_num(r.lower, '+.3f')}, {_num(r.upper, '+.3f')}]",
        r.verdict or "-", "yes" if r.promoted else "no") for r in rounds]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    return ["   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def write_plot(rounds: list[RoundFigures], path: Path, title: str = "DPOLoop: tic-tac-toe, score per round") -> Path:
    """Left: each round's baseline (the policy served during the round, joined by a line) and candidate mean move
    value, promoted candidates filled, refused ones hollow.
    Right: the paired difference (candidate - baseline) with its interval, against 0 (the gate's bar)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def val(value: float | None) -> float:
        return NAN if value is None else value

    numbers = [r.round for r in rounds]
    figure, (scores, diffs) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    scores.plot(numbers, [val(r.baseline) for r in rounds], "s--", color="tab:gray",
                label="baseline (policy served during the round)")
    for promoted, marker_face, label in ((True, "tab:blue", "candidate, promoted"),
                                         (False, "white", "candidate, refused by the gate")):
        chosen = [r for r in rounds if r.promoted is promoted]
        if chosen:
            scores.plot([r.round for r in chosen], [val(r.candidate) for r in chosen], "o", color="tab:blue",
                        markerfacecolor=marker_face, markersize=8, label=label)
    scores.set(title="mean move value on held-out positions", xlabel="round", ylabel="mean move value (minimax)")
    scores.legend(loc="best", fontsize="small")
    mids = [val(r.difference) for r in rounds]
    below = [m - val(r.lower) for m, r in zip(mids, rounds, strict=True)]
    above = [val(r.upper) - m for m, r in zip(mids, rounds, strict=True)]
    diffs.errorbar(numbers, mids, yerr=[below, above], fmt="o", color="tab:green", capsize=5,
                   label="candidate - baseline, 95% interval")
    diffs.axhline(0.0, color="tab:red", linewidth=1, label="gate: lower bound must exceed 0")
    diffs.set(title="paired difference per round", xlabel="round", ylabel="difference")
    diffs.legend(loc="best", fontsize="small")
    for axes in (scores, diffs):
        axes.set_xticks(numbers)
        axes.set_xlim(min(numbers) - 0.5, max(numbers) + 0.5)
        axes.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
