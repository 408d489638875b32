"""The data check before training, against the (emulated) API server with the real operator: a degenerate dataset
(the NAT-example pathology) is refused with DataCheckFailed by a real check pod before any training Job (and so
any GPU) exists; a dataset with warnings trains, the warnings in a condition and a Warning event."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_events_e2e import events
from tests.kubehelpers import Kube, conditions_of, wait_for
from tests.test_training_e2e import TRAIN_RESULT, TRAINING

pytestmark = pytest.mark.e2e


def nat_like_rows(count: int, leaked: int) -> list[dict[str, str]]:
    """Tic-tac-toe rows where the first ``leaked`` prompts already end with the chosen move (as NAT records it)."""
    rows = []
    for i in range(count):
        move, board = str(i % 9 + 1), f"Board {i}: X . O / . X . / O . .\nYour move:"
        rows.append({"prompt": f"{board} {move}" if i < leaked else board, "chosen_response": move,
                     "rejected_response": str((i + 4) % 9 + 1)})
    return rows


@pytest.mark.workload
def test_a_degenerate_dataset_is_refused_before_any_gpu_pod(kube: Kube, namespace: str, operator: None,
                                                             tmp_path: Path) -> None:
    kube.require_emulated()  # runs the check pod through the local executor
    pytest.importorskip("transformers")
    from dpo_operator.embedded.executor import LocalExecutor
    from tests.tinymodel import build_tiny_model

    kube.claims(namespace, "models", "dpo-data")
    executor = LocalExecutor(kube.api, tmp_path, namespace)
    build_tiny_model(executor.pvc_dir("models") / "tiny")
    data = executor.pvc_dir("dpo-data") / "nat/training/training_file.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text("".join(json.dumps(r) + "\n" for r in nat_like_rows(191, 94)))
    spec = {**TRAINING, "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/nat"}}},
            "local": {"gpusPerNode": 1, "output": {"claimName": "dpo-data", "path": "/models"}}}
    spec.pop("deployOnCompletion")
    with executor:
        kube.create("DPOTrainingJob", namespace, "nat", spec)
        failed = kube.wait_phase("DPOTrainingJob", namespace, "nat", "Failed", timeout=120)
    status = failed["status"]
    assert status["failureReason"] == "DataCheckFailed"
    assert "94 of 191 pairs (49.2%) have a prompt that already ends with the chosen response" in status["message"]
    assert "maxPromptEndsWithChosenShare" in status["message"]
    assert conditions_of(failed)["DataChecked"]["status"] == "False"
    assert status["dataCheck"]["passed"] is False and status["dataCheck"]["pairs"] == 191
    assert kube.job(namespace, "nat-train") is None  # no training Job: no GPU was ever requested
    check = kube.job(namespace, "nat-datacheck")
    resources = check["spec"]["template"]["spec"]["containers"][0].get("resources") or {}
    assert "nvidia.com/gpu" not in json.dumps(resources)  # the check pod is CPU-only
    card = json.loads((executor.pvc_dir("dpo-data") / "models/nat/data-check/datacard.json").read_text())
    assert card["training"]["promptEndsWithChosen"] == 94 and card["training"]["lengthUnit"] == "tokens"
    assert (executor.pvc_dir("dpo-data") / "models/nat/data-check/lengths.png").stat().st_size > 1000
    assert status["dataCheck"]["dataCard"] == "pvc://dpo-data/models/nat/data-check"


def test_warnings_become_a_condition_and_an_event_and_training_goes_on(kube: Kube, namespace: str,
                                                                        operator: None) -> None:
    spec = {**TRAINING, "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/ds"}}}}
    kube.create("DPOTrainingJob", namespace, "warned", spec)
    checking = kube.wait_status("DPOTrainingJob", namespace, "warned",
                                lambda s: s.get("reason") == "CheckingData", what="reason CheckingData")
    assert kube.job(namespace, "warned-train") is None and "CPU only" in checking["status"]["message"]
    wait_for(lambda: kube.job(namespace, "warned-datacheck"), what="data check job")
    result = {"passed": True, "pairs": {"training": 40, "validation": 4}, "format": "trl", "tiesDropped": 2,
              "warnings": ["2 training rows are ties (no preference) and were dropped"], "dataCard": "/x"}
    kube.finish_job(namespace, "warned-datacheck", succeeded=True, message=json.dumps(result))
    wait_for(lambda: kube.job(namespace, "warned-train"), what="training job")
    kube.finish_job(namespace, "warned-train", succeeded=True, message=json.dumps(TRAIN_RESULT))
    done = kube.wait_phase("DPOTrainingJob", namespace, "warned", "Succeeded")
    condition = conditions_of(done)["DataChecked"]
    assert (condition["status"], condition["reason"]) == ("True", "DataCheckWarnings")
    assert "ties (no preference) and were dropped" in condition["message"]
    assert done["status"]["dataCheck"] == {"passed": True, "format": "trl", "pairs": 40, "validationPairs": 4,
                                           "rowsRejected": 0, "tiesDropped": 2, "warnings": 1,
                                           "dataCard": "pvc://dpo-data/models/warned/data-check"}
    warned = [e for e in events(kube, namespace, "warned") if e.get("reason") == "DataCheckWarnings"]
    assert len(warned) == 1 and warned[0]["type"] == "Warning" and "ties" in warned[0]["note"]


@pytest.mark.workload
def test_a_trl_parquet_at_a_hub_revision_is_checked_and_trained_on(kube: Kube, namespace: str, operator: None,
                                                                   tmp_path: Path) -> None:
    """TRL conversational rows (implicit prompt) as Parquet in a Hub repo, at a tag: the check pod and the trainer
    download the same files at that revision (the token from its Secret)."""
    kube.require_emulated()
    pytest.importorskip("transformers")
    datasets = pytest.importorskip("datasets")
    from dpo_operator.embedded.executor import LocalExecutor
    from tests.chat_tokenizer import CHAT_TEMPLATE
    from tests.fakes.hub import FakeHub
    from tests.tinymodel import build_tiny_model

    kube.claims(namespace, "models", "dpo-data")
    executor = LocalExecutor(kube.api, tmp_path, namespace)
    # conversational rows need a chat template (without one the check refuses every row, naming it)
    build_tiny_model(executor.pvc_dir("models") / "tiny", chat_template=CHAT_TEMPLATE)
    rows = [{"chosen": [{"role": "user", "content": f"Q{i}: fine?"}, {"role": "assistant", "content": "yes"}],
             "rejected": [{"role": "user", "content": f"Q{i}: fine?"}, {"role": "assistant", "content": "no!"}]}
            for i in range(20)]
    datasets.Dataset.from_list(rows).to_parquet(tmp_path / "train.parquet")
    kube.usable_secret(namespace, "hub", {"token": "hf-1"})
    with FakeHub(token="hf-1") as hub:
        kube.allow_urls(namespace, "hub", hub.endpoint)
        hub.repos["org/prefs"] = {"data/train.parquet": b"not this revision"}
        hub.other[("dataset", "org/prefs", "v1")] = {"data/train.parquet": (tmp_path / "train.parquet").read_bytes()}
        spec = {**TRAINING, "dataset": {
                    "location": {"hub": {"endpoint": hub.endpoint, "repoId": "org/prefs", "revision": "v1",
                                         "tokenSecretRef": {"name": "hub", "key": "token"}}},
                    "format": "trl", "files": {"training": "data/train.parquet", "validationRatio": 0.2}},
                "local": {"gpusPerNode": 0, "precision": "fp32", "output": {"claimName": "dpo-data", "path": "/m"}}}
        spec.pop("deployOnCompletion")
        with executor:
            kube.create("DPOTrainingJob", namespace, "trl", spec)
            done = kube.wait_phase("DPOTrainingJob", namespace, "trl", "Succeeded", timeout=100)
    assert done["status"]["dataCheck"]["format"] == "trl"
    assert (done["status"]["dataCheck"]["pairs"], done["status"]["dataCheck"]["validationPairs"]) == (16, 4)
    assert done["status"]["progress"]["stepsCompleted"] == 4  # 16 training pairs, batches of 4, one epoch
    card = json.loads((executor.pvc_dir("dpo-data") / "m/trl/data-check/datacard.json").read_text())
    assert card["training"]["lengthUnit"] == "tokens" and card["source"]["format"] == "trl"


def test_a_collection_reports_its_outputs_data_check(kube: Kube, namespace: str, operator: None) -> None:
    from tests.test_collection_e2e import RESULT, SPEC

    kube.create("DPOCollection", namespace, "ttt", SPEC)
    wait_for(lambda: kube.job(namespace, "ttt-collect"), what="collection job")
    checked = {"passed": False, "pairs": {"training": 8, "validation": 2},
               "failures": ["8 of 8 pairs (100.0%) have chosen == rejected: more than dataset.check.maxIdenticalShare"]}
    kube.finish_job(namespace, "ttt-collect", succeeded=True, message=json.dumps({**RESULT, "dataCheck": checked}))
    done = kube.wait_phase("DPOCollection", namespace, "ttt", "Succeeded")  # each training job applies its own
    condition = conditions_of(done)["DataChecked"]
    assert (condition["status"], condition["reason"]) == ("False", "DataCheckFailed")
    assert "have chosen == rejected" in condition["message"]
    warned = wait_for(lambda: [e for e in events(kube, namespace, "ttt") if e.get("reason") == "DataCheckFailed"],
                      what="DataCheckFailed event")
    assert warned[0]["type"] == "Warning"


def test_the_collector_writes_the_card_next_to_its_data() -> None:
    from dpo_operator.collect.dataset import DatasetFiles, jsonl
    from dpo_operator.datacheck.collection import check_collection

    rows = [{"prompt": f"board {i}", "chosen_response": str((i + 3) % 9), "rejected_response": str((i + 4) % 9)}
            for i in range(12)]
    files = DatasetFiles(jsonl(rows[:10]), jsonl(rows[10:]), b"{}")
    result = check_collection(files, [6, 6, 0], [f"ex{i // 4}/turn-{i % 2}" for i in range(12)], "pvc://d/ds")
    assert result.passed and result.data_card == "pvc://d/ds/data-check/datacard.json"
    names = [name for name, _ in files.items()]
    assert names == ["training/training_file.jsonl", "validation/validation_file.jsonl", "data-check/datacard.json",
                     "data-check/lengths.png", "metrics.json"]  # metrics.json last: it marks a complete dataset
    card = json.loads(dict(files.items())["data-check/datacard.json"])
    assert card["collection"]["pairsPerRun"] == {"count": 3, "min": 0.0, "median": 6.0, "max": 6.0, "zero": 1}
    assert card["collection"]["pairsPerTurn"]["count"] == 6 and card["collection"]["pairsPerTurn"]["max"] == 2.0
    assert card["training"]["pairs"] == 10 and card["validation"]["pairs"] == 2
