"""Collection output to a Hugging Face Hub-compatible dataset repo (NeMo Datastore), over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpo_operator.api.collection import DPOCollectionSpec
from dpo_operator.collect.runner import run_collection
from dpo_operator.embedded.policy_server import PolicyServer
from tests.fakes.hub import FakeHub


def hub_spec(policy_url: str, endpoint: str, **extra: object) -> DPOCollectionSpec:
    return DPOCollectionSpec.model_validate({
        "workflow": {"numExamples": 6}, "llm": {"baseUrl": policy_url, "model": "toy/tictactoe-policy"},
        "output": {"hub": {"endpoint": endpoint, "repoId": "dpo/tictactoe", "tokenSecretRef": {"name": "t", "key": "k"}}},
        **extra})


def test_dataset_lands_in_one_commit_with_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf-secret")
    with PolicyServer(seed=4) as policy, FakeHub(token="hf-secret") as hub:
        result = run_collection(hub_spec(policy.url, hub.endpoint), data_root=tmp_path)
        assert ("unknown", "") not in hub.calls, hub.calls
        files = hub.repos["dpo/tictactoe"]
        # the collector's data check writes its card and histogram next to the data (issue 27)
        assert sorted(files) == ["data-check/datacard.json", "data-check/lengths.png", "metrics.json",
                                 "training/training_file.jsonl", "validation/validation_file.jsonl"]
        assert len(hub.commits["dpo/tictactoe"]) == 1
        rows = [json.loads(line) for line in files["training/training_file.jsonl"].decode().splitlines()]
        assert len(rows) == result.pairs["training"]
        assert result.datasetLocation == f"{hub.endpoint}/datasets/dpo/tictactoe@main"
        # a second collection into the same repo: the repo exists (409 with url) and a new commit replaces files
        run_collection(hub_spec(policy.url, hub.endpoint, seed=9), data_root=tmp_path)
        assert len(hub.commits["dpo/tictactoe"]) == 2


def test_no_token_means_no_authorization_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with PolicyServer(seed=4) as policy, FakeHub(token="required") as hub:
        with pytest.raises(Exception, match="401|Invalid credentials|Unauthorized"):
            run_collection(hub_spec(policy.url, hub.endpoint), data_root=tmp_path)
        assert hub.repos == {}
