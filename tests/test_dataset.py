"""Dataset assembly: dedup, seeded sampling and split (edge cases), rows, atomic directory writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpo_operator.collect import dataset
from dpo_operator.collect.pairs import PreferencePair


def pair(i: int, prompt: object = None) -> PreferencePair:
    return PreferencePair(prompt if prompt is not None else f"p{i}", f"good{i}", f"bad{i}", 1.0, 1.0, "e", "t", 1.0, 0.0)


def test_deduplicate_keeps_first_occurrence() -> None:
    pairs = [pair(1), pair(2), pair(1), pair(3, prompt=[{"role": "user", "content": "x"}]),
             pair(3, prompt=[{"role": "user", "content": "x"}])]
    assert [p.prompt for p in dataset.deduplicate(pairs)] == ["p1", "p2", [{"role": "user", "content": "x"}]]


def test_sampling_is_seeded_and_order_preserving() -> None:
    pairs = [pair(i) for i in range(100)]
    first = dataset.sample(pairs, 10, seed=7)
    assert first == dataset.sample(pairs, 10, seed=7)
    assert first != dataset.sample(pairs, 10, seed=8)
    assert [p.prompt for p in first] == sorted((p.prompt for p in first), key=lambda s: int(s[1:]))
    assert dataset.sample(pairs, 500, seed=7) == pairs
    assert dataset.sample(pairs, None, seed=7) == pairs


@pytest.mark.parametrize("n, fraction, n_train, n_val, overlap", [
    (1, 0.2, 1, 1, True),     # a single pair is both files (never an empty training file)
    (2, 0.2, 1, 1, False),
    (10, 0.2, 8, 2, False),
    (10, 0.0, 10, 1, True),   # no validation asked for: the last training row doubles as validation
    (5, 0.5, 2, 3, False),
])
def test_split_edge_cases(n: int, fraction: float, n_train: int, n_val: int, overlap: bool) -> None:
    train, val = dataset.split(list(range(n)), fraction, seed=1)
    assert (len(train), len(val)) == (n_train, n_val)
    assert bool(set(train) & set(val)) == overlap
    assert set(train) | set(val) == set(range(n))


def test_split_is_seeded_and_rejects_empty() -> None:
    assert dataset.split(list(range(50)), 0.2, 3) == dataset.split(list(range(50)), 0.2, 3)
    assert dataset.split(list(range(50)), 0.2, 3) != dataset.split(list(range(50)), 0.2, 4)
    with pytest.raises(ValueError):
        dataset.split([], 0.2, 0)


def test_rows_prompt_as_string_or_full_history() -> None:
    history = [{"role": "system", "content": "s"}, {"role": "user", "content": "board"}]
    assert dataset.to_row(pair(1, history), full_history=False) == {
        "prompt": "board", "chosen_response": "good1", "rejected_response": "bad1"}
    assert dataset.to_row(pair(1, history), full_history=True)["prompt"] == history
    assert dataset.to_row(pair(1, "plain"), full_history=True)["prompt"] == [{"role": "user", "content": "plain"}]


def test_directory_write_replaces_whole_dataset(tmp_path: Path) -> None:
    target = tmp_path / "ds"
    files = dataset.DatasetFiles(dataset.jsonl([{"a": 1}]), dataset.jsonl([{"b": 2}]), b"{}")
    dataset.write_directory(files, target)
    (target / "stale.txt").write_text("from an earlier run")
    dataset.write_directory(dataset.DatasetFiles(b"new\n", b"new\n", b'{"v": 2}'), target)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        "metrics.json", "training/training_file.jsonl", "validation/validation_file.jsonl"]
    assert json.loads((target / "metrics.json").read_text()) == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no staging leftovers


def test_crash_while_writing_leaves_previous_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "ds"
    dataset.write_directory(dataset.DatasetFiles(b"old\n", b"old\n", b"{}"), target)

    class Boom(RuntimeError):
        pass

    real_open = open

    def failing_open(path, mode="r", *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        if "validation_file" in str(path) and "w" in mode:
            raise Boom("disk full")
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(Boom):
        dataset.write_directory(dataset.DatasetFiles(b"new\n", b"new\n", b"{}"), target)
    monkeypatch.undo()
    assert (target / dataset.TRAIN_FILE).read_bytes() == b"old\n"
    assert (target / dataset.VALIDATION_FILE).read_bytes() == b"old\n"
