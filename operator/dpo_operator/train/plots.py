"""Training curves as PNG files beside ``metrics.jsonl`` and ``tensorboard/``: something to look at without a
TensorBoard server (``dpo-operator report`` inlines them in its HTML page).

Each plot shows the per-step values faintly and their bias-corrected exponential moving average (the smoothing
of ``status.progress.smoothedTrainLoss``) in bold, with the validation points (periodic ``validateEverySteps`` and
the final one) as markers. Matplotlib's Agg backend renders without a display.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from dpo_operator.train.progress import Ema

log = logging.getLogger(__name__)
PLOTS_DIR = "plots"
# file name -> (title, y label, training key, validation key)
CURVES = {
    "loss.png": ("DPO loss", "loss", "loss", "val/loss"),
    "reward_margin.png": ("Reward margin (chosen - rejected)", "margin", "rewards/margins", "val/rewards/margins"),
    "accuracy.png": ("Preference accuracy", "accuracy", "rewards/accuracies", "val/rewards/accuracies"),
}


def read_records(metrics_file: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training records, validation records) of a ``metrics.jsonl``; unreadable lines are skipped."""
    train: list[dict[str, Any]] = []
    validation: list[dict[str, Any]] = []
    for line in metrics_file.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "step" in record:
            (validation if "val/loss" in record else train if "loss" in record else []).append(record)
    return train, validation


def smoothed(values: list[float]) -> list[float]:
    ema = Ema()
    return [ema.add(v) for v in values]


def write_plots(output_dir: Path) -> list[Path]:
    """Render the curves of ``output_dir/metrics.jsonl`` into ``output_dir/plots/``; returns the files written.
    A missing matplotlib (an image without it) is logged, not fatal: the model is what matters."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no PNG curves (TensorBoard files and metrics.jsonl are written)")
        return []
    train, validation = read_records(output_dir / "metrics.jsonl")
    if not train:
        return []
    target = output_dir / PLOTS_DIR
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (title, ylabel, key, val_key) in CURVES.items():
        points = [(r["step"], float(r[key])) for r in train if isinstance(r.get(key), int | float)]
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=100)
        axes.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=1, label="per step")
        axes.plot(steps, smoothed(list(values)), color="tab:blue", linewidth=2, label="smoothed (EMA 0.1)")
        val_points = [(r["step"], float(r[val_key])) for r in validation if isinstance(r.get(val_key), int | float)]
        if val_points:
            axes.plot(*zip(*val_points, strict=True), "o-", color="tab:orange", label="validation")
        axes.set(title=title, xlabel="optimizer step", ylabel=ylabel)
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize="small")
        figure.tight_layout()
        figure.savefig(target / name)
        plt.close(figure)
        written.append(target / name)
    return written
