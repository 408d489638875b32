"""A NAT workflow whose config and dataset live in ConfigMaps runs end to end: operator, Job, local pod, dataset.

The local executor fills ConfigMap (and Secret) volumes as the kubelet does, so ``workflow.nat.configMapRef``
reaches the collector as a file, as it would on a cluster.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.kubehelpers import Kube

pytestmark = pytest.mark.e2e


def _configmap(kube: Kube, namespace: str, name: str, data: dict[str, str]) -> None:
    kube.core.create_namespaced_config_map(namespace, {"metadata": {"name": name}, "data": data})


def test_nat_workflow_from_a_configmap_produces_pairs(kube: Kube, namespace: str, operator: None, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    kube.require_emulated()  # runs a kubelet stand-in
    pytest.importorskip("nat.plugins.eval.runtime.evaluate", reason="needs the [nat] extra")
    from dpo_operator.embedded.executor import LocalExecutor
    from tests.test_nat_workflow import PLUGIN, as_set, minus_ties, nat_reference

    # the workflow's package is "installed in the image": on the pod's PYTHONPATH, found by its entry point
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGIN), os.environ.get("PYTHONPATH")])))
    _configmap(kube, namespace, "guess-workflow", {"config.yml": (PLUGIN / "config.yml").read_text()})
    _configmap(kube, namespace, "guess-data", {"data.json": (PLUGIN / "data.json").read_text()})
    spec = {"workflow": {"nat": {"configMapRef": {"name": "guess-workflow", "key": "config.yml"},
                                 "datasetRef": {"name": "guess-data", "key": "data.json"}}},
            "numRuns": 2, "useFullMessageHistory": True, "output": {"pvc": {"claimName": "dpo-data", "path": "/nat"}}}
    kube.claims(namespace, "dpo-data")  # a missing claim keeps the pod Pending
    with LocalExecutor(kube.api, tmp_path / "cluster", namespace) as executor:
        kube.create("DPOCollection", namespace, "natcm", spec)
        done = kube.wait_phase("DPOCollection", namespace, "natcm", "Succeeded", timeout=120)
    status = done["status"]
    assert status["runsCompleted"] == 2 and status["candidates"] == 80 and status["invalidCandidates"] == 0
    dataset = executor.pvc_dir("dpo-data") / "nat"
    rows = [json.loads(line) for name in ("training/training_file.jsonl", "validation/validation_file.jsonl")
            for line in (dataset / name).read_text().splitlines()]
    assert as_set(rows) == as_set(minus_ties(nat_reference()))  # NAT's builder's pairs from the same steps
    mounted = next((tmp_path / "cluster" / "pods" / namespace).glob("natcm-collect-0/nat-config/config.yml"))
    assert mounted.read_text() == (PLUGIN / "config.yml").read_text()  # the file the pod read, as projected


FINETUNE = """
trajectory_builders:
  dpo_builder: {_type: dpo_traj_builder, custom_step_name: dpo_candidate_move, exhaustive_pairs: true}
trainer_adapters:
  nemo: {_type: nemo_customizer_trainer_adapter, entity_host: "${CUSTOMIZER_HOST}", datastore_host: "${DATASTORE_HOST}",
         namespace: nat-dpo-test, customization_config: "meta/llama-3.1-8b-instruct@v1.0.0+A100"}
trainers:
  nemo_trainer: {_type: nemo_customizer_trainer, num_runs: 2, continue_on_collection_error: true}
finetuning: {enabled: true, trainer: nemo_trainer, trajectory_builder: dpo_builder, trainer_adapter: nemo}
"""


def test_an_unchanged_nat_finetune_config_and_its_dataset_in_one_configmap(
        kube: Kube, namespace: str, operator: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``nat finetune`` config as its user has it: sections for plugins the image lacks, ``${VAR}``s without a
    value there, ``file_path: data.json`` beside it in the ConfigMap, and the run count in ``trainers``."""
    kube.require_emulated()
    pytest.importorskip("nat.plugins.eval.runtime.evaluate", reason="needs the [nat] extra")
    from dpo_operator.embedded.executor import LocalExecutor
    from tests.test_nat_workflow import PLUGIN, as_set, minus_ties, nat_reference

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGIN), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("CUSTOMIZER_HOST", raising=False)
    _configmap(kube, namespace, "finetune", {"config.yml": (PLUGIN / "config.yml").read_text() + FINETUNE,
                                             "data.json": (PLUGIN / "data.json").read_text()})
    spec = {"workflow": {"nat": {"configMapRef": {"name": "finetune", "key": "config.yml"}}},
            "useFullMessageHistory": True, "output": {"pvc": {"claimName": "dpo-data", "path": "/ft"}}}
    kube.claims(namespace, "dpo-data")  # a missing claim keeps the pod Pending
    with LocalExecutor(kube.api, tmp_path / "cluster", namespace) as executor:
        kube.create("DPOCollection", namespace, "finetune", spec)
        done = kube.wait_phase("DPOCollection", namespace, "finetune", "Succeeded", timeout=120)
    assert done["status"]["runsCompleted"] == 2 and done["status"]["candidates"] == 80  # num_runs: 2 of trainers
    dataset = executor.pvc_dir("dpo-data") / "ft"
    rows = [json.loads(line) for name in ("training/training_file.jsonl", "validation/validation_file.jsonl")
            for line in (dataset / name).read_text().splitlines()]
    assert as_set(rows) == as_set(minus_ties(nat_reference()))
    metrics = json.loads((dataset / "metrics.json").read_text())
    assert metrics["settings"]["numRuns"] == "natConfig:trainers.nemo_trainer.num_runs"
    assert metrics["settings"]["continueOnCollectionError"] == "natConfig:trainers.nemo_trainer.continue_on_collection_error"
    assert metrics["settings"]["pairing.minScoreDiff"] == "default"
    assert any("custom_step_name" in warning for warning in metrics["configWarnings"])


def test_a_missing_configmap_fails_the_pod_with_the_kubelets_message(kube: Kube, namespace: str, operator: None,
                                                                      tmp_path: Path) -> None:
    kube.require_emulated()
    from dpo_operator.embedded.executor import LocalExecutor

    spec = {"workflow": {"nat": {"configMapRef": {"name": "nowhere", "key": "config.yml"}}},
            "output": {"pvc": {"claimName": "dpo-data", "path": "/nat"}}, "job": {"backoffLimit": 0}}
    kube.claims(namespace, "dpo-data")
    with LocalExecutor(kube.api, tmp_path / "cluster", namespace):
        kube.create("DPOCollection", namespace, "nocm", spec)
        failed = kube.wait_phase("DPOCollection", namespace, "nocm", "Failed", timeout=60)
    assert 'configmap "nowhere" not found' in failed["status"]["message"]


def test_secret_volumes_are_filled_with_decoded_keys(kube: Kube, namespace: str, tmp_path: Path) -> None:
    """A Secret volume (every key, or the listed items at their paths) as the kubelet writes it."""
    kube.require_emulated()
    from dpo_operator.embedded.executor import LocalExecutor

    kube.core.create_namespaced_secret(namespace, {"metadata": {"name": "creds"}, "data": {
        "token": "c2VjcmV0LXRva2Vu", "ca.crt": "LS0tLS0="}})  # base64 of "secret-token", "-----"
    executor = LocalExecutor(kube.api, tmp_path, namespace)
    every = tmp_path / "every"
    assert executor._fill_volume(namespace, {"name": "s", "secret": {"secretName": "creds"}}, every) is None
    assert {p.name: p.read_text() for p in every.iterdir()} == {"token": "secret-token", "ca.crt": "-----"}
    some = tmp_path / "some"
    volume = {"name": "s", "secret": {"secretName": "creds", "items": [{"key": "token", "path": "sub/t"}]}}
    assert executor._fill_volume(namespace, volume, some) is None
    assert [p.relative_to(some).as_posix() for p in some.rglob("*") if p.is_file()] == ["sub/t"]
    missing = {"name": "s", "secret": {"secretName": "creds", "items": [{"key": "nope", "path": "x"}]}}
    assert "references non-existent secret key: nope" in executor._fill_volume(namespace, missing, tmp_path / "m")
    optional = {"name": "s", "secret": {"secretName": "absent", "optional": True}}
    assert executor._fill_volume(namespace, optional, tmp_path / "o") is None
