"""DPOTrainingJob with backend customizer: the real operator, the emulated cluster, a local upload pod and the
NeMo API emulator. Checks outcomes in the Kubernetes API and in the (emulated) NeMo services."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dpo_operator.embedded.executor import LocalExecutor
from tests.fakes.nemo import FakeNemo, live
from tests.kubehelpers import Kube, conditions_of, wait_for
from tests.test_events_e2e import events
from tests.datasets import toy_dataset

pytestmark = pytest.mark.e2e
API_KEY = "nemo-key-123"


@pytest.fixture()
def nemo() -> Iterator[FakeNemo]:
    with FakeNemo(api_key=API_KEY, hf_token="hf-token-456") as fake:
        yield fake


@pytest.fixture()
def executor(kube: Kube, namespace: str, tmp_path: Path, nemo: FakeNemo) -> Iterator[LocalExecutor]:
    kube.require_emulated()  # the upload pod runs on the local kubelet stand-in
    kube.claims(namespace, "dpo-data")
    local = LocalExecutor(kube.api, tmp_path, namespace)
    toy_dataset(local.pvc_dir("dpo-data") / "ds")
    kube.core.create_namespaced_secret(namespace, {"metadata": {
            "name": "nemo", "labels": {"dpo.ai/usable": "true"},
            "annotations": {"dpo.ai/allowed-urls": nemo.url}}, "data": {  # all NeMo services, one fake
        "api-key": base64.b64encode(API_KEY.encode()).decode(),
        "hf-token": base64.b64encode(b"hf-token-456").decode()}})
    with local:
        yield local


def spec_for(nemo: FakeNemo, **customizer: Any) -> dict[str, Any]:
    return {
        "backend": "customizer",
        "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/ds"}}},
        "model": {"name": "meta/llama-3.2-1b-instruct@v1.0.0+A100"},
        "hyperparameters": {"epochs": 2, "batchSize": 16, "learningRate": 0.0001,
                            "dpo": {"refPolicyKlPenalty": 0.05, "sftLossWeight": 0.1}},
        "customizer": {"entityStoreUrl": nemo.url, "datastoreUrl": nemo.url, "namespace": "team-a",
                       "apiKeySecretRef": {"name": "nemo", "key": "api-key"},
                       "hfTokenSecretRef": {"name": "nemo", "key": "hf-token"},
                       "pollIntervalSeconds": 1, **customizer},
        "job": {"backoffLimit": 0},
    }


def reason(obj: dict[str, Any], condition: str) -> str:
    return {c["type"]: c for c in obj["status"]["conditions"]}[condition]["reason"]


def test_uploads_registers_trains_and_deploys(kube: Kube, namespace: str, operator: None, nemo: FakeNemo,
                                              executor: LocalExecutor) -> None:
    nemo.entity_namespaces.add("team-a")  # existing namespaces answer 409: fine
    nemo.datastore_namespaces.add("team-a")
    nemo.fail["create-job"] = [503]  # a transient failure is retried
    spec = {**spec_for(nemo), "deployOnCompletion": {"replicas": 1}}
    spec["hyperparameters"].update(seed=3, weightDecay=0.01, warmupSteps=5)
    kube.create("DPOTrainingJob", namespace, "remote", spec)
    running = kube.wait_status("DPOTrainingJob", namespace, "remote", lambda s: s.get("phase") == "Running"
                               and (s.get("progress") or {}).get("trainLoss") is not None, what="Running with progress")
    assert running["status"]["progress"]["trainLoss"] == 0.6  # the live series, not the (null) best checkpoint
    done = kube.wait_phase("DPOTrainingJob", namespace, "remote", "Succeeded", timeout=40)

    repo = f"team-a/{namespace}-remote"
    source = executor.pvc_dir("dpo-data") / "ds"
    assert nemo.repos[repo]["training/training_file.jsonl"] == (source / "training/training_file.jsonl").read_bytes()
    assert nemo.datasets[repo]["files_url"] == f"hf://datasets/{repo}"
    assert len(nemo.jobs) == 1
    job = next(iter(nemo.jobs.values()))
    assert job["config"] == "meta/llama-3.2-1b-instruct@v1.0.0+A100"
    assert job["hyperparameters"]["dpo"] == {"ref_policy_kl_penalty": 0.05, "preference_loss_weight": 1.0,
                                             "preference_average_log_probs": False, "sft_loss_weight": 0.1,
                                             "sft_average_log_probs": False, "max_grad_norm": 1.0}
    assert job["hyperparameters"]["epochs"] == 2 and job["hyperparameters"]["finetuning_type"] == "lora"
    assert (job["hyperparameters"]["seed"], job["hyperparameters"]["weight_decay"],
            job["hyperparameters"]["warmup_steps"]) == (3, 0.01, 5)
    status = done["status"]
    # the output model is always asked for (default <customizer namespace>/<name>), and read back from the job
    assert status["remoteJobId"] == job["id"] and status["outputModel"] == "team-a/remote"
    assert nemo.models[status["outputModel"]]["base_model"] == "meta/llama-3.2-1b-instruct"
    assert status["progress"] == {"percentageDone": 100.0, "epochsCompleted": 1, "stepsCompleted": 10,
                                  "trainLoss": 0.4, "valLoss": 0.45}  # the best checkpoint's
    assert {c["type"]: c for c in done["status"]["conditions"]}["FieldsNotHonoured"]["status"] == "False"
    assert conditions_of(done)["CustomizerWarnings"]["reason"] == "NoCustomizerWarnings"
    assert status["datasetLocation"] == f"hf://datasets/{repo}" and status["jobName"] == "remote-upload"
    assert reason(done, "Succeeded") == "Trained" and "consecutivePollFailures" not in status
    assert kube.get("ModelDeployment", namespace, status["deploymentName"])["spec"]["model"] == \
        {"trainingJobRef": {"name": "remote"}}
    # no secret value ever reaches the spec or status of anything we created
    upload = kube.job(namespace, "remote-upload")
    assert API_KEY not in str(done) and API_KEY not in str(upload) and "hf-token-456" not in str(upload)
    assert {"name": "HF_HUB_DISABLE_XET", "value": "1"} in upload["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"action": "FailJob", "onExitCodes": {"containerName": "uploader", "operator": "In", "values": [3, 4, 5]}} \
        in upload["spec"]["podFailurePolicy"]["rules"]  # a missing dataset (exit 3) is not retried


def test_early_stopping_warnings_and_accuracy_are_kept_as_the_customizer_reports_them(
        kube: Kube, namespace: str, operator: None, nemo: FakeNemo, executor: LocalExecutor) -> None:
    nemo.job_warnings = [{"message": "micro_batch_size lowered to 1", "explanation": "the GPU has too little memory"}]
    nemo.script = [{"status": "running", "percentage_done": 40.0, **live(train=[0.6], val_accuracy=[0.55])},
                   {"status": "completed", "percentage_done": 60.0, "epochs_completed": 3, "train_loss": 0.41,
                    **live(train=[0.6, 0.41], val_accuracy=[0.55, 0.72])}]  # stopped early at 60 %
    spec = spec_for(nemo)
    spec["hyperparameters"]["maxGradNorm"] = 0.5
    kube.create("DPOTrainingJob", namespace, "early", spec)
    done = kube.wait_phase("DPOTrainingJob", namespace, "early", "Succeeded", timeout=40)
    assert done["status"]["progress"]["percentageDone"] == 60.0 and done["status"]["progress"]["valAccuracy"] == 0.72
    job = next(iter(nemo.jobs.values()))
    assert job["hyperparameters"]["dpo"]["max_grad_norm"] == 0.5
    warned = conditions_of(done)["CustomizerWarnings"]
    assert (warned["status"], warned["reason"]) == ("True", "CustomizerJobWarnings")
    assert "micro_batch_size lowered to 1: the GPU has too little memory" in warned["message"]
    notes = [e for e in events(kube, namespace, "early") if e.get("reason") == "CustomizerJobWarnings"]
    assert len(notes) == 1 and notes[0]["type"] == "Warning" and job["id"] in notes[0]["note"]


def test_null_progress_is_tolerated_and_a_failed_job_fails_the_resource(
        kube: Kube, namespace: str, operator: None, nemo: FakeNemo, executor: LocalExecutor) -> None:
    nemo.script = [{"status": "running", "percentage_done": 20.0, **live(train=[0.69])},
                   {"status": "running", "percentage_done": None, **live(), "epochs_completed": None},
                   {"status": "failed", "percentage_done": None,
                    "status_logs": [{"message": "started"}, {"detail": "CUDA out of memory"}]}]
    kube.create("DPOTrainingJob", namespace, "oom", spec_for(nemo))
    failed = kube.wait_phase("DPOTrainingJob", namespace, "oom", "Failed", timeout=40)
    assert reason(failed, "Failed") == "CustomizerJobFailed"
    assert "CUDA out of memory" in failed["status"]["message"]
    assert failed["status"]["progress"] == {"percentageDone": 20.0, "trainLoss": 0.69}  # nulls kept the last values


def test_poll_failures_back_off_recover_and_are_bounded(
        kube: Kube, namespace: str, operator: None, nemo: FakeNemo, executor: LocalExecutor) -> None:
    nemo.script = [{"status": "running", "percentage_done": 10.0}]
    kube.create("DPOTrainingJob", namespace, "flaky", spec_for(nemo, maxConsecutivePollFailures=3))
    kube.wait_phase("DPOTrainingJob", namespace, "flaky", "Running", timeout=40)
    nemo.fail["job-status"] = [502]
    kube.wait_status("DPOTrainingJob", namespace, "flaky", lambda s: s.get("consecutivePollFailures") == 1,
                     what="a counted poll failure")
    kube.wait_status("DPOTrainingJob", namespace, "flaky", lambda s: s and "consecutivePollFailures" not in s,
                     what="recovery after a successful poll")
    nemo.fail["job-status"] = [503] * 10
    failed = kube.wait_phase("DPOTrainingJob", namespace, "flaky", "Failed", timeout=30)
    assert reason(failed, "Failed") == "PollFailed" and "3 consecutive status polls" in failed["status"]["message"]


def test_delete_cancels_the_remote_job(kube: Kube, namespace: str, operator: None, nemo: FakeNemo,
                                       executor: LocalExecutor) -> None:
    nemo.script = [{"status": "running", "percentage_done": 5.0}]
    kube.create("DPOTrainingJob", namespace, "doomed", spec_for(nemo))
    running = kube.wait_phase("DPOTrainingJob", namespace, "doomed", "Running", timeout=40)
    assert running["metadata"]["finalizers"] == ["dpo.ai/finalizer"]
    kube.delete("DPOTrainingJob", namespace, "doomed")
    wait_for(lambda: not kube.exists("DPOTrainingJob", namespace, "doomed"), what="deletion")
    assert nemo.jobs[running["status"]["remoteJobId"]]["status"] == "cancelled"


def test_changes_a_running_remote_job_cannot_take_are_reported_not_applied(
        kube: Kube, namespace: str, operator: None, nemo: FakeNemo, executor: LocalExecutor) -> None:
    nemo.script = [{"status": "running", "percentage_done": 5.0}]
    kube.create("DPOTrainingJob", namespace, "edited", spec_for(nemo))
    running = kube.wait_phase("DPOTrainingJob", namespace, "edited", "Running", timeout=40)
    assert reason(running, "SpecApplied") == "Applied"
    kube.patch_spec("DPOTrainingJob", namespace, "edited", {"job": {"activeDeadlineSeconds": 3600}})  # read every poll

    def applied(obj: dict[str, Any]) -> dict[str, Any] | None:
        status = obj.get("status") or {}
        return status if status.get("observedGeneration") == obj["metadata"]["generation"] else None

    status = wait_for(lambda: applied(kube.get("DPOTrainingJob", namespace, "edited")), what="generation 2 observed")
    assert {c["type"]: c for c in status["conditions"]}["SpecApplied"]["status"] == "True"
    kube.patch_spec("DPOTrainingJob", namespace, "edited", {"customizer": {"outputModel": "team-a/renamed"}})
    status = wait_for(lambda: applied(kube.get("DPOTrainingJob", namespace, "edited")), what="generation 3 observed")
    condition = {c["type"]: c for c in status["conditions"]}["SpecApplied"]
    assert (condition["status"], condition["reason"]) == ("False", "ChangeNotApplied")
    assert "customizer.outputModel" in condition["message"] and condition["observedGeneration"] == 3
    assert [route for route, _ in nemo.calls].count("create-job") == 1  # the remote job is left as it is


def test_delete_waits_until_the_cancellation_is_confirmed(
        kube: Kube, namespace: str, nemo: FakeNemo, executor: LocalExecutor, monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    """Issue 21 item 5: the finalizer stays while the Customizer cannot confirm the cancellation (a Warning event
    says how a person may give up), and the deletion finishes once it does."""
    monkeypatch.setenv("DPO_MAX_BACKOFF_SECONDS", "1")
    request.getfixturevalue("operator")
    nemo.script = [{"status": "running"}]
    kube.create("DPOTrainingJob", namespace, "orphan", spec_for(nemo))
    running = kube.wait_phase("DPOTrainingJob", namespace, "orphan", "Running", timeout=40)
    nemo.fail["cancel-job"] = [503] * 6
    kube.delete("DPOTrainingJob", namespace, "orphan")
    wait_for(lambda: [route for route, _ in nemo.calls].count("cancel-job") >= 5, timeout=60, what="5 attempts")
    assert kube.exists("DPOTrainingJob", namespace, "orphan")  # Terminating, the finalizer kept
    warning = wait_for(lambda: next((e for e in kube.core.list_namespaced_event(namespace).items
                                     if e.reason == "RemoteCleanupPending"), None), what="RemoteCleanupPending event")
    assert "finalizers" in warning.message and "kubectl patch dpotrainingjobs orphan" in warning.message
    wait_for(lambda: not kube.exists("DPOTrainingJob", namespace, "orphan"), timeout=60, what="deletion")
    assert nemo.jobs[running["status"]["remoteJobId"]]["status"] == "cancelled"


def test_deadline_cancels_and_fails(kube: Kube, namespace: str, operator: None, nemo: FakeNemo,
                                    executor: LocalExecutor) -> None:
    nemo.script = [{"status": "running", "percentage_done": 1.0}]
    spec = spec_for(nemo)
    spec["job"]["activeDeadlineSeconds"] = 3
    kube.create("DPOTrainingJob", namespace, "slow", spec)
    failed = kube.wait_phase("DPOTrainingJob", namespace, "slow", "Failed", timeout=40)
    assert reason(failed, "Failed") == "DeadlineExceeded"
    assert nemo.jobs[failed["status"]["remoteJobId"]]["status"] == "cancelled"


def test_dataset_already_in_the_datastore_is_not_copied(
        kube: Kube, namespace: str, operator: None, nemo: FakeNemo, executor: LocalExecutor) -> None:
    nemo.repos["team-a/collected"] = {"training/training_file.jsonl": b'{"prompt": "p"}\n'}
    spec = spec_for(nemo)
    spec["dataset"] = {"location": {"hub": {"endpoint": f"{nemo.url}/v1/hf", "repoId": "team-a/collected"}}}
    kube.create("DPOTrainingJob", namespace, "direct", spec)
    done = kube.wait_phase("DPOTrainingJob", namespace, "direct", "Succeeded", timeout=40)
    assert done["status"]["datasetLocation"] == "hf://datasets/team-a/collected"
    assert kube.job(namespace, "direct-upload") is None and list(nemo.repos) == ["team-a/collected"]
    assert "team-a" in nemo.datastore_namespaces  # ensured on this path too

    # a revision other than main is kept: the Customizer reads that revision, not the branch
    nemo.other[("dataset", "team-a/collected", "v2")] = {"training/training_file.jsonl": b'{"prompt": "q"}\n'}
    spec["dataset"]["location"]["hub"]["revision"] = "v2"
    kube.create("DPOTrainingJob", namespace, "pinned", spec)
    pinned = kube.wait_phase("DPOTrainingJob", namespace, "pinned", "Succeeded", timeout=40)
    assert pinned["status"]["datasetLocation"] == "hf://datasets/team-a/collected@v2"
    assert nemo.datasets[f"team-a/{namespace}-pinned"]["files_url"] == "hf://datasets/team-a/collected@v2"
    assert kube.job(namespace, "pinned-upload") is None


def test_a_completed_job_without_an_output_model_fails_clearly(
        kube: Kube, namespace: str, operator: None, nemo: FakeNemo, executor: LocalExecutor) -> None:
    nemo.script = [{"status": "running", "percentage_done": 10.0}]
    spec = spec_for(nemo, outputModel="team-a/chosen-name")
    kube.create("DPOTrainingJob", namespace, "lost", spec)
    running = kube.wait_phase("DPOTrainingJob", namespace, "lost", "Running", timeout=40)
    job = nemo.jobs[running["status"]["remoteJobId"]]
    assert job["output_model"] == "team-a/chosen-name"  # as asked: no version invented
    job["output_model"] = None  # as a job created without one ends
    nemo.script = [{"status": "completed", "percentage_done": 100.0}]
    nemo._scripts[job["id"]] = list(nemo.script)
    failed = kube.wait_phase("DPOTrainingJob", namespace, "lost", "Failed", timeout=40)
    assert reason(failed, "Failed") == "NoOutputModel" and job["id"] in failed["status"]["message"]


def test_what_the_customizer_refuses_or_cannot_honour_is_said(
        kube: Kube, namespace: str, operator: None, nemo: FakeNemo, executor: LocalExecutor) -> None:
    spec = spec_for(nemo)
    spec["hyperparameters"]["lora"] = {"rank": 12}
    kube.create("DPOTrainingJob", namespace, "rank", spec)
    invalid = kube.wait_phase("DPOTrainingJob", namespace, "rank", "Failed", timeout=40)
    assert reason(invalid, "Failed") == "InvalidSpec" and "power of two" in invalid["status"]["message"]
    assert "e.g. 8 or 16" in invalid["status"]["message"]

    spec = spec_for(nemo)
    spec["hyperparameters"]["trainingType"] = "sft"
    kube.create("DPOTrainingJob", namespace, "sft", spec)
    invalid = kube.wait_phase("DPOTrainingJob", namespace, "sft", "Failed", timeout=40)
    assert reason(invalid, "Failed") == "InvalidSpec" and "trainingType: dpo" in invalid["status"]["message"]

    # asked before anything is uploaded: the config offers DPO with all weights only
    nemo.add_config("meta/full-only@v1", options=(("dpo", "all_weights"),))
    spec = {**spec_for(nemo), "model": {"name": "meta/full-only@v1"}}
    kube.create("DPOTrainingJob", namespace, "unoffered", spec)
    invalid = kube.wait_phase("DPOTrainingJob", namespace, "unoffered", "Failed", timeout=40)
    assert reason(invalid, "Failed") == "InvalidSpec"
    assert "does not offer trainingType dpo with finetuningType lora" in invalid["status"]["message"]
    assert "offer trainingType dpo with finetuningType all_weights" in invalid["status"]["message"]
    assert kube.job(namespace, "unoffered-upload") is None

    nemo.script = [{"status": "running"}]
    spec = spec_for(nemo)
    spec["hyperparameters"].update(maxSeqLength=4096, lrScheduler="linear")
    kube.create("DPOTrainingJob", namespace, "partial", spec)
    running = kube.wait_phase("DPOTrainingJob", namespace, "partial", "Running", timeout=40)
    condition = {c["type"]: c for c in running["status"]["conditions"]}["FieldsNotHonoured"]
    assert condition["status"] == "True" and condition["reason"] == "UnsupportedByCustomizer"
    assert "maxSeqLength (4096)" in condition["message"] and "lrScheduler linear" in condition["message"]
    assert len(nemo.jobs) == 1  # the refused specs never reached the Customizer


def test_an_upload_without_a_readable_result_registers_nothing(
        kube: Kube, namespace: str, operator: None, nemo: FakeNemo) -> None:
    kube.require_emulated()  # plays the job controller: no upload pod runs
    kube.usable_secret(namespace, "nemo", {"api-key": API_KEY, "hf-token": "hf-token-456"}, allowed_urls=nemo.url)
    kube.create("DPOTrainingJob", namespace, "blank", spec_for(nemo))
    wait_for(lambda: kube.job(namespace, "blank-upload"), what="upload job")
    kube.finish_job(namespace, "blank-upload", succeeded=True, message="")  # completed, said nothing
    failed = kube.wait_phase("DPOTrainingJob", namespace, "blank", "Failed", timeout=30)
    assert reason(failed, "Failed") == "ResultUnavailable" and "upload job blank-upload" in failed["status"]["message"]
    assert nemo.jobs == {} and "dataset" not in [route for route, _ in nemo.calls]  # no dataset registered


def test_failed_upload_and_missing_secret_are_reported(
        kube: Kube, namespace: str, operator: None, nemo: FakeNemo, executor: LocalExecutor) -> None:
    spec = spec_for(nemo)
    spec["dataset"] = {"location": {"pvc": {"claimName": "dpo-data", "path": "/nothing-here"}}}
    kube.create("DPOTrainingJob", namespace, "nodata", spec)
    failed = kube.wait_phase("DPOTrainingJob", namespace, "nodata", "Failed", timeout=40)
    assert reason(failed, "Failed") == "DatasetUploadFailed"
    assert "lacks training/training_file.jsonl" in failed["status"]["message"]

    spec = spec_for(nemo, apiKeySecretRef={"name": "absent", "key": "k"})
    kube.create("DPOTrainingJob", namespace, "nokey", spec)
    pending = kube.wait_phase("DPOTrainingJob", namespace, "nokey", "Pending")
    assert reason(pending, "Progressing") == "SecretNotFound"
    assert f"Secret {namespace}/absent does not exist" in pending["status"]["message"]
    assert nemo.jobs == {}
