"""The NeMo client and the dataset upload command against the NeMo API emulator, over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpo_operator.cli import main
from dpo_operator.nemo import customizer as nemo
from dpo_operator.nemo.http import NemoApi, NemoError
from tests.fakes.nemo import FakeNemo
from tests.test_trainer import toy_dataset


def test_existing_namespaces_and_datasets_are_fine() -> None:
    with FakeNemo() as fake, NemoApi(fake.url) as api:
        for _ in range(2):
            nemo.ensure_entity_namespace(api, "dpo")
            nemo.ensure_datastore_namespace(api, "dpo")
            nemo.register_dataset(api, "dpo", "pairs", "hf://datasets/dpo/pairs", "d")
        assert fake.entity_namespaces == {"dpo"} and fake.datastore_namespaces == {"dpo"}
        assert [route for route, _ in fake.calls].count("dataset") == 2


def test_errors_say_whether_a_retry_can_help_and_carry_the_service_message() -> None:
    with FakeNemo(api_key="k") as fake:
        with NemoApi(fake.url, "k") as api:
            fake.fail["entity-namespace"] = [503, 422]
            with pytest.raises(NemoError) as transient:
                nemo.ensure_entity_namespace(api, "dpo")
            assert transient.value.transient and transient.value.status == 503
            with pytest.raises(NemoError) as permanent:
                nemo.ensure_entity_namespace(api, "dpo")
            assert not permanent.value.transient and "injected failure" in str(permanent.value)
        with NemoApi(fake.url, None) as anonymous, pytest.raises(NemoError, match="Not authenticated"):
            nemo.ensure_entity_namespace(anonymous, "dpo")
    with NemoApi(fake.url) as gone, pytest.raises(NemoError) as network:
        nemo.ensure_entity_namespace(gone, "dpo")  # the server is stopped
    assert network.value.transient and network.value.status == 0


def test_status_with_null_and_missing_fields() -> None:
    status = nemo.RemoteStatus.parse({"status": "running", "percentage_done": None, "epochs_completed": None,
                                      "train_loss": 0.5, "val_loss": "nan?"})
    assert status.phase == "Running" and status.progress == {"trainLoss": 0.5}
    assert nemo.RemoteStatus.parse({}).phase == "Running"  # unknown: still running, as the SDK treats it
    failed = nemo.RemoteStatus.parse({"status": "failed", "status_logs": [{"detail": "first"}, {"message": "OOM"}, {}]})
    assert failed.phase == "Failed" and failed.message == "Customizer job failed: OOM"
    assert {nemo.RemoteStatus.parse({"status": s}).phase for s in ("cancelled", "canceled")} == {"Cancelled"}
    assert nemo.RemoteStatus.parse({"status": "created"}).phase == "Pending"
    assert nemo.RemoteStatus.parse({"status": "completed"}).phase == "Succeeded"


def test_find_job_follows_pagination(tmp_path: Path) -> None:
    with FakeNemo() as fake, NemoApi(fake.url) as api:
        fake.repos["dpo/pairs"] = {"training/training_file.jsonl": b"{}\n"}
        nemo.ensure_entity_namespace(api, "dpo")
        nemo.register_dataset(api, "dpo", "pairs", "hf://datasets/dpo/pairs", "d")
        for i in range(nemo.PAGE_SIZE + 3):
            nemo.create_job(api, nemo.job_body("cfg", "dpo", "pairs", {}, None, f"uid-{i}", "x"))
        last = nemo.find_job(api, f"uid-{nemo.PAGE_SIZE + 2}")
        assert last is not None and last["id"] == f"cust-{nemo.PAGE_SIZE + 3:06d}"
        assert nemo.find_job(api, "uid-absent") is None
        assert nemo.cancel_job(api, last["id"]) is True
        assert nemo.cancel_job(api, last["id"]) is False  # already cancelled: 409
        assert nemo.cancel_job(api, "cust-missing") is False


def test_job_for_an_unuploaded_dataset_is_refused() -> None:
    with FakeNemo() as fake, NemoApi(fake.url) as api:
        nemo.ensure_entity_namespace(api, "dpo")
        nemo.register_dataset(api, "dpo", "pairs", "hf://datasets/dpo/pairs", "d")
        with pytest.raises(NemoError, match="has no training/training_file.jsonl"):
            nemo.create_job(api, nemo.job_body("cfg", "dpo", "pairs", {}, None, "u", "x"))


def test_upload_command_copies_a_dataset_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toy_dataset(tmp_path / "ds")
    monkeypatch.setenv("HF_TOKEN", "hf-secret")
    result_file = tmp_path / "result.json"
    with FakeNemo(hf_token="hf-secret") as fake:
        code = main(["upload-dataset", "--dataset-dir", str(tmp_path / "ds"), "--datastore-url", fake.url,
                     "--repo", "dpo/pairs", "--result-file", str(result_file)])
        assert code == 0
        files = fake.repos["dpo/pairs"]
        assert files["training/training_file.jsonl"] == (tmp_path / "ds/training/training_file.jsonl").read_bytes()
        result = json.loads(result_file.read_text())
        assert result["filesUrl"] == "hf://datasets/dpo/pairs" and result["pairs"]["training"] > 0
        # a hub repo as the source: copied from one repo to another, reading with the source's own token
        monkeypatch.setenv("SOURCE_HF_TOKEN", "hf-secret")
        code = main(["upload-dataset", "--source-endpoint", fake.endpoint, "--source-repo", "dpo/pairs",
                     "--datastore-url", fake.url, "--repo", "dpo/copy", "--result-file", str(result_file)])
        assert code == 0 and fake.repos["dpo/copy"]["validation/validation_file.jsonl"] == \
            files["validation/validation_file.jsonl"]


def test_upload_of_a_missing_dataset_reports_the_error(tmp_path: Path) -> None:
    result_file = tmp_path / "result.json"
    with FakeNemo() as fake:
        assert main(["upload-dataset", "--dataset-dir", str(tmp_path / "nothing"), "--datastore-url", fake.url,
                     "--repo", "dpo/pairs", "--result-file", str(result_file)]) == 3  # deterministic: no retry helps
        assert fake.repos == {}
    assert "lacks training/training_file.jsonl" in json.loads(result_file.read_text())["error"]
