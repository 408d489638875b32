"""NAT's collection output files and per-run line, as ``nemo_customizer_trainer`` (NAT 1.9.0) writes them.

NAT's trainer appends one entry per data collection run to ``data_collection_progress.jsonl``, rewrites the list
of entries to ``collection_history.json`` after each run, and writes ``final_metrics.json`` at the end
(``nat.plugins.customizer.dpo.trainer``: ``run_epoch``, ``log_progress``, ``_log_final_metrics``). A trajectory
there is one pair, its reward the pair's (score difference, or the chosen score without ``reward_from_score_diff``);
NAT groups a run's trajectories by example. The field names and shapes here are NAT's; where the NAT config names
``finetuning.reward_function``, each run also records that evaluator's average score (``reward_function``,
``avg_evaluator_reward``): NAT hands the evaluator to its builders as the reward, and this is its mean per run.

Differences by design: the pairs are ours (ties dropped), the collection ends with a dataset rather than a
Customizer job (``status`` ``completed``, ``job_metadata`` null: training is a DPOTrainingJob's).
"""

from __future__ import annotations

import datetime
import json
import logging
import uuid
from typing import Any

from dpo_operator.collect.pairs import PreferencePair

log = logging.getLogger("dpo_operator.collect.runner")  # the collector's log, where NAT's per-run line belongs

PROGRESS_FILE = "data_collection_progress.jsonl"
HISTORY_FILE = "collection_history.json"
FINAL_METRICS_FILE = "final_metrics.json"


def new_run_id() -> str:
    """NAT's run id (``nemo_dpo_`` and 8 hex digits), one per collection."""
    return f"nemo_dpo_{uuid.uuid4().hex[:8]}"


def _now() -> str:
    return datetime.datetime.now().isoformat()


def run_entry(run_id: str, run: int, pairs: list[PreferencePair],
              evaluator: tuple[str, float] | None = None) -> dict[str, Any]:
    """One run's progress entry (``log_progress``'s: run_number, timestamp, run_id, then ``run_epoch``'s
    metrics), and NAT's per-run line in the log; ``evaluator`` is (reward_function name, its average score)."""
    rewards = [p.reward for p in pairs]
    entry: dict[str, Any] = {
        "run_number": run, "timestamp": _now(), "run_id": run_id,
        "num_trajectories": len(pairs), "num_dpo_pairs": len(pairs),
        "avg_reward": sum(rewards) / len(rewards) if rewards else 0.0,
        "min_reward": min(rewards, default=0.0), "max_reward": max(rewards, default=0.0),
    }
    line = f"Run {run + 1}: Collected {len(pairs)} trajectories, {len(pairs)} DPO pairs, avg reward: {entry['avg_reward']:.4f}"
    if evaluator is not None:
        entry["reward_function"], entry["avg_evaluator_reward"] = evaluator
        line += f", {evaluator[0]} (reward_function) avg: {evaluator[1]:.4f}"
    log.info(line)
    return entry


def trajectory_groups(pairs: list[PreferencePair]) -> int:
    """NAT's groups of one run: its trajectories grouped by example."""
    return len({p.example_id for p in pairs})


def final_metrics(run_id: str, history: list[dict[str, Any]], groups: int, message: str) -> dict[str, Any]:
    """``final_metrics.json``: NAT's collection summary (counts before deduplication and sampling, as NAT's)."""
    summary: dict[str, Any] = {
        "total_trajectories": sum(e["num_trajectories"] for e in history),
        "total_dpo_pairs": sum(e["num_dpo_pairs"] for e in history),
        "avg_reward": sum(e["avg_reward"] for e in history) / len(history) if history else 0.0,
    }
    scored = [e for e in history if "avg_evaluator_reward" in e]
    if scored:
        summary["reward_function"] = scored[0]["reward_function"]
        summary["avg_evaluator_reward"] = sum(e["avg_evaluator_reward"] for e in scored) / len(scored)
    return {"run_id": run_id, "timestamp": _now(), "status": "completed", "message": message, "progress": 100.0,
            "num_collection_runs": len(history), "total_trajectory_groups": groups,
            "collection_summary": summary, "job_metadata": None}


def files(run_id: str, history: list[dict[str, Any]], groups: int, message: str) -> list[tuple[str, bytes]]:
    """The three files, as (name in the output directory, content)."""
    progress = b"".join(json.dumps(e).encode() + b"\n" for e in history)
    return [(PROGRESS_FILE, progress), (HISTORY_FILE, json.dumps(history, indent=2).encode()),
            (FINAL_METRICS_FILE, json.dumps(final_metrics(run_id, history, groups, message), indent=2).encode())]
