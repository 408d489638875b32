"""Paths stay inside their volume: ``..`` is refused at admission (CEL, and the API models), by the emulated API
server in a volumeMount subPath (as kube-apiserver does), and again in the pods after following symlinks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from dpo_operator.api.common import PvcLocation
from dpo_operator.paths import PathEscapes, inside
from tests.kubehelpers import Kube

GOOD = {"llm": {"baseUrl": "http://x/v1", "model": "m"}, "output": {"pvc": {"claimName": "d"}}}
ESCAPES = ["../../../x", "/datasets/../../etc", "a/..", "..", "/a/b/../../.."]
FINE = ["/", "datasets/run..1", "..hidden/x", "/a/.../b", "a/b./c"]


@pytest.mark.parametrize("path", ESCAPES)
def test_the_models_refuse_backsteps(path: str) -> None:
    with pytest.raises(ValidationError, match="no '..' segments"):
        PvcLocation(claim_name="d", path=path)


@pytest.mark.parametrize("path", FINE)
def test_dots_that_are_not_a_segment_are_fine(path: str) -> None:
    assert PvcLocation(claim_name="d", path=path).path == path


def test_admission_refuses_backsteps_in_every_pvc_path(kube: Kube, namespace: str) -> None:
    for index, path in enumerate(ESCAPES):
        with pytest.raises(ApiException) as invalid:
            kube.create("DPOCollection", namespace, f"esc-{index}", {**GOOD, "output": {"pvc": {"claimName": "d", "path": path}}})
        assert invalid.value.status == 422 and "spec.output.pvc.path" in invalid.value.body
        assert "no '..' segments" in invalid.value.body
    training = {"model": {"name": "m"}, "dataset": {"location": {"pvc": {"claimName": "d", "path": "/ds"}}},
                "local": {"output": {"claimName": "dpo-data", "path": "/dpo-data/../../etc"}}}
    with pytest.raises(ApiException) as invalid:
        kube.create("DPOTrainingJob", namespace, "out", training)
    assert invalid.value.status == 422 and "spec.local.output.path" in invalid.value.body
    deployment = {"model": {"explicit": {"name": "m", "loraAdapter": {"claimName": "models", "path": "../../etc"}}}}
    with pytest.raises(ApiException) as invalid:  # it would become the NIM's subPath
        kube.create("ModelDeployment", namespace, "nim", deployment)
    assert invalid.value.status == 422 and "spec.model.explicit.loraAdapter.path" in invalid.value.body
    for index, path in enumerate(FINE):
        kube.create("DPOCollection", namespace, f"ok-{index}", {**GOOD, "output": {"pvc": {"claimName": "d", "path": path}}})


def test_the_api_server_refuses_a_subpath_that_leaves_the_volume(kube: Kube, namespace: str) -> None:
    def job(sub_path: str) -> dict:
        return {"metadata": {"name": f"j{abs(hash(sub_path)) % 10**6}"}, "spec": {"template": {"spec": {
            "restartPolicy": "Never", "volumes": [{"name": "v", "emptyDir": {}}],
            "containers": [{"name": "c", "image": "x", "volumeMounts": [
                {"name": "v", "mountPath": "/m", "subPath": sub_path}]}]}}}}
    for sub_path, detail in (("../../etc", "must not contain '..'"), ("a/../../b", "must not contain '..'"),
                             ("/etc", "must be a relative path")):
        with pytest.raises(ApiException) as invalid:
            kube.batch.create_namespaced_job(namespace, job(sub_path))
        assert invalid.value.status == 422, invalid.value.body
        assert "spec.template.spec.containers[0].volumeMounts[0].subPath" in invalid.value.body
        assert detail in invalid.value.body
    kube.batch.create_namespaced_job(namespace, job("models/tiny..v2"))


def test_inside_follows_symlinks(tmp_path: Path) -> None:
    (tmp_path / "volume").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "volume" / "datasets").symlink_to(tmp_path / "outside")
    assert inside(tmp_path / "volume", "/a/b") == (tmp_path / "volume" / "a" / "b").resolve()
    with pytest.raises(PathEscapes, match="leaves its volume"):
        inside(tmp_path / "volume", "/datasets/ttt")


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dpo_operator", *args], env={**os.environ, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_the_collector_refuses_to_write_outside_its_volume(tmp_path: Path) -> None:
    """A spec that slipped past admission, and a link on the volume that points out: exit 3, nothing written."""
    from dpo_operator.embedded.policy_server import PolicyServer

    volume, outside = tmp_path / "volume", tmp_path / "outside"
    volume.mkdir()
    outside.mkdir()
    (volume / "datasets").symlink_to(outside)
    with PolicyServer(seed=1) as policy:
        for path in ("../outside/x", "/datasets/ttt"):
            spec = {"workflow": {"numExamples": 2}, "llm": {"baseUrl": policy.url, "model": policy.model},
                    "output": {"pvc": {"claimName": "d", "path": path}}}
            done = run_cli("collect", "--spec-env", "SPEC", "--result-file", str(tmp_path / "result"),
                           env={"SPEC": json.dumps(spec), "DPO_DATA_ROOT": str(volume)}, cwd=tmp_path)
            assert done.returncode == 3, done.stderr  # deterministic: the Job fails at once, no retries
            assert "'..' segments" in (tmp_path / "result").read_text() or "leaves its volume" in (
                tmp_path / "result").read_text()
            assert list(outside.iterdir()) == [] and not (tmp_path / "x").exists()


def test_the_trainer_and_uploader_refuse_directories_with_backsteps(tmp_path: Path) -> None:
    pytest.importorskip("torch")  # the train command needs the [workload] extra
    spec = {"model": {"name": "m"}, "dataset": {"location": {"pvc": {"claimName": "d", "path": "/ds"}}},
            "local": {"output": {"claimName": "d", "path": "/out"}}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    done = run_cli("train", "--spec", str(tmp_path / "spec.json"), f"--dataset-dir={tmp_path}",
                   f"--output-dir={tmp_path}/d/../../etc", "--result-file", str(tmp_path / "result"), env={},
                   cwd=tmp_path)
    assert done.returncode == 3 and "--output-dir" in (tmp_path / "result").read_text()
    done = run_cli("upload-dataset", f"--dataset-dir={tmp_path}/d/../../etc", "--datastore-url=http://127.0.0.1:9",
                   "--repo=a/b", "--result-file", str(tmp_path / "result"), env={}, cwd=tmp_path)
    assert done.returncode == 3 and "'..' segment" in (tmp_path / "result").read_text()
