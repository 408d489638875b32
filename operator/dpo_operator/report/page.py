"""The report as one HTML file: inline CSS, images as ``data:`` URIs, no script and no network access, so that it
opens the same from a mail attachment, a CI artifact or a laptop without cluster access. Every value from the
cluster or the files is escaped."""

from __future__ import annotations

import base64
import datetime
import math
import re
from html import escape
from typing import Any

from dpo_operator import __version__
from dpo_operator.report.sources import ReportData

CAPTIONS = {"loss.png": "DPO loss", "reward_margin.png": "Reward margin (chosen - rejected)",
            "accuracy.png": "Preference accuracy"}
SUMMARY_KEYS = ("steps", "trainSeconds", "referenceSeconds", "strategy", "resumedFromStep", "sharedPrompt",
                "weightsLoadedBy", "reference", "referenceLoads", "smoothedTrainLoss", "outputModel")
DATASET_KEYS = ("decisionPoints", "candidates", "invalidCandidates", "tiedPairsDropped", "identicalPairsDropped",
                "belowThresholdDropped", "duplicatesRemoved", "truncatedPairs", "meanScoreDiff", "collectionSeconds",
                "candidatesPerSecond", "runsCompleted", "runsFailed")
STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1100px;color:#1d2430;
padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde3ea;
padding-bottom:.3rem}
.phase{display:inline-block;padding:.15rem .6rem;border-radius:1rem;font-weight:600;color:#fff;background:#6b7785}
.phase.Succeeded,.phase.Ready{background:#1f8a4c}.phase.Failed{background:#c0392b}.phase.Running{background:#1f6fb2}
.message{color:#4a5563;margin:.4rem 0 1rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.3rem .8rem;border-bottom:1px solid #eef1f4;
text-align:left}th{background:#f5f7fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.figures{display:flex;flex-wrap:wrap;gap:1rem}figure{margin:0;border:1px solid #dde3ea;border-radius:6px;padding:.5rem}
figure img{display:block;max-width:100%}figcaption{font-size:.9rem;color:#4a5563;text-align:center}
.note{color:#8a5a00}footer{margin-top:2rem;font-size:.8rem;color:#6b7785}
"""


def _words(key: str) -> str:
    """``smoothedTrainLoss`` -> ``smoothed train loss``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", key).lower()


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return escape(f"{value:.4g}" if math.isfinite(value) else str(value))
    if isinstance(value, dict):
        return escape(", ".join(f"{k}: {v}" for k, v in value.items()))
    return escape(str(value))


def _table(rows: dict[str, Any], keys: tuple[str, ...] | None = None) -> str:
    picked = [(k, rows[k]) for k in (keys or tuple(rows)) if rows.get(k) is not None]
    if not picked:
        return "<p>none reported</p>"
    body = "".join(f"<tr><th>{escape(_words(k))}</th><td class='num'>{_value(v)}</td></tr>" for k, v in picked)
    return f"<table>{body}</table>"


def _validation(checks: dict[str, Any]) -> str:
    """The trained policy beside the reference on the same validation pairs."""
    reference = checks.get("reference") or {}
    rows = [("DPO loss", checks.get("loss"), "0.6931 (ln 2, by construction)"),
            ("reward accuracy", checks.get("rewardAccuracy"), "0 (its implicit reward is 0)"),
            ("reward margin", checks.get("rewardMargin"), "0"),
            ("likelihood preference accuracy", checks.get("logpsAccuracy"), reference.get("logpsAccuracy")),
            ("... per token", checks.get("logpsPerTokenAccuracy"), reference.get("logpsPerTokenAccuracy"))]
    body = "".join(f"<tr><th>{escape(name)}</th><td class='num'>{_value(policy) if policy is not None else '-'}</td>"
                   f"<td class='num'>{_value(ref) if ref is not None else '-'}</td></tr>" for name, policy, ref in rows)
    return (f"<p>{_value(checks.get('pairs'))} validation pairs. Likelihood preference: the share of pairs whose "
            "chosen response the model finds more likely.</p>"
            f"<table><tr><th></th><th>trained policy</th><th>reference</th></tr>{body}</table>")


def _conditions(conditions: list[dict[str, Any]]) -> str:
    if not conditions:
        return "<p>none</p>"
    rows = "".join(f"<tr><td>{_value(c.get('type'))}</td><td>{_value(c.get('status'))}</td>"
                   f"<td>{_value(c.get('reason'))}</td><td>{_value(c.get('message', ''))}</td></tr>" for c in conditions)
    return f"<table><tr><th>type</th><th>status</th><th>reason</th><th>message</th></tr>{rows}</table>"


def _figures(images: dict[str, bytes]) -> str:
    figures = []
    order = list(CAPTIONS)
    for name, data in sorted(images.items(), key=lambda item: (order.index(item[0]) if item[0] in order else 99,
                                                               item[0])):
        caption = CAPTIONS.get(name, name.removesuffix(".png").replace("_", " "))
        figures.append(f"<figure><img alt='{escape(caption, quote=True)}' src='data:image/png;base64,"
                       f"{base64.b64encode(data).decode()}'><figcaption>{escape(caption)}</figcaption></figure>")
    return f"<div class='figures'>{''.join(figures)}</div>"


def _dataset(data: ReportData) -> str:
    parts = []
    if data.dataset is not None:
        status = data.dataset.get("status") or {}
        name = data.dataset["metadata"]["name"]
        parts.append(f"<p>DPOCollection <b>{escape(name)}</b> ({_value(status.get('phase'))}), written to "
                     f"{_value(status.get('datasetLocation') or '-')}.</p>")
        parts.append(_table({**{f"{k} pairs": v for k, v in (status.get("pairs") or {}).items()},
                             **{k: status.get(k) for k in ("candidates", "meanScoreDiff", "runsCompleted",
                                                           "invalidCandidates")}}))
    if data.dataset_metrics is not None:
        metrics = data.dataset_metrics
        parts.append(_table({**{f"{k} pairs": v for k, v in (metrics.get("pairs") or {}).items()},
                             **{k: metrics.get(k) for k in DATASET_KEYS}}))
    return "".join(parts)


def render(data: ReportData, now: datetime.datetime | None = None) -> str:
    status = data.resource.get("status") or {}
    phase = str(status.get("phase") or "Unknown")
    sections = [f"<h1>{escape(data.kind)} {escape(data.namespace)}/{escape(data.name)}</h1>",
                f"<p><span class='phase {escape(phase, quote=True)}'>{escape(phase)}</span> "
                f"{_value(status.get('reason') or '')}</p><p class='message'>{_value(status.get('message') or '')}</p>",
                _table(status, ("startTime", "completionTime", "outputModel", "datasetLocation", "deploymentName",
                                "failureReason"))]
    if status.get("progress"):
        sections.append(f"<h2>Progress</h2>{_table(status['progress'])}")
    if status.get("validation"):
        sections.append(f"<h2>Validation: trained policy and reference</h2>{_validation(status['validation'])}")
    if data.images:
        sections.append(f"<h2>Training curves</h2><p>Faint: each step; bold: smoothed (EMA, weight 0.1); dots: "
                        f"validation.</p>{_figures(data.images)}")
    if data.trainer_summary:
        sections.append(f"<h2>Trainer summary</h2>{_table(data.trainer_summary, SUMMARY_KEYS)}")
    dataset = _dataset(data)
    if dataset:
        sections.append(f"<h2>Dataset</h2>{dataset}")
    if data.kind == "DPOCollection":
        sections.append(f"<h2>Collection</h2>{_table(status, ('candidates', 'runsCompleted', 'runsFailed', 'meanScoreDiff', 'invalidCandidates', 'candidatesPerSecond'))}")
    sections.append(f"<h2>Conditions</h2>{_conditions(status.get('conditions') or [])}")
    if data.notes:
        sections.append("<h2>Not included</h2><ul>" + "".join(f"<li class='note'>{escape(n)}</li>" for n in data.notes)
                        + "</ul>")
    stamp = (now or datetime.datetime.now(tz=datetime.UTC)).strftime("%Y-%m-%d %H:%M UTC")
    sections.append(f"<footer>dpo-operator {escape(__version__)} report, generated {stamp}. Self-contained: "
                    "no scripts, no network.</footer>")
    title = escape(f"{data.kind} {data.namespace}/{data.name}")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n")
