"""A collection sharded over N pods (``parallelism``) and merged gives the dataset one pod gives for the same seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dpo_operator.api.collection import DPOCollectionSpec
from dpo_operator.collect.runner import CollectionError, run_collection
from dpo_operator.collect.shard import merge_shards, run_shard, shards_dir
from dpo_operator.embedded.policy_server import PolicyServer

DATASET_FILES = ("training/training_file.jsonl", "validation/validation_file.jsonl")


def spec_for(url: str, model: str, **extra: object) -> DPOCollectionSpec:
    return DPOCollectionSpec.model_validate({
        "workflow": {"name": "tictactoe", "numExamples": 11}, "llm": {"baseUrl": url, "model": model},
        "candidatesPerTurn": 4, "numRuns": 2, "seed": 7, "maxPairs": 40, "validationFraction": 0.25,
        "output": {"pvc": {"claimName": "data", "path": "/ds"}}, **extra})


def test_three_shards_merged_equal_one_pod(tmp_path: Path) -> None:
    with PolicyServer(skill=0.3, noise=0.3, seed=5) as server:
        single = run_collection(spec_for(server.url, server.model), data_root=tmp_path / "one")
        sharded = spec_for(server.url, server.model, parallelism=3)
        shards = [run_shard(sharded, data_root=tmp_path / "three", index=i) for i in (2, 0, 1)]  # any order
        merged = merge_shards(sharded, data_root=tmp_path / "three")
    assert sum(s["candidates"] for s in shards) == single.candidates > 0
    assert all(s["candidates"] > 0 for s in shards)  # 11 examples over 3 shards: every shard played some
    for name in DATASET_FILES:
        one, three = (tmp_path / "one/ds" / name).read_text(), (tmp_path / "three/ds" / name).read_text()
        assert one == three and one
    assert (merged.pairs, merged.candidates, merged.pairsPerRun, merged.meanScoreDiff) == (
        single.pairs, single.candidates, single.pairsPerRun, single.meanScoreDiff)
    assert sorted(p.name for p in shards_dir(sharded, tmp_path / "three").iterdir()) == ["0.json", "1.json", "2.json"]
    assert not (tmp_path / "three/ds/.shards").exists()  # the dataset directory holds the dataset only


def test_a_missing_shard_fails_the_merge_with_its_index(tmp_path: Path) -> None:
    with PolicyServer(seed=1) as server:
        sharded = spec_for(server.url, server.model, parallelism=2)
        run_shard(sharded, data_root=tmp_path, index=0)
    with pytest.raises(CollectionError, match=r"shard 1 of 2 left no candidates"):
        merge_shards(sharded, data_root=tmp_path)


def test_the_cli_shard_reads_its_index_from_the_indexed_job(tmp_path: Path) -> None:
    with PolicyServer(seed=1) as server:
        sharded = spec_for(server.url, server.model, parallelism=2)
        env = {**os.environ, "DPO_SPEC": json.dumps(sharded.to_api()), "DPO_DATA_ROOT": str(tmp_path)}
        command = [sys.executable, "-m", "dpo_operator", "collect", "--spec-env", "DPO_SPEC", "--shard",
                   "--result-file", str(tmp_path / "result")]
        missing = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert missing.returncode != 0 and "JOB_COMPLETION_INDEX is not set" in (tmp_path / "result").read_text()
        done = subprocess.run(command, env={**env, "JOB_COMPLETION_INDEX": "1"}, capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "result").read_text())["shard"] == 1
    assert (shards_dir(sharded, tmp_path) / "1.json").exists()


@pytest.mark.parametrize(("extra", "message"), [
    ({"output": {"hub": {"endpoint": "http://hub", "repoId": "a/b"}}}, "parallelism > 1 needs output.pvc"),
    ({"workflow": {"nat": {"configFile": "/c.yml"}}}, "a NAT workflow"),
])
def test_parallelism_needs_a_plugin_workflow_and_a_pvc(extra: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec_for("http://llm/v1", "m", parallelism=2, **extra)
