"""Preference pairs from scored candidates, with the semantics of NeMo Agent Toolkit's dpo_traj_builder.

Candidates are grouped by the tuple (example_id, turn_id) and sorted by score (descending; equal scores keep
their emission order, as NAT's stable sort does). ``exhaustive`` pairs every higher-scored candidate with every
lower-scored one and orders a turn's pairs by score difference (largest first, stable), keeping the
``max_pairs_per_turn`` first; ``bestVsWorst`` pairs only the first and last. Pairs whose difference is below
``min_score_diff`` are dropped.

Deliberate differences from the reference (NAT 1.9.0), each counted in :class:`PairingStats`:

- equal-score pairs are never emitted, even with ``min_score_diff == 0``: two equally scored responses carry no
  preference, and training on them would push the policy towards an arbitrary one of them;
- pairs whose chosen and rejected texts are identical are dropped for the same reason;
- the group key is a tuple, where NAT's ``f"{example_id}::{turn_id}"`` string merges e.g. example ``a::b`` turn
  ``c`` with example ``a`` turn ``b::c``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from dpo_operator.collect.events import CandidateEvent, Prompt


class PreferencePair(NamedTuple):  # a tuple: cheap to build by the million
    prompt: Prompt
    chosen: str
    rejected: str
    reward: float
    score_diff: float
    example_id: str
    turn_id: str
    chosen_score: float
    rejected_score: float


@dataclass(frozen=True)
class PairingOptions:
    strategy: str = "exhaustive"  # or "bestVsWorst"
    min_score_diff: float = 0.0
    max_pairs_per_turn: int | None = None
    reward_from_score_diff: bool = True
    require_multiple_candidates: bool = True


@dataclass
class PairingStats:
    events: int = 0
    turns: int = 0
    single_candidate_turns: int = 0
    tied_pairs_dropped: int = 0
    identical_pairs_dropped: int = 0
    below_threshold_dropped: int = 0
    truncated: int = 0
    score_diff_sum: float = field(default=0.0)


def _pair(prompt_source: CandidateEvent, chosen: CandidateEvent, rejected: CandidateEvent, diff: float,
          options: PairingOptions) -> PreferencePair:
    return PreferencePair(
        prompt=prompt_source.input, chosen=chosen.output, rejected=rejected.output,
        reward=diff if options.reward_from_score_diff else chosen.score, score_diff=diff,
        example_id=chosen.example_id, turn_id=chosen.turn_id,
        chosen_score=chosen.score, rejected_score=rejected.score,
    )


def _turn_pairs(ranked: list[CandidateEvent], options: PairingOptions, stats: PairingStats) -> list[PreferencePair]:
    if options.strategy == "bestVsWorst":
        candidates = [(ranked[0], ranked[-1])]
    else:
        candidates = [(ranked[i], ranked[j]) for i in range(len(ranked)) for j in range(i + 1, len(ranked))]
    kept: list[tuple[float, CandidateEvent, CandidateEvent]] = []
    for chosen, rejected in candidates:
        diff = chosen.score - rejected.score
        if diff <= 0.0:
            stats.tied_pairs_dropped += 1
        elif chosen.output == rejected.output:
            stats.identical_pairs_dropped += 1
        elif diff < options.min_score_diff:
            stats.below_threshold_dropped += 1
        else:
            kept.append((diff, chosen, rejected))
    if options.strategy != "bestVsWorst":
        kept.sort(key=lambda item: -item[0])  # stable: equal differences keep their rank order
    if options.strategy != "bestVsWorst" and options.max_pairs_per_turn is not None:
        stats.truncated += max(0, len(kept) - options.max_pairs_per_turn)
        kept = kept[: options.max_pairs_per_turn]
    return [_pair(chosen, chosen, rejected, diff, options) for diff, chosen, rejected in kept]


def build_pairs(events: Iterable[CandidateEvent], options: PairingOptions,
                stats: PairingStats | None = None) -> list[PreferencePair]:
    """All preference pairs of a run, turn by turn in first-seen order."""
    stats = stats if stats is not None else PairingStats()
    groups: dict[tuple[str, str], list[CandidateEvent]] = defaultdict(list)
    for event in events:
        groups[(event.example_id, event.turn_id)].append(event)
        stats.events += 1
    pairs: list[PreferencePair] = []
    for group in groups.values():
        stats.turns += 1
        if len(group) < 2:
            stats.single_candidate_turns += 1
            continue
        group.sort(key=lambda e: -e.score)  # stable: ties keep their emission order (as NAT's sort does)
        turn = _turn_pairs(group, options, stats)
        stats.score_diff_sum += sum(p.score_diff for p in turn)
        pairs.extend(turn)
    return pairs
