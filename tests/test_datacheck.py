"""The data check on datasets with known defects: each figure counted exactly, thresholds turning a degenerate
dataset into failures that name the rows and the field, warnings below them, the NAT-example pathology (the chosen
answer already at the end of the prompt) caught, token lengths with the model's tokenizer, the card and histogram."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("datasets")

from dpo_operator.api.training import DataCheckSettings  # noqa: E402
from dpo_operator.datacheck.run import check  # noqa: E402
from dpo_operator.train.sources import Reading  # noqa: E402


def jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def pair(i: int, chosen: str = "good answer", rejected: str = "bad answer", prompt: str | None = None) -> dict[str, str]:
    return {"prompt": prompt if prompt is not None else f"question {i}?", "chosen_response": chosen,
            "rejected_response": rejected}


def run(tmp_path: Path, rows: list[Any], model: str | None = None, max_seq_length: int = 1024,
        **settings: Any) -> tuple[Any, dict[str, Any]]:
    jsonl(tmp_path / "data/training/training_file.jsonl", rows)
    result, _ = check(tmp_path / "data", Reading(), DataCheckSettings(**settings), max_seq_length, model,
                      tmp_path / "card", {"location": "test"})
    return result, json.loads((tmp_path / "card/datacard.json").read_text())


def test_the_nat_example_pathology_is_refused_naming_rows_and_field(tmp_path: Path) -> None:
    """As in NVIDIA's NAT tic-tac-toe example: 94 of 191 prompts end with the candidate's reply (the chosen one)."""
    rows = []
    for i in range(191):
        move = f"{i % 9 + 1}"
        board = f"Board {i}: X . O / . X . / O . .\nYour move:"
        rows.append(pair(i, chosen=move, rejected=str((i + 4) % 9 + 1),
                         prompt=f"{board} {move}" if i < 94 else board))
    result, body = run(tmp_path, rows)
    assert not result.passed
    assert body["training"]["promptEndsWithChosen"] == 94 and body["training"]["pairs"] == 191
    failure = next(f for f in result.failures if "already ends with the chosen response" in f)
    assert failure.startswith("94 of 191 pairs (49.2%)")
    assert "training/training_file.jsonl:1" in failure and "maxPromptEndsWithChosenShare (5.0%)" in failure


def test_each_defect_is_counted_and_judged(tmp_path: Path) -> None:
    rows = [pair(i) for i in range(80)]
    rows += [pair(100, chosen="same", rejected="same")] + [pair(101, chosen="same ", rejected="same")]  # identical x2
    rows += [pair(200, chosen="")]  # empty
    rows += [pair(0)] * 3  # exact duplicates of row 1
    rows += [pair(1, chosen="Good   answer!")]  # near duplicate of row 2
    result, body = run(tmp_path, rows)
    figures = body["training"]
    assert (figures["pairs"], figures["identical"], figures["empty"], figures["duplicates"],
            figures["nearDuplicates"]) == (87, 2, 1, 3, 4)
    assert not result.passed
    assert any(f.startswith("2 of 87 pairs (2.3%) have chosen == rejected") and "maxIdenticalShare (1.0%)" in f
               for f in result.failures)
    assert any(f.startswith("1 of 87 pairs (1.1%) have an empty prompt") for f in result.failures)
    assert any(w.startswith("3 of 87 pairs (3.4%) repeat an earlier pair exactly") for w in result.warnings)
    assert any(w.startswith("1 of 87 pairs (1.1%) nearly repeat") for w in result.warnings)
    loose, _ = run(tmp_path, rows, max_identical_share=0.05, max_empty_share=0.05)
    assert loose.passed and len(loose.warnings) >= 4


def test_a_malformed_row_fails_the_check_by_line_number(tmp_path: Path) -> None:
    rows = [pair(i) for i in range(5)] + ["{not json"] + [pair(i) for i in range(5, 9)]
    result, body = run(tmp_path, rows)
    assert not result.passed and result.rows_rejected == 1
    assert result.failures[0].startswith("1 training rows cannot be read") and \
        "training/training_file.jsonl:6: not a JSON object" in result.failures[0]
    assert body["training"]["rowsRead"] == 10 and body["training"]["pairs"] == 9


def test_an_unreadable_dataset_is_a_failed_check_naming_the_columns(tmp_path: Path) -> None:
    result, _ = check(jsonl(tmp_path / "d/training/training_file.jsonl", [{"q": 1, "a": 2}]).parents[1], Reading(),
                      DataCheckSettings(), 1024, None, None, {})
    assert not result.passed and "no known preference format fits the columns found (a, q)" in result.failures[0]


def test_token_lengths_with_the_models_tokenizer_and_the_share_cut(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tests.chat_tokenizer import chat_tokenizer

    chat_tokenizer(tmp_path / "tok")
    rows = [pair(i, chosen="x" * (10 if i % 2 else 40), rejected="y" * 10, prompt="p" * 18 + f"{i:02d}") for i in range(10)]
    result, body = run(tmp_path, rows, model=str(tmp_path / "tok"), max_seq_length=64)
    figures = body["training"]
    assert figures["lengthUnit"] == "tokens"
    # prompt: <s><|user|> + 20 + <|eot|><|assistant|> = 24 tokens; responses: characters + EOS
    assert figures["lengthPercentiles"]["prompt"] == {"p50": 24, "p90": 24, "p99": 24, "max": 24}
    assert figures["lengthPercentiles"]["chosen"]["max"] == 41 and figures["lengthPercentiles"]["rejected"]["max"] == 11
    assert figures["truncated"] == 5 and figures["truncatedShare"] == 0.5  # 24 + 41 > 64 (and 41 > 32)
    assert figures["chosenToRejectedLengthRatio"] == pytest.approx(26 / 11, abs=1e-3)
    assert any("chosen responses are on average 2.36x longer than rejected ones (tokens)" in w
               for w in result.warnings)
    assert result.passed  # 50% truncated is the default limit; the length bias only warns by default
    strict, _ = run(tmp_path, rows, model=str(tmp_path / "tok"), max_seq_length=64, max_truncated_share=0.2,
                    max_length_bias=2.0)
    assert any("maxTruncatedShare (20.0%)" in f for f in strict.failures)
    assert any("maxLengthBias (2.0)" in f for f in strict.failures)


def test_without_a_tokenizer_lengths_are_words_and_it_says_so(tmp_path: Path) -> None:
    result, body = run(tmp_path, [pair(i) for i in range(4)], model=str(tmp_path / "no-such-model"))
    assert body["training"]["lengthUnit"] == "words"
    assert any("could not be loaded" in w and "lengths in words" in w for w in result.warnings)


def test_ties_dropped_are_reported_and_the_card_and_histogram_are_written(tmp_path: Path) -> None:
    rows = [{"context": [{"role": "user", "content": f"q{i}"}], "response1": "a b", "response2": "c d",
             "overall_preference": 0 if i < 3 else 2} for i in range(10)]
    result, body = run(tmp_path, rows)
    assert result.passed and result.ties_dropped == 3 and result.pairs == {"training": 7}
    assert result.format == "helpsteer3" and body["source"]["format"] == "helpsteer3"
    assert "3 training rows are ties (no preference) and were dropped" in result.warnings
    assert (tmp_path / "card/lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.data_card == str(tmp_path / "card/datacard.json")


def test_the_check_pod_never_asks_for_a_gpu() -> None:
    from dpo_operator.api.common import StorageLocation
    from dpo_operator.api.training import DPOTrainingJobSpec
    from dpo_operator.config import OperatorConfig
    from dpo_operator.render.training import check_job_manifest, job_manifest

    spec = DPOTrainingJobSpec.model_validate({
        "dataset": {"location": {"pvc": {"claimName": "data", "path": "/ds"}}}, "model": {"name": "m"},
        "local": {"gpusPerNode": 4, "output": {"claimName": "out"}},
        "template": {"resources": {"limits": {"nvidia.com/gpu": 4, "memory": "32Gi"},
                                   "requests": {"nvidia.com/gpu": 4, "cpu": "4"}}}})
    body = {"metadata": {"name": "t", "namespace": "ns", "uid": "u"}}
    location = StorageLocation.model_validate({"pvc": {"claimName": "data", "path": "/ds"}})
    config = OperatorConfig()
    check = check_job_manifest(body, spec, location, config)["spec"]["template"]["spec"]["containers"][0]
    train = job_manifest(body, spec, location, config)["spec"]["template"]["spec"]["containers"][0]
    assert check["resources"] == {"limits": {"memory": "32Gi"}, "requests": {"cpu": "4"}}
    assert str(train["resources"]["limits"]["nvidia.com/gpu"]) == "4"  # the training pod keeps them
    assert check["command"][:2] == ["dpo-operator", "check-data"] and "--card-dir=/mnt/pvc/out/t/data-check" in \
        check["command"]


def test_conversational_rows_without_a_chat_template_are_refused_by_row(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tests.chat_tokenizer import chat_tokenizer

    tokenizer = chat_tokenizer()
    tokenizer.chat_template = None
    tokenizer.save_pretrained(tmp_path / "tok")
    rows = [{"prompt": [{"role": "user", "content": f"q{i}"}], "chosen": [{"role": "assistant", "content": "a"}],
             "rejected": [{"role": "assistant", "content": "b"}]} for i in range(3)]
    result, _ = run(tmp_path, rows, model=str(tmp_path / "tok"))
    assert not result.passed and result.rows_rejected == 3
    assert "training/training_file.jsonl:1: cannot tokenise the row: ValueError: conversational responses " \
           "(message lists) need a tokenizer with a chat template" in result.failures[0]


def test_the_result_carries_the_training_files_sha256(tmp_path: Path) -> None:
    """The digest a DPOLoop records as the round's dataset lineage: the bytes of the file the trainer reads."""
    import hashlib

    result, _ = run(tmp_path, [pair(i) for i in range(5)])
    data = (tmp_path / "data/training/training_file.jsonl").read_bytes()
    assert result.training_sha256 == hashlib.sha256(data).hexdigest()
    jsonl(tmp_path / "data/training/training_file.jsonl", [pair(i) for i in range(6)])
    again, _ = check(tmp_path / "data", Reading(), DataCheckSettings(), 1024, None, None, {"location": "test"})
    assert again.training_sha256 != result.training_sha256
