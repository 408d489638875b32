"""The data card (JSON) and the token-length histogram (PNG, matplotlib's Agg backend) written next to the data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dpo_operator.datacheck.figures import Figures

CARD_FILE = "datacard.json"
HISTOGRAM_FILE = "lengths.png"


def card(figures: dict[str, Figures], verdict: Any, source: dict[str, Any]) -> dict[str, Any]:
    return {"source": source, **{split: f.summary() for split, f in figures.items()},
            "passed": verdict.passed, "failures": verdict.failures, "warnings": verdict.warnings}


def histogram_png(figures: Figures) -> bytes:
    """Pair lengths (prompt + the longer response) with the maxSeqLength line, as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    total = figures.prompt_lengths + (figures.chosen_lengths if not len(figures.rejected_lengths) else
                                      figures.chosen_lengths.clip(min=figures.rejected_lengths))
    plot = Figure(figsize=(7, 4), dpi=100)
    axes = plot.add_subplot()
    for values, label in ((total, "prompt + longer response"), (figures.chosen_lengths, "chosen"),
                          (figures.rejected_lengths, "rejected")):
        if len(values):
            axes.hist(values, bins=50, histtype="step", label=label)
    if figures.max_seq_length > 0:
        axes.axvline(figures.max_seq_length, color="red", linestyle="--",
                     label=f"maxSeqLength {figures.max_seq_length}")
    axes.set_xlabel(figures.length_unit)
    axes.set_ylabel("pairs")
    axes.set_title(f"{figures.pairs} pairs, {figures.share(figures.truncated):.1%} cut at maxSeqLength")
    axes.legend()
    out = io.BytesIO()
    plot.savefig(out, format="png")
    return out.getvalue()


def files(body: dict[str, Any], training: Figures) -> list[tuple[str, bytes]]:
    """(name, content) of the card and, when matplotlib is installed (the workload image), the histogram."""
    out = [(CARD_FILE, json.dumps(body, indent=2, sort_keys=True).encode())]
    try:
        out.append((HISTOGRAM_FILE, histogram_png(training)))
    except ImportError:
        body.setdefault("warnings", []).append("no histogram: matplotlib is not installed")
        out[0] = (CARD_FILE, json.dumps(body, indent=2, sort_keys=True).encode())
    return out


def write(directory: Path, content: list[tuple[str, bytes]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in content:
        (directory / f".{name}.tmp").write_bytes(data)
        (directory / f".{name}.tmp").replace(directory / name)
