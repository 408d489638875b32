"""The NeMo client and the dataset upload command against the NeMo API emulator, over real HTTP."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dpo_operator.api.training import Hyperparameters
from dpo_operator.cli import main
from dpo_operator.nemo import customizer as nemo
from dpo_operator.nemo.http import NemoApi, NemoError
from tests.fakes.nemo import FakeNemo, SdkViolation, live
from tests.datasets import toy_dataset


def test_existing_namespaces_and_datasets_are_fine() -> None:
    with FakeNemo() as fake, NemoApi(fake.url) as api:
        for _ in range(2):
            nemo.ensure_entity_namespace(api, "dpo")
            nemo.ensure_datastore_namespace(api, "dpo")
            nemo.register_dataset(api, "dpo", "pairs", "hf://datasets/dpo/pairs", "d")
        assert fake.entity_namespaces == {"dpo"} and fake.datastore_namespaces == {"dpo"}
        assert [route for route, _ in fake.calls].count("dataset") == 2
        # the name is taken by an entry with other files: a clear error, not a silent reuse
        with pytest.raises(nemo.DatasetConflict, match="points at 'hf://datasets/dpo/pairs'"):
            nemo.register_dataset(api, "dpo", "pairs", "hf://datasets/dpo/other", "d")


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
                                      "train_loss": None, "val_loss": "nan?", **live(train=[0.7, 0.5])})
    assert status.phase == "Running" and status.progress == {"trainLoss": 0.5}
    assert nemo.RemoteStatus.parse({}).phase == "Running"  # unknown: still running, as the SDK treats it
    failed = nemo.RemoteStatus.parse({"status": "failed", "status_logs": [{"detail": "first"}, {"message": "OOM"}, {}]})
    assert failed.phase == "Failed" and failed.message == "Customizer job failed: OOM"
    assert {nemo.RemoteStatus.parse({"status": s}).phase for s in ("cancelled", "canceled")} == {"Cancelled"}
    assert nemo.RemoteStatus.parse({"status": "created"}).phase == "Pending"
    assert nemo.RemoteStatus.parse({"status": "completed"}).phase == "Succeeded"
    assert nemo.RemoteStatus.parse({"status": "error"}).phase == "Running"  # not a status the API has


def test_live_loss_while_running_and_the_best_checkpoint_once_done() -> None:
    series = live(train=[0.69, 0.52, 0.61], val=[0.66])
    running = nemo.RemoteStatus.parse({"status": "running", "train_loss": 0.52, "val_loss": 0.66, **series})
    assert running.progress == {"trainLoss": 0.61, "valLoss": 0.66}  # the newest step, not the best checkpoint
    done = nemo.RemoteStatus.parse({"status": "completed", "train_loss": 0.52, "val_loss": 0.64, **series})
    assert done.progress == {"trainLoss": 0.52, "valLoss": 0.64}
    no_checkpoint = nemo.RemoteStatus.parse({"status": "completed", "train_loss": None, **series})
    assert no_checkpoint.progress == {"trainLoss": 0.61, "valLoss": 0.66}


def test_accuracy_series_and_job_warnings_are_read() -> None:
    status = nemo.RemoteStatus.parse({"status": "running", **live(train=[0.6], val=[0.5, 0.4],
                                                                   val_accuracy=[0.55, 0.7])})
    assert status.progress == {"trainLoss": 0.6, "valLoss": 0.4, "valAccuracy": 0.7}
    early = nemo.RemoteStatus.parse({"status": "completed", "percentage_done": 60.0})
    assert early.phase == "Succeeded" and early.progress["percentageDone"] == 60.0  # early stopping: as reported
    job = {"id": "cust-1", "warnings": [{"message": "batch_size lowered", "explanation": "too few GPUs"},
                                        {"explanation": "no validation data"}, {}, "odd"]}
    assert nemo.job_warnings(job) == ["batch_size lowered: too few GPUs", "no validation data"]
    assert nemo.job_warnings({"id": "cust-2"}) == []


def test_hyperparameters_sent_and_the_ones_the_customizer_cannot_honour() -> None:
    defaults, not_honoured = nemo.customizer_hyperparameters(Hyperparameters())
    assert not_honoured == [] and defaults["optimizer"] == "adamw_with_flat_lr" and defaults["seed"] == 42
    assert defaults["dpo"]["sft_average_log_probs"] is False and "target_modules" not in defaults["lora"]
    assert defaults["dpo"]["max_grad_norm"] == 1.0
    hp = Hyperparameters.model_validate({
        "maxSeqLength": 4096, "seed": 7, "weightDecay": 0.01, "warmupRatio": 0.1, "lrScheduler": "linear",
        "validateEverySteps": 50, "maxGradNorm": 0.5,
        "dpo": {"preferenceAverageLogProbs": True}, "lora": {"rank": 8, "targetModules": ["linear_qkv"]}})
    sent, not_honoured = nemo.customizer_hyperparameters(hp)
    assert sent["seed"] == 7 and sent["weight_decay"] == 0.01 and "optimizer" not in sent
    assert sent["dpo"]["sft_average_log_probs"] is True  # follows preferenceAverageLogProbs when unset
    assert sent["dpo"]["max_grad_norm"] == 0.5
    assert sent["lora"] == {"adapter_dim": 8, "alpha": 32, "adapter_dropout": 0.0, "target_modules": ["linear_qkv"]}
    assert [text.split(" ")[0] for text in not_honoured] == ["maxSeqLength", "warmupRatio", "validateEverySteps",
                                                             "lrScheduler"]
    # what is sent is what the SDK's JobCreateParams accepts (the fake validates every request)
    with FakeNemo() as fake, NemoApi(fake.url) as api:
        fake.add_config("cfg")
        fake.repos["dpo/pairs"] = {"training/training_file.jsonl": b"{}\n"}
        nemo.ensure_entity_namespace(api, "dpo")
        nemo.register_dataset(api, "dpo", "pairs", "hf://datasets/dpo/pairs", "d")
        job = nemo.create_job(api, nemo.job_body("cfg", "dpo", "pairs", sent, "dpo/model", "u", "x"))
        assert job["output_model"] == "dpo/model"  # as asked: no version invented
        assert fake.jobs[job["id"]]["hyperparameters"]["lora"]["target_modules"] == ["linear_qkv"]
        phases = [nemo.job_status(api, job["id"]).phase for _ in range(3)]  # each poll: the script's next answer
        assert phases == ["Pending", "Running", "Succeeded"]
        model = api.request("GET", "/v1/models/dpo/model")  # the entity the completed job created
        assert (model["namespace"], model["name"], model["peft"]["finetuning_type"]) == ("dpo", "model", "lora")
    assert nemo.datastore_files_url("dpo/pairs") == "hf://datasets/dpo/pairs"
    assert nemo.datastore_files_url("dpo/pairs", "v2") == "hf://datasets/dpo/pairs@v2"


def test_the_fake_refuses_what_the_sdk_does_not_allow() -> None:
    """The SDK binding can fail: an unknown request field, and an answer the SDK cannot parse."""
    with pytest.raises(SdkViolation) as caught:
        with FakeNemo() as fake, NemoApi(fake.url) as api:
            with pytest.raises(NemoError) as refused:
                api.request("POST", "/v1/namespaces", json={"id": "dpo", "colour": "green"})
            assert refused.value.status == 422
            nemo.ensure_entity_namespace(api, "dpo")
            fake.add_config("cfg")
            fake.repos["dpo/pairs"] = {"training/training_file.jsonl": b"{}\n"}
            nemo.register_dataset(api, "dpo", "pairs", "hf://datasets/dpo/pairs", "d")
            fake.script = [{"status": "exploded"}]
            job = nemo.create_job(api, nemo.job_body("cfg", "dpo", "pairs", {"finetuning_type": "lora"}, "dpo/m", "u", "x"))
            with pytest.raises(NemoError) as broken:
                nemo.job_status(api, job["id"])
            assert broken.value.status == 500
    assert "unknown field .colour" in str(caught.value) and "CustomizationStatusDetails" in str(caught.value)


def test_find_job_follows_pagination_to_an_empty_page_within_the_namespace(tmp_path: Path) -> None:
    with FakeNemo() as fake, NemoApi(fake.url) as api:
        fake.add_config("cfg")
        fake.repos["dpo/pairs"] = {"training/training_file.jsonl": b"{}\n"}
        for namespace in ("dpo", "other"):
            nemo.ensure_entity_namespace(api, namespace)
        nemo.register_dataset(api, "dpo", "pairs", "hf://datasets/dpo/pairs", "d")
        hp = {"finetuning_type": "lora"}
        nemo.create_job(api, nemo.job_body("cfg", "other", "pairs", hp, "other/m", "uid-elsewhere", "x") |
                        {"dataset": {"name": "pairs", "namespace": "dpo"}})
        for i in range(nemo.PAGE_SIZE + 3):
            nemo.create_job(api, nemo.job_body("cfg", "dpo", "pairs", hp, "dpo/m", f"uid-{i}", "x"))
        last = nemo.find_job(api, f"uid-{nemo.PAGE_SIZE + 2}", "dpo")
        assert last is not None and last["id"] == f"cust-{nemo.PAGE_SIZE + 5:06d}"
        assert nemo.find_job(api, "uid-absent", "dpo") is None
        assert nemo.find_job(api, "uid-elsewhere", "dpo") is None  # the namespace filter is honoured
        assert nemo.find_job(api, "uid-elsewhere") is not None
        pages = [path for route, path in fake.calls if route == "list-jobs"]
        assert len(pages) >= 3  # two full pages, then the empty one that ends the search
        assert nemo.cancel_job(api, last["id"]) is True
        assert nemo.cancel_job(api, last["id"]) is False  # already cancelled: 409
        assert nemo.cancel_job(api, "cust-missing") is False


def test_job_for_an_unuploaded_dataset_is_refused() -> None:
    with FakeNemo() as fake, NemoApi(fake.url) as api:
        fake.add_config("cfg")
        nemo.ensure_entity_namespace(api, "dpo")
        nemo.register_dataset(api, "dpo", "pairs", "hf://datasets/dpo/pairs", "d")
        with pytest.raises(NemoError, match="has no training/training_file.jsonl"):
            nemo.create_job(api, nemo.job_body("cfg", "dpo", "pairs", {"finetuning_type": "lora"}, "dpo/m", "u", "x"))


def test_local_module_names_are_refused_with_the_customizer_names_to_use() -> None:
    from dpo_operator.api.training import DPOTrainingJobSpec
    from dpo_operator.handlers.training_customizer import check_spec
    from dpo_operator.runtime.errors import InvalidSpec

    def spec(modules: list[str], finetuning: str = "lora") -> DPOTrainingJobSpec:
        return DPOTrainingJobSpec.model_validate({
            "dataset": {"collectionRef": {"name": "c"}}, "model": {"name": "meta/m@v1"}, "backend": "customizer",
            "customizer": {"entityStoreUrl": "http://nemo", "datastoreUrl": "http://nemo"},
            "hyperparameters": {"finetuningType": finetuning, "lora": {"targetModules": modules}}})

    with pytest.raises(InvalidSpec) as caught:
        check_spec(spec(["q_proj", "k_proj", "linear_fc2", "down_proj"]))
    message = str(caught.value)
    assert "targetModules ['q_proj', 'k_proj', 'down_proj'] are not NeMo Customizer modules" in message
    assert "use ['linear_qkv', 'linear_fc2']" in message and "fused LoRA only" in message
    check_spec(spec(["linear_qkv", "linear_proj", "*.layers.1.*.linear_fc1", "*_proj"]))  # Megatron names pass
    check_spec(spec(["q_proj"], finetuning="all_weights"))  # no adapters: the modules are not sent
    assert nemo.refused_target_modules(["lm_head"]) is not None and "use" not in \
        str(nemo.refused_target_modules(["lm_head"])).split("linear_fc2 for down_proj")[1]


def test_the_config_is_asked_before_submitting_and_the_fake_refuses_what_it_does_not_offer() -> None:
    with FakeNemo() as fake, NemoApi(fake.url) as api:
        fake.add_config("meta/tiny@v1", options=(("dpo", "all_weights"), ("sft", "lora")))
        offered = nemo.offered_options(api, "meta/tiny@v1")
        assert offered == [("dpo", "all_weights"), ("sft", "lora")]
        assert nemo.refused_option("meta/tiny@v1", offered, "dpo", "all_weights") is None
        refused = nemo.refused_option("meta/tiny@v1", offered, "dpo", "lora")
        assert refused is not None and "does not offer trainingType dpo with finetuningType lora" in refused
        assert "trainingType dpo with finetuningType all_weights, trainingType sft with finetuningType lora" in refused
        missing = nemo.offered_options(api, "meta/absent@v1")
        assert missing is None and "names no customization config" in str(nemo.refused_option(
            "meta/absent@v1", missing, "dpo", "lora"))
        # the fake is as strict as the Customizer: a pair the config does not offer is refused
        nemo.ensure_entity_namespace(api, "dpo")
        fake.repos["dpo/pairs"] = {"training/training_file.jsonl": b"{}\n"}
        nemo.register_dataset(api, "dpo", "pairs", "hf://datasets/dpo/pairs", "d")
        hp = {"training_type": "dpo", "finetuning_type": "lora"}
        with pytest.raises(NemoError, match="not offered by config meta/tiny@v1") as caught:
            nemo.create_job(api, nemo.job_body("meta/tiny@v1", "dpo", "pairs", hp, "dpo/m", "u", "x"))
        assert caught.value.status == 422 and fake.jobs == {}
        with pytest.raises(NemoError) as unknown:
            nemo.create_job(api, nemo.job_body("meta/absent@v1", "dpo", "pairs", hp, "dpo/m", "u", "x"))
        assert unknown.value.status == 404
        job = nemo.create_job(api, nemo.job_body("meta/tiny@v1", "dpo", "pairs", {**hp, "finetuning_type":
                                                 "all_weights"}, "dpo/m", "u", "x"))
        assert fake.jobs[job["id"]]["config"] == "meta/tiny@v1"


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


def test_the_datastore_upload_runs_without_xet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NeMo Datastore has no Xet: the commit is made with HF_HUB_DISABLE_XET in force, which is restored after."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils._runtime import is_xet_available

    toy_dataset(tmp_path / "ds")
    seen: list[tuple[bool, str | None]] = []
    commit = HfApi.create_commit

    def spy(self: HfApi, *args: object, **kwargs: object) -> object:
        seen.append((is_xet_available(), os.environ.get("HF_HUB_DISABLE_XET")))
        return commit(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(HfApi, "create_commit", spy)
    monkeypatch.delenv("HF_HUB_DISABLE_XET", raising=False)
    xet_before = is_xet_available()
    with FakeNemo() as fake:
        assert main(["upload-dataset", "--dataset-dir", str(tmp_path / "ds"), "--datastore-url", fake.url,
                     "--repo", "dpo/pairs", "--result-file", str(tmp_path / "r.json")]) == 0
        assert "training/training_file.jsonl" in fake.repos["dpo/pairs"]
    assert seen == [(False, "1")]
    assert is_xet_available() == xet_before and "HF_HUB_DISABLE_XET" not in os.environ


def test_upload_of_a_missing_dataset_reports_the_error(tmp_path: Path) -> None:
    result_file = tmp_path / "result.json"
    with FakeNemo() as fake:
        assert main(["upload-dataset", "--dataset-dir", str(tmp_path / "nothing"), "--datastore-url", fake.url,
                     "--repo", "dpo/pairs", "--result-file", str(result_file)]) == 3  # deterministic: no retry helps
        assert fake.repos == {}
    assert "lacks training/training_file.jsonl" in json.loads(result_file.read_text())["error"]


def test_a_session_never_leaves_its_base_url() -> None:
    """Paths are relative to the service root the key's Secret allows: nothing (a remote id in a path, say) may
    point the bearer token at another host."""
    import httpx
    import pytest

    from dpo_operator.nemo.http import NemoApi

    seen: list[httpx.Request] = []
    api = NemoApi("http://nemo.team-a:8000", "k", transport=httpx.MockTransport(
        lambda request: seen.append(request) or httpx.Response(200, json={})))
    for path in ("http://evil.example/x", "//evil.example/x", "evil"):
        with pytest.raises(ValueError, match="outside http://nemo.team-a:8000"):
            api.request("GET", path)
    api.request("GET", "/v1/customization/jobs/a//b")
    assert [str(r.url) for r in seen] == ["http://nemo.team-a:8000/v1/customization/jobs/a//b"]
