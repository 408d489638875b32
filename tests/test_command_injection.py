"""No value from a spec is ever parsed by a shell: every pod's command is an argv, each spec value one argument.

The commands the operator builds are run here for real (through ``sh`` if they ask for one), with fake ``torchrun``
and ``dpo-operator`` programs first on PATH that record the argv and environment they were given; hostile values in
every field that reaches a command line or an environment variable must arrive byte for byte, and no command they
smuggle in may run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dpo_operator.api.common import HubLocation, PvcLocation, StorageLocation
from dpo_operator.api.training import DPOTrainingJobSpec
from dpo_operator.config import OperatorConfig
from dpo_operator.handlers import training_customizer, training_local

RECORDER = """#!{python}
import json, os, sys
with open(os.environ["RECORD_TO"], "w") as f:
    json.dump({{"argv": sys.argv[1:], "env": dict(os.environ)}}, f)
"""


def hostile(marker: Path, tag: str) -> str:
    """A value a shell would split and execute (command substitution, backticks, ;, quotes, a space, a newline)."""
    return f"{tag} $(touch${{IFS}}{marker}) `touch {marker}`;touch {marker} 'a\"b' \"c'd\"\n-x"


def body(kind: str = "DPOTrainingJob") -> dict[str, Any]:
    return {"apiVersion": "dpo.ai/v1alpha1", "kind": kind,
            "metadata": {"name": "x", "namespace": "team-a", "uid": "0000-1111", "generation": 1}}


def run_recorded(container: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """Run a container's command as its image would (its env, no other), fake programs first on PATH."""
    fakebin = tmp_path / "bin"
    fakebin.mkdir(exist_ok=True)
    for program in ("torchrun", "dpo-operator"):
        (fakebin / program).write_text(RECORDER.format(python=sys.executable))
        (fakebin / program).chmod(0o755)
    record = tmp_path / "record.json"
    record.unlink(missing_ok=True)
    env = {"PATH": f"{fakebin}:/usr/bin:/bin", "RECORD_TO": str(record), "JOB_COMPLETION_INDEX": "1"}
    env.update({var["name"]: var["value"] for var in container["env"] if "value" in var})
    subprocess.run([*container["command"], *(container.get("args") or [])], env=env, cwd=tmp_path, check=True,
                   timeout=60)
    return json.loads(record.read_text())


def flags(argv: list[str]) -> dict[str, str]:
    """``--flag=value`` arguments, as the program receives them."""
    return dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)


@pytest.mark.parametrize("nodes,gpus", [(1, 0), (1, 4), (3, 2)])
def test_trainer_command_carries_hostile_values_as_single_arguments(tmp_path: Path, nodes: int, gpus: int) -> None:
    marker = tmp_path / "pwned"
    model, endpoint, revision = hostile(marker, "model"), hostile(marker, "http://hub"), hostile(marker, "rev")
    out_path, project, entity = hostile(marker, "/out"), hostile(marker, "project"), hostile(marker, "entity")
    spec = DPOTrainingJobSpec.model_validate({
        "model": {"name": model}, "dataset": {"collectionRef": {"name": "c"}},
        "hyperparameters": {"batchSize": 64},
        "local": {"numNodes": nodes, "gpusPerNode": gpus, "output": {"claimName": "dpo-data", "path": out_path},
                  "wandb": {"project": project, "entity": entity,
                                "apiKeySecretRef": {"name": "w", "key": "k"}}}})
    for dataset, expected in (
            (StorageLocation(hub=HubLocation(endpoint=endpoint, repo_id="-a/b", revision=revision)),
             {"dataset-hub": "-a/b", "dataset-hub-endpoint": endpoint, "dataset-hub-revision": revision}),
            (StorageLocation(pvc=PvcLocation(claim_name="dpo-data", path=hostile(marker, "/ds"))),
             {"dataset-dir": "/mnt/pvc/dpo-data/" + hostile(marker, "/ds").strip("/")})):
        job = training_local.job_manifest(body(), spec, dataset, OperatorConfig.from_env())
        trainer = job["spec"]["template"]["spec"]["containers"][0]
        recorded = run_recorded(trainer, tmp_path)
        assert not marker.exists()
        assert trainer["command"][0] in ("torchrun", "dpo-operator")  # no shell in between
        assert recorded["argv"] == trainer["command"][1:]  # the argv arrives exactly as built
        received = flags(recorded["argv"])
        assert received["model"] == model and received["output-dir"] == f"/mnt/pvc/dpo-data/{out_path.strip('/')}/x"
        assert {k: received[k] for k in expected} == expected
        assert recorded["env"]["WANDB_PROJECT"] == project and recorded["env"]["WANDB_ENTITY"] == entity
        assert json.loads(recorded["env"]["DPO_TRAINING_SPEC"])["model"]["name"] == model
        if nodes > 1:  # torchrun takes the node rank and rendezvous endpoint from the environment
            assert (received["nnodes"], received["nproc-per-node"]) == (str(nodes), str(max(1, gpus)))
            env = {e["name"]: e for e in trainer["env"]}
            assert env["PET_NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] == \
                "metadata.annotations['batch.kubernetes.io/job-completion-index']"
            assert recorded["env"]["PET_RDZV_ENDPOINT"] == "x-train-0.x-train:29500"


def test_uploader_command_carries_hostile_values_as_single_arguments(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    datastore, endpoint, revision = (hostile(marker, "http://ds"), hostile(marker, "http://hub"),
                                     hostile(marker, "rev"))
    spec = DPOTrainingJobSpec.model_validate({
        "model": {"name": "meta/llama"}, "dataset": {"collectionRef": {"name": "c"}},
        "backend": "customizer",
        "customizer": {"entityStoreUrl": "http://es", "datastoreUrl": datastore, "namespace": "dpo"}})
    for location, expected in (
            (StorageLocation(hub=HubLocation(endpoint=endpoint, repo_id="a/-b", revision=revision)),
             {"source-endpoint": endpoint, "source-repo": "a/-b", "source-revision": revision}),
            (StorageLocation(pvc=PvcLocation(claim_name="d", path=hostile(marker, "/ds"))),
             {"dataset-dir": "/mnt/pvc/d/" + hostile(marker, "/ds").strip("/")})):
        job = training_customizer.upload_manifest(body(), spec, location, "dpo/x-1", OperatorConfig.from_env())
        uploader = job["spec"]["template"]["spec"]["containers"][0]
        recorded = run_recorded(uploader, tmp_path)
        assert not marker.exists()
        assert recorded["argv"] == uploader["command"][1:]
        received = flags(recorded["argv"])
        assert received["datastore-url"] == datastore and received["repo"] == "dpo/x-1"
        assert {k: received[k] for k in expected} == expected


def test_the_recorder_would_see_a_shell_run_the_marker(tmp_path: Path) -> None:
    """The check above can fail: the same hostile value in the command line the trainer had (``sh -c`` with the
    arguments joined by spaces) runs the smuggled command and splits the value."""
    marker = tmp_path / "pwned"
    container = {"command": ["sh", "-c", "exec torchrun --node-rank $JOB_COMPLETION_INDEX " + " ".join(
        ["--model", hostile(marker, "m")])], "env": []}
    recorded = run_recorded(container, tmp_path)
    assert marker.exists() and recorded["argv"][:3] == ["--node-rank", "1", "--model"]
    assert hostile(marker, "m") not in recorded["argv"]


def test_the_cli_reads_values_that_look_like_options() -> None:
    """``--model=-x`` is a value for argparse, where ``--model -x`` would be an error."""
    from dpo_operator.cli import build_parser

    args = build_parser().parse_args(["train", "--spec-env=S", "--model=--output-dir=/etc", "--dataset-hub=-a/b",
                                      "--output-dir=/o"])
    assert (args.model, args.dataset_hub, args.output_dir) == ("--output-dir=/etc", "-a/b", "/o")


def test_collector_gets_hostile_values_only_through_its_environment(tmp_path: Path) -> None:
    from dpo_operator.api.collection import DPOCollectionSpec
    from dpo_operator.handlers import collection

    marker = tmp_path / "pwned"
    spec = DPOCollectionSpec.model_validate({
        "llm": {"baseUrl": hostile(marker, "http://llm"), "model": hostile(marker, "model")},
        "workflow": {"name": hostile(marker, "pkg.mod:factory")},
        "output": {"pvc": {"claimName": "d", "path": hostile(marker, "/out")}}})
    job = collection.job_manifest(body("DPOCollection"), spec, OperatorConfig.from_env())
    collector = job["spec"]["template"]["spec"]["containers"][0]
    assert collector["command"] == ["dpo-operator", "collect", "--spec-env", "DPO_COLLECTION_SPEC",
                                    "--result-file", "/dev/termination-log"]  # no value from the spec
    recorded = run_recorded(collector, tmp_path)
    assert not marker.exists() and recorded["argv"] == collector["command"][1:]
    assert json.loads(recorded["env"]["DPO_COLLECTION_SPEC"]) == spec.to_api()
