"""Datasets people already have: every file type (written by Hugging Face ``datasets`` itself) in every format, an
explicit column mapping, auto-detection (and its error naming the columns), HelpSteer3 ties dropped and counted,
split names and a seeded validation ratio, a Hub revision, a malformed row named by its number; and chat templates
checked token for token against TRL's own DPO preprocessing."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from dpo_operator.train.formats import FormatError, RowError  # noqa: E402
from dpo_operator.train.sources import Reading, download_hub, open_splits  # noqa: E402

Q = [{"role": "user", "content": "What color is the sky?"}]
A_BLUE = [{"role": "assistant", "content": "Blue."}]
A_GREEN = [{"role": "assistant", "content": "Green."}]

# (format, stored rows, expected rows in our format)
CASES: dict[str, tuple[list[dict[str, Any]], list[tuple[Any, Any, Any]]]] = {
    "nemo": ([{"prompt": "Q1", "chosen_response": "yes", "rejected_response": "no"},
              {"prompt": "Q2", "chosen_response": "fine", "rejected_response": "bad"}],
             [("Q1", "yes", "no"), ("Q2", "fine", "bad")]),
    "trl": ([{"prompt": Q, "chosen": A_BLUE, "rejected": A_GREEN}] * 2, [(Q, A_BLUE, A_GREEN)] * 2),
    "helpsteer3": ([{"context": Q, "response1": "Blue.", "response2": "Green.", "overall_preference": -2},
                    {"context": Q, "response1": "Green.", "response2": "Blue.", "overall_preference": 1},
                    {"context": Q, "response1": "Blue.", "response2": "Blue!", "overall_preference": 0}],
                   [(Q, "Blue.", "Green."), (Q, "Blue.", "Green.")]),
    "tulu3": ([{"prompt": "What color is the sky?", "chosen": Q + A_BLUE, "rejected": Q + A_GREEN}] * 2,
              [(Q, A_BLUE, A_GREEN)] * 2),
}


def write(rows: list[dict[str, Any]], directory: Path, kind: str) -> str:
    """``rows`` as a ``kind`` file under ``directory`` (by ``datasets``' own writers); answers its relative path."""
    dataset = datasets.Dataset.from_list(rows)
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "jsonl":
        dataset.to_json(directory / "train.jsonl", lines=True)
    elif kind == "json":
        dataset.to_json(directory / "train.json", lines=False, orient="records")
    elif kind == "parquet":
        dataset.to_parquet(directory / "train.parquet")
    elif kind == "arrow":
        dataset.save_to_disk(directory / "saved")
        arrow = next((directory / "saved").glob("*.arrow"))
        arrow.rename(directory / "train.arrow")
    elif kind == "saved":
        datasets.DatasetDict({"train": dataset, "test": dataset}).save_to_disk(directory / "train")
        return "train"
    return f"train.{kind}"


def triples(rows: Any) -> list[tuple[Any, Any, Any]]:
    return [(r["prompt"], r["chosen_response"], r["rejected_response"]) for r in (rows.row(i) for i in range(len(rows)))]


@pytest.mark.parametrize("kind", ["jsonl", "json", "parquet", "arrow", "saved"])
@pytest.mark.parametrize("fmt", sorted(CASES))
def test_every_format_in_every_file_type_auto_detected(tmp_path: Path, fmt: str, kind: str) -> None:
    stored, expected = CASES[fmt]
    name = write(stored, tmp_path, kind)
    splits = open_splits(tmp_path, Reading(training=name, validation=None))
    assert splits.training.format == fmt
    assert triples(splits.training) == expected
    assert splits.training.dropped == len(stored) - len(expected)
    assert (splits.training.sizes() > 0).all()
    explicit = open_splits(tmp_path, Reading(training=name, validation=None, format=fmt))
    assert triples(explicit.training) == expected


def test_helpsteer3_ties_are_dropped_not_turned_into_identical_pairs(tmp_path: Path) -> None:
    rows = [{"context": Q, "response1": f"r{i}", "response2": f"s{i}", "overall_preference": p}
            for i, p in enumerate([-3, 0, 2, 0, 0, 1])]
    name = write(rows, tmp_path, "parquet")
    training = open_splits(tmp_path, Reading(training=name, validation=None)).training
    assert training.dropped == 3 and len(training) == 3
    assert [(r[1], r[2]) for r in triples(training)] == [("r0", "s0"), ("s2", "r2"), ("s5", "r5")]


def test_trl_implicit_prompt_standard_and_conversational(tmp_path: Path) -> None:
    standard = [{"chosen": "The sky is blue.", "rejected": "The sky is green."}]
    name = write(standard, tmp_path / "s", "jsonl")
    assert triples(open_splits(tmp_path / "s", Reading(training=name, validation=None)).training) == \
        [("The sky is", " blue.", " green.")]  # TRL's extract_prompt keeps the space with the answer
    conversational = [{"chosen": Q + A_BLUE, "rejected": Q + A_GREEN}]
    name = write(conversational, tmp_path / "c", "parquet")
    assert triples(open_splits(tmp_path / "c", Reading(training=name, validation=None)).training) == \
        [(Q, A_BLUE, A_GREEN)]


def test_explicit_column_mapping(tmp_path: Path) -> None:
    rows = [{"question": "Q", "good": "yes", "bad": "no", "extra": 1}]
    name = write(rows, tmp_path, "parquet")
    mapping = {"prompt": "question", "chosen": "good", "rejected": "bad"}
    assert triples(open_splits(tmp_path, Reading(training=name, validation=None, columns=mapping)).training) == \
        [("Q", "yes", "no")]
    with pytest.raises(FormatError, match=r"dataset.columns names \['answer'\], not among the columns found "
                                          r"\(bad, extra, good, question\)"):
        open_splits(tmp_path, Reading(training=name, validation=None, columns={**mapping, "chosen": "answer"}))


def test_no_known_format_names_the_columns_found(tmp_path: Path) -> None:
    name = write([{"question": "Q", "answer_a": "x", "answer_b": "y"}], tmp_path, "parquet")
    with pytest.raises(FormatError, match=r"no known preference format fits the columns found "
                                          r"\(answer_a, answer_b, question\).*dataset.columns"):
        open_splits(tmp_path, Reading(training=name, validation=None))
    with pytest.raises(FormatError, match=r"dataset.format helpsteer3 needs the columns \['context', 'response1', "
                                          r"'response2', 'overall_preference'\]"):
        open_splits(tmp_path, Reading(training=name, validation=None, format="helpsteer3"))


def test_a_malformed_row_is_named_by_its_line_or_row_number(tmp_path: Path) -> None:
    good = {"prompt": "Q", "chosen": "yes", "rejected": "no"}
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [good, good, {**good, "chosen": 7}, good]) + "\n")
    rows = open_splits(tmp_path, Reading(training="t.jsonl", validation=None)).training
    with pytest.raises(RowError, match=rf"^{path}:3: chosen must be a string or a list of chat messages, not int"):
        triples(rows)
    name = write([good, good, {**good, "chosen": None}], tmp_path / "p", "parquet")
    rows = open_splits(tmp_path / "p", Reading(training=name, validation=None)).training
    with pytest.raises(RowError, match=r"train.parquet row 3: chosen must be a string .* not NoneType"):
        triples(rows)


def test_splits_by_name_and_by_seeded_ratio(tmp_path: Path) -> None:
    rows = [{"prompt": f"Q{i}", "chosen_response": "a", "rejected_response": "b"} for i in range(20)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:15]),
                          "test": datasets.Dataset.from_list(rows[15:])}).save_to_disk(tmp_path / "dd")
    named = open_splits(tmp_path, Reading(training="dd", validation_split="test"))
    assert len(named.training) == 15 and named.validation is not None and len(named.validation) == 5
    assert open_splits(tmp_path, Reading(training="dd")).validation is None  # no 'validation' split: none
    with pytest.raises(FormatError, match=r"dd has the splits \['test', 'train'\], not 'dev'"):
        open_splits(tmp_path, Reading(training="dd", validation_split="dev"))

    write(rows, tmp_path / "r", "jsonl")
    first = open_splits(tmp_path / "r", Reading(training="train.jsonl", validation_ratio=0.25, seed=7))
    again = open_splits(tmp_path / "r", Reading(training="train.jsonl", validation_ratio=0.25, seed=7))
    other = open_splits(tmp_path / "r", Reading(training="train.jsonl", validation_ratio=0.25, seed=8))
    assert first.validation is not None and again.validation is not None and other.validation is not None
    assert len(first.training) == 15 and len(first.validation) == 5
    assert set(first.training.indices) | set(first.validation.indices) == set(range(20))
    assert np.array_equal(first.validation.indices, again.validation.indices)
    assert not np.array_equal(first.validation.indices, other.validation.indices)


def test_an_explicit_validation_file_must_exist(tmp_path: Path) -> None:
    write([{"prompt": "Q", "chosen_response": "a", "rejected_response": "b"}], tmp_path, "jsonl")
    assert open_splits(tmp_path, Reading(training="train.jsonl")).validation is None  # the default is optional
    with pytest.raises(FileNotFoundError, match="dataset.files.validation val.jsonl does not exist"):
        open_splits(tmp_path, Reading(training="train.jsonl", validation="val.jsonl", validation_required=True))


def test_a_hub_revision_is_read_at_that_revision(tmp_path: Path) -> None:
    from tests.fakes.hub import FakeHub

    def parquet(rows: list[dict[str, Any]]) -> bytes:
        write(rows, tmp_path / "w", "parquet")
        return (tmp_path / "w/train.parquet").read_bytes()

    old = [{"prompt": "old", "chosen": "a", "rejected": "b"}]
    new = [{"prompt": "new", "chosen": "a", "rejected": "b"}] * 2
    with FakeHub(prefix="", token="tok") as hub:
        hub.repos["org/prefs"] = {"data/train.parquet": parquet(new)}
        hub.other[("dataset", "org/prefs", "v1")] = {"data/train.parquet": parquet(old)}
        reading = Reading(training="data/train.parquet", validation=None)
        target = download_hub(hub.endpoint, "org/prefs", "v1", "tok", reading, tmp_path / "v1")
        assert triples(open_splits(target, reading).training) == [("old", "a", "b")]
        target = download_hub(hub.endpoint, "org/prefs", "main", "tok", reading, tmp_path / "main")
        assert triples(open_splits(target, reading).training) == [("new", "a", "b")] * 2
        with pytest.raises(FileNotFoundError, match=r"data/missing.parquet is not in dataset repo org/prefs@v1"):
            download_hub(hub.endpoint, "org/prefs", "v1", "tok", Reading(training="data/missing.parquet"),
                         tmp_path / "x")


# -- chat templates ---------------------------------------------------------------------------------------------


def trl_ids(tokenizer: Any, rows: list[dict[str, Any]]) -> list[tuple[list[int], list[int], list[int]]]:
    """TRL 1.16's own DPO preprocessing (DPOTrainer._prepare_dataset: prompt extraction, chat template, EOS)."""
    pytest.importorskip("trl")
    from trl import DPOTrainer

    args = SimpleNamespace(dataset_num_proc=None, max_length=None, truncation_mode="keep_end")
    datasets.disable_progress_bars()
    out = DPOTrainer._prepare_dataset(SimpleNamespace(_tokenizer=tokenizer), datasets.Dataset.from_list(rows),
                                      tokenizer, args, "train")
    return [(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]) for r in out]


def test_conversational_rows_tokenize_as_trl_does(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from dpo_operator.train.templates import row_ids
    from tests.chat_tokenizer import chat_tokenizer

    tokenizer = chat_tokenizer()
    system = [{"role": "system", "content": "Be brief."}]
    rows = [{"prompt": Q, "chosen": A_BLUE, "rejected": A_GREEN},
            {"prompt": system + Q + A_BLUE + [{"role": "user", "content": "Sure?"}],
             "chosen": [{"role": "assistant", "content": "Yes."}], "rejected": [{"role": "assistant", "content": "No"}]},
            {"chosen": Q + A_BLUE, "rejected": Q + A_GREEN}]  # implicit prompt
    write(rows[:2], tmp_path / "explicit", "parquet")
    write(rows[2:], tmp_path / "implicit", "jsonl")
    ours = [row_ids(tokenizer, r) for r in triples_rows(tmp_path / "explicit", "train.parquet")]
    ours += [row_ids(tokenizer, r) for r in triples_rows(tmp_path / "implicit", "train.jsonl")]
    assert ours == trl_ids(tokenizer, rows[:2]) + trl_ids(tokenizer, rows[2:])
    for prompt, chosen, rejected in ours:
        assert prompt.count(tokenizer.bos_token_id) == 1 and prompt[0] == tokenizer.bos_token_id  # no double BOS
        assert tokenizer.convert_ids_to_tokens(prompt[-1:]) == ["<|assistant|>"]  # the generation prompt
        eot = tokenizer.convert_tokens_to_ids("<|eot|>")
        assert chosen[-1] == eot and rejected[-1] == eot and eot not in chosen[:-1]  # the template's end of turn


def triples_rows(directory: Path, name: str) -> list[dict[str, Any]]:
    rows = open_splits(directory, Reading(training=name, validation=None)).training
    return [rows.row(i) for i in range(len(rows))]


def test_text_rows_keep_one_bos_and_end_with_eos() -> None:
    pytest.importorskip("transformers")
    from dpo_operator.train.templates import row_ids
    from tests.chat_tokenizer import chat_tokenizer

    tokenizer = chat_tokenizer()
    prompt, chosen, rejected = row_ids(tokenizer, {"prompt": "hi", "chosen_response": "yes", "rejected_response": "no"})
    assert prompt.count(tokenizer.bos_token_id) == 1
    assert chosen[-1] == rejected[-1] == tokenizer.eos_token_id


def test_the_trainer_trains_on_a_helpsteer3_parquet_with_a_held_out_share(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from dpo_operator.api.training import DatasetSource
    from dpo_operator.train.trainer import train
    from tests.tinymodel import build_tiny_model
    from tests.trainconfig import flat_config

    rows = [{"context": [{"role": "user", "content": f"Q{i}"}], "response1": "good", "response2": "bad!",
             "overall_preference": -1 if i % 4 else 0} for i in range(24)]
    write(rows, tmp_path / "data", "parquet")
    config = flat_config(str(build_tiny_model(tmp_path / "tiny")), str(tmp_path / "data"), str(tmp_path / "out"),
                         finetuning_type="all_weights", epochs=1, batch_size=4)
    config.dataset = DatasetSource.model_validate({"location": {"pvc": {"claimName": "d"}}, "format": "helpsteer3",
                                                   "files": {"training": "train.parquet", "validationRatio": 0.25}})
    summary = train(config)
    assert summary["steps"] == 4  # 24 rows, 6 ties dropped, 18 left: 14 to train on (4 batches of 4), 4 held out
    assert summary["validation"]["val/loss"] > 0
