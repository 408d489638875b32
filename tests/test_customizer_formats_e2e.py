"""The customizer backend with datasets people already have: the upload pod reads a HelpSteer3 Parquet file (written
by ``datasets``), checks it, and uploads the JSONL the Customizer reads, with the data card beside it; a degenerate
dataset is refused (DataCheckFailed) before anything is uploaded or any Customizer job exists."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dpo_operator.embedded.executor import LocalExecutor
from tests.fakes.nemo import FakeNemo
from tests.kubehelpers import Kube, conditions_of
from tests.test_customizer_e2e import executor, nemo, spec_for  # noqa: F401  (fixtures)

pytestmark = pytest.mark.e2e
datasets = pytest.importorskip("datasets")


def helpsteer3(count: int, ties: int) -> list[dict[str, Any]]:
    return [{"context": [{"role": "user", "content": f"question {i}?"}], "response1": f"answer {i} is good",
             "response2": f"answer {i} is bad", "overall_preference": 0 if i < ties else -2} for i in range(count)]


def test_a_helpsteer3_parquet_is_checked_converted_and_uploaded(kube: Kube, namespace: str, operator: None,
                                                                  nemo: FakeNemo, executor: LocalExecutor) -> None:
    datasets.Dataset.from_list(helpsteer3(20, 4)).to_parquet(executor.pvc_dir("dpo-data") / "hs3.parquet")
    spec = spec_for(nemo)
    spec["dataset"] = {"location": {"pvc": {"claimName": "dpo-data", "path": "/"}}, "format": "helpsteer3",
                       "files": {"training": "hs3.parquet", "validationRatio": 0.25}}
    kube.create("DPOTrainingJob", namespace, "hs", spec)
    done = kube.wait_phase("DPOTrainingJob", namespace, "hs", "Succeeded", timeout=60)
    repo = nemo.repos[f"team-a/{namespace}-hs"]
    training = [json.loads(line) for line in repo["training/training_file.jsonl"].splitlines()]
    validation = [json.loads(line) for line in repo["validation/validation_file.jsonl"].splitlines()]
    assert (len(training), len(validation)) == (12, 4)  # 20 rows, 4 ties dropped, a quarter held out
    assert all(set(row) == {"prompt", "chosen_response", "rejected_response"} for row in training + validation)
    assert all(row["chosen_response"].endswith("is good") and row["rejected_response"].endswith("is bad")
               for row in training)
    assert training[0]["prompt"][0]["role"] == "user"
    card = json.loads(repo["data-check/datacard.json"])
    assert card["source"]["format"] == "helpsteer3" and card["training"]["tiesDropped"] == 4
    assert repo["data-check/lengths.png"][:4] == b"\x89PNG"
    status = done["status"]
    assert status["dataCheck"]["tiesDropped"] == 4 and status["dataCheck"]["pairs"] == 12
    assert conditions_of(done)["DataChecked"]["reason"] == "DataCheckWarnings"


def test_a_degenerate_dataset_uploads_nothing(kube: Kube, namespace: str, operator: None, nemo: FakeNemo,
                                              executor: LocalExecutor) -> None:
    rows = [{"prompt": f"q{i}", "chosen": "same", "rejected": "same"} for i in range(10)]
    path = executor.pvc_dir("dpo-data") / "same/train.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = spec_for(nemo)
    spec["dataset"] = {"location": {"pvc": {"claimName": "dpo-data", "path": "/same"}},
                       "files": {"training": "train.jsonl"}}
    kube.create("DPOTrainingJob", namespace, "same", spec)
    failed = kube.wait_phase("DPOTrainingJob", namespace, "same", "Failed", timeout=60)
    assert failed["status"]["failureReason"] == "DataCheckFailed"
    assert "10 of 10 pairs (100.0%) have chosen == rejected" in failed["status"]["message"]
    assert f"team-a/{namespace}-same" not in nemo.repos and nemo.jobs == {}
