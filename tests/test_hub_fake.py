"""The Hub fake against huggingface_hub (the real client): LFS for large or binary files, deletions, repo types,
revisions and missing repos answer as the Hub does. And a training file over 10 MB through NeMo Datastore, end to
end: upload (LFS, not Xet: the Datastore has none), copy between repos, a customization job on it."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

from dpo_operator.cli import main
from dpo_operator.nemo import customizer as nemo
from dpo_operator.nemo.http import NemoApi
from tests.fakes.hub import LFS_THRESHOLD, FakeHub
from tests.fakes.nemo import FakeNemo


def stream(content: bytes) -> io.BufferedReader:
    return io.BufferedReader(io.BytesIO(content))  # type: ignore[arg-type]


def test_deletions_repo_types_revisions_and_missing_repos(tmp_path: Path) -> None:
    with FakeHub(prefix="") as hub:
        api = HfApi(endpoint=hub.endpoint, token=False)
        api.create_repo("org/same", repo_type="dataset")
        api.create_repo("org/same")  # a model repo of the same name is another repo
        api.create_commit("org/same", repo_type="dataset", commit_message="add", operations=[
            CommitOperationAdd("data/a.txt", b"a"), CommitOperationAdd("data/b.txt", b"b"),
            CommitOperationAdd("notes.md", b"notes")])
        api.create_commit("org/same", commit_message="model", operations=[CommitOperationAdd("config.json", b"{}")])
        assert sorted(hub.repos["org/same"]) == ["data/a.txt", "data/b.txt", "notes.md"]
        assert hub.files("model", "org/same") == {"config.json": b"{}"}

        api.create_commit("org/same", repo_type="dataset", commit_message="rm", operations=[
            CommitOperationDelete("notes.md"), CommitOperationDelete("data/")])
        assert hub.repos["org/same"] == {}

        with pytest.raises(RevisionNotFoundError):
            api.create_commit("org/same", repo_type="dataset", revision="dev", commit_message="x",
                              operations=[CommitOperationAdd("x.txt", b"x")])
        with pytest.raises(RepositoryNotFoundError):
            api.hf_hub_download("org/absent", "x.txt", repo_type="dataset", cache_dir=tmp_path)
        with pytest.raises(RepositoryNotFoundError):
            api.create_commit("org/absent", repo_type="dataset", commit_message="x",
                              operations=[CommitOperationAdd("x.txt", b"x")])
        path = api.hf_hub_download("org/same", "config.json", cache_dir=tmp_path)  # model repo: no type prefix
        assert Path(path).read_bytes() == b"{}"


def test_binary_files_go_by_lfs_and_must_be_uploaded_before_the_commit(tmp_path: Path) -> None:
    binary = bytes(range(256)) * 8
    with FakeHub(prefix="") as hub:
        api = HfApi(endpoint=hub.endpoint, token=False)
        api.create_repo("org/bin", repo_type="dataset")
        api.create_commit("org/bin", repo_type="dataset", commit_message="bin", operations=[
            CommitOperationAdd("blob.bin", stream(binary)), CommitOperationAdd("notes.txt", stream(b"plain text"))])
        routes = [route for route, _ in hub.calls]
        assert routes.count("lfs-upload") == 1 and "lfs-verify" in routes  # only the binary file went by LFS
        assert hub.repos["org/bin"]["blob.bin"] == binary and hub.repos["org/bin"]["notes.txt"] == b"plain text"
        # a commit naming an LFS object that was never uploaded is refused
        import requests

        line = {"key": "lfsFile", "value": {"path": "x.bin", "algo": "sha256", "oid": "0" * 64, "size": 3}}
        answer = requests.post(f"{hub.endpoint}/api/datasets/org/bin/commit/main",
                               data=json.dumps({"key": "header", "value": {"summary": "x"}}) + "\n" + json.dumps(line),
                               timeout=10)
        assert answer.status_code == 422 and "x.bin" not in hub.repos["org/bin"]


def big_dataset(path: Path) -> bytes:
    row = {"prompt": "Which move wins? " + "x" * 400, "chosen_response": "the centre", "rejected_response": "a corner"}
    line = (json.dumps(row) + "\n").encode()
    training = line * (LFS_THRESHOLD // len(line) + 200)
    (path / "training").mkdir(parents=True)
    (path / "validation").mkdir()
    (path / "training/training_file.jsonl").write_bytes(training)
    (path / "validation/validation_file.jsonl").write_bytes(line * 3)
    return training


def test_a_training_file_over_10_mb_reaches_a_customization_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    training = big_dataset(tmp_path / "ds")
    assert len(training) > LFS_THRESHOLD
    monkeypatch.setenv("HF_TOKEN", "hf-secret")
    monkeypatch.setenv("SOURCE_HF_TOKEN", "hf-secret")
    result = tmp_path / "result.json"
    with FakeNemo(hf_token="hf-secret") as fake:
        assert main(["upload-dataset", "--dataset-dir", str(tmp_path / "ds"), "--datastore-url", fake.url,
                     "--repo", "team/big", "--result-file", str(result)]) == 0, result.read_text()
        assert fake.datastore_namespaces == {"team"}  # created before create_repo
        assert fake.repos["team/big"]["training/training_file.jsonl"] == training
        routes = [route for route, _ in fake.calls]
        assert routes.count("lfs-upload") == 1 and "unknown" not in routes, fake.calls  # LFS; no Xet attempted
        # read back through the Hub API (LFS file download) into a second repo
        assert main(["upload-dataset", "--source-endpoint", fake.endpoint, "--source-repo", "team/big",
                     "--datastore-url", fake.url, "--repo", "team/copy", "--result-file", str(result)]) == 0
        assert fake.repos["team/copy"]["training/training_file.jsonl"] == training
        assert json.loads(result.read_text())["pairs"]["training"] == training.count(b"\n")
        with NemoApi(fake.url) as api:
            nemo.ensure_entity_namespace(api, "team")
            nemo.register_dataset(api, "team", "copy", "hf://datasets/team/copy", "big")
            fake.add_config("cfg", options=(("sft", "lora"),))  # the fake refuses a job on an unknown config
            job = nemo.create_job(api, nemo.job_body("cfg", "team", "copy", {"finetuning_type": "lora"},
                                                     "team/model", "u", "big"))
        assert job["status"] == "created"


def test_a_collection_writing_straight_to_the_datastore_creates_its_namespace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dpo_operator.api.collection import DPOCollectionSpec
    from dpo_operator.collect.runner import run_collection
    from dpo_operator.embedded.policy_server import PolicyServer

    monkeypatch.setenv("HF_TOKEN", "hf-secret")
    with PolicyServer(seed=4) as policy, FakeNemo(hf_token="hf-secret") as fake:
        spec = DPOCollectionSpec.model_validate({
            "workflow": {"numExamples": 4}, "llm": {"baseUrl": policy.url, "model": policy.model},
            "output": {"hub": {"endpoint": fake.endpoint, "repoId": "collected/tictactoe",
                               "tokenSecretRef": {"name": "t", "key": "k"}}}})
        run_collection(spec, data_root=tmp_path)
        assert fake.datastore_namespaces == {"collected"}
        assert "training/training_file.jsonl" in fake.repos["collected/tictactoe"]
        routes = [route for route, _ in fake.calls]
        assert routes.index("datastore-namespace") < routes.index("create")
