"""The spec's thresholds applied to the figures: failures (training is refused: ``DataCheckFailed``) and warnings
(conditions and events; training goes on). Each message names the figure, the rows and the field that sets it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dpo_operator.datacheck.figures import Figures

LENGTH_BIAS_WARNING = 1.5  # mean chosen vs rejected length, either way


@dataclass
class Verdict:
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def _share(figures: Figures, count: int, what: str, limit: float, setting: str, verdict: Verdict,
           example: list[str] | None = None) -> None:
    if not count:
        return
    share = figures.share(count)
    where = f"; e.g. {', '.join(example[:3])}" if example else ""
    message = f"{count} of {figures.pairs} pairs ({share:.1%}) {what}"
    if share > limit:
        verdict.failures.append(f"{message}: more than dataset.check.{setting} ({limit:.1%}){where}")
    else:
        verdict.warnings.append(message + where)


def judge(figures: Figures, settings: Any, split: str = "training") -> Verdict:
    """``settings``: ``api.training.DataCheckSettings``."""
    verdict = Verdict()
    if figures.rows_rejected:
        verdict.failures.append(f"{figures.rows_rejected} {split} rows cannot be read (the trainer would stop on the "
                                f"first): {'; '.join(figures.rejected[:3])}")
    if split == "training" and figures.pairs < settings.min_pairs:
        verdict.failures.append(f"{figures.pairs} usable training pairs, fewer than dataset.check.minPairs "
                                f"({settings.min_pairs})")
    if figures.ties_dropped:
        verdict.warnings.append(f"{figures.ties_dropped} {split} rows are ties (no preference) and were dropped")
    _share(figures, figures.empty, "have an empty prompt or response", settings.max_empty_share, "maxEmptyShare",
           verdict)
    _share(figures, figures.identical, "have chosen == rejected", settings.max_identical_share,
           "maxIdenticalShare", verdict)
    _share(figures, figures.prompt_ends_with_chosen, "have a prompt that already ends with the chosen response "
           "(the answer is in the prompt)", settings.max_prompt_ends_with_chosen_share,
           "maxPromptEndsWithChosenShare", verdict, figures.prompt_ends_with_chosen_rows)
    _share(figures, figures.duplicates, "repeat an earlier pair exactly", settings.max_duplicate_share,
           "maxDuplicateShare", verdict)
    _share(figures, figures.near_duplicates - figures.duplicates, "nearly repeat an earlier pair (case, "
           "punctuation, spacing)", settings.max_near_duplicate_share, "maxNearDuplicateShare", verdict)
    _share(figures, figures.truncated, f"are longer than hyperparameters.maxSeqLength ({figures.max_seq_length} "
           f"{figures.length_unit}) and will be cut", settings.max_truncated_share, "maxTruncatedShare", verdict)
    bias, ratio = figures.length_bias, figures.length_ratio
    if bias is not None and ratio is not None and bias > LENGTH_BIAS_WARNING:
        side = "longer" if ratio > 1 else "shorter"
        message = (f"chosen responses are on average {bias:.2f}x {side} than rejected ones ({figures.length_unit}): "
                   "DPO may learn length instead of quality")
        limit = settings.max_length_bias
        if limit is not None and bias > limit:
            verdict.failures.append(f"{message}; more than dataset.check.maxLengthBias ({limit})")
        else:
            verdict.warnings.append(message)
    return verdict
