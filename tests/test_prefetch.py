"""The trainer's host-side pipeline: batches prepared ahead in a background thread, metrics read a step late."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from dpo_operator.train.metrics import METRIC_KEYS, StepReports
from dpo_operator.train.prefetch import Prefetcher

torch = pytest.importorskip("torch")


def test_items_come_back_in_order_prepared_in_one_other_thread() -> None:
    threads: set[str] = set()

    def prepare(item: int) -> int:
        threads.add(threading.current_thread().name)
        time.sleep(0.01 * (item % 3))  # uneven work must not reorder anything
        return item * item

    with Prefetcher(range(10), prepare, depth=3) as prefetched:
        assert list(prefetched) == [(i, i * i) for i in range(10)]
    assert len(threads) == 1 and threading.current_thread().name not in threads


def test_prepares_ahead_while_the_consumer_works_but_never_more_than_depth() -> None:
    started: list[int] = []
    with Prefetcher(range(6), lambda item: started.append(item) or item, depth=2) as prefetched:
        item, _ = next(prefetched)
        assert item == 0
        deadline = time.monotonic() + 5
        while len(started) < 3 and time.monotonic() < deadline:  # items 1 and 2 are prepared meanwhile
            time.sleep(0.005)
        time.sleep(0.05)
        assert started == [0, 1, 2]


def test_an_error_while_preparing_is_raised_at_that_item_after_the_earlier_ones() -> None:
    def prepare(item: int) -> int:
        if item == 3:
            raise ValueError("row 3 is not a JSON object")
        return item

    taken = []
    with Prefetcher(range(6), prepare, depth=2) as prefetched:
        with pytest.raises(ValueError, match="row 3"):
            for item, _ in prefetched:
                taken.append(item)
    assert taken == [0, 1, 2]


def test_leaving_early_stops_the_thread_and_drops_unstarted_work() -> None:
    prepared: list[int] = []
    with Prefetcher(range(1000), lambda item: prepared.append(item) or item, depth=2) as prefetched:
        for item, _ in prefetched:
            if item == 1:
                break
    count = len(prepared)
    time.sleep(0.05)
    assert len(prepared) == count <= 4  # nothing more runs once closed
    assert not any(t.name.startswith("prefetch") for t in threading.enumerate())


def test_depth_zero_prepares_each_item_inline_when_taken() -> None:
    prepared: list[tuple[int, str]] = []

    def prepare(item: int) -> int:
        prepared.append((item, threading.current_thread().name))
        return -item

    with Prefetcher(range(3), prepare, depth=0) as inline:
        assert next(inline) == (0, 0) and prepared == [(0, threading.current_thread().name)]  # nothing ahead
        assert list(inline) == [(1, -1), (2, -2)]
    with pytest.raises(ValueError, match="depth"):
        Prefetcher([1], lambda item: item, depth=-1)


class RecordingSink:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)


def totals_for(step: int) -> torch.Tensor:
    """Metric sums over 4 pairs, 100 tokens, then the gradient norm: every metric's mean is ``step``."""
    return torch.tensor([4.0 * step] * len(METRIC_KEYS) + [4.0, 100.0, 0.5 * step])


@pytest.mark.parametrize("deferred", [False, True])
def test_step_reports_write_every_step_once_in_order_with_its_own_figures(deferred: bool) -> None:
    sink = RecordingSink()
    reports = StepReports(sink, deferred=deferred)  # type: ignore[arg-type]
    for step in (1, 2, 3):
        reports.add(totals_for(step), step, epoch=step / 10, learning_rate=0.1 * step)
        # deferred: a step is read only once the next one is queued
        assert [r["step"] for r in sink.records] == (list(range(1, step)) if deferred else list(range(1, step + 1)))
    reports.flush()
    reports.flush()  # nothing left: writes nothing twice
    assert [r["step"] for r in sink.records] == [1, 2, 3]
    for record, step in zip(sink.records, (1, 2, 3)):
        assert all(record[key] == pytest.approx(step) for key in METRIC_KEYS)
        assert record["grad_norm"] == pytest.approx(0.5 * step)
        assert record["learning_rate"] == pytest.approx(0.1 * step)
        assert record["epoch"] == pytest.approx(step / 10)
    assert reports.last is sink.records[-1]


def test_a_step_reported_now_is_written_before_add_returns_even_when_deferred() -> None:
    sink = RecordingSink()
    reports = StepReports(sink, deferred=True)  # type: ignore[arg-type]
    reports.add(totals_for(1), 1, 0.1, 0.1)
    reports.add(totals_for(2), 2, 0.2, 0.1, now=True)  # e.g. a checkpoint follows: the record comes first
    assert [r["step"] for r in sink.records] == [1, 2]


@pytest.mark.workload
def test_training_with_batches_prepared_in_a_thread_equals_training_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop end to end on the tiny model: a GPU's setting (prepared two steps ahead in a thread) and a CPU's
    (inline) train the same weights, and every step is logged once, in order."""
    import json

    from safetensors.torch import load_file

    from dpo_operator.train.trainer import Trainer, train
    from tests.tinymodel import build_tiny_model
    from tests.trainconfig import flat_config

    model = build_tiny_model(tmp_path / "model")
    data = tmp_path / "data"
    rows = [{"prompt": f"q{i}", "chosen_response": "yes " * (1 + i % 3), "rejected_response": "no"} for i in range(12)]
    for name, part in (("training/training_file.jsonl", rows), ("validation/validation_file.jsonl", rows[:3])):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in part))

    def run(name: str, depth: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        monkeypatch.setattr(Trainer, "_prefetch_depth", property(lambda self: depth))
        summary = train(flat_config(model=str(model), dataset_dir=str(data), output_dir=str(tmp_path / name),
                                    finetuning_type="all_weights", batch_size=4, epochs=2, learning_rate=1e-3))
        return summary, [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    inline, inline_records = run("inline", 0)
    ahead, records = run("ahead", 2)
    assert [r["step"] for r in records] == list(range(1, 7)) and ahead["steps"] == 6
    assert [r["epoch"] for r in records] == pytest.approx([1 / 3, 2 / 3, 1, 4 / 3, 5 / 3, 2])
    assert all(r["grad_norm"] > 0 and 0 <= r["rewards/accuracies"] <= 1 for r in records)
    assert ahead["train"] == records[-1]
    for key in ("loss", "grad_norm", "rewards/margins"):
        assert [r[key] for r in records] == [r[key] for r in inline_records]
    assert ahead["validation"] == inline["validation"]
    one, two = load_file(str(tmp_path / "inline/final/model.safetensors")), load_file(str(tmp_path / "ahead/final/model.safetensors"))
    assert all(torch.equal(one[key], two[key]) for key in one)
