"""Where training starts and what it is compared with: a saved LoRA adapter continued (model.adapter) and a
reference policy other than the starting one (referenceModel), with tiny models on the CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from dpo_operator.api.exits import exit_code  # noqa: E402
from dpo_operator.api.training import DPOTrainingJobSpec, LoraParams  # noqa: E402
from dpo_operator.train import adapters  # noqa: E402
from dpo_operator.train.data import EncodedPair, collate  # noqa: E402
from dpo_operator.train.logprobs import CompletionLogps  # noqa: E402
from dpo_operator.train.trainer import TrainConfig, Trainer  # noqa: E402
from tests.datasets import toy_dataset  # noqa: E402
from tests.tinymodel import build_tiny_model  # noqa: E402
from tests.trainconfig import flat_config  # noqa: E402

pytestmark = pytest.mark.workload

PAIRS = [EncodedPair([1, 10, 11, 12], [20, 21, 2], [30, 2]), EncodedPair([1, 13], [22, 2], [31, 32, 33, 2])]


class ListDataset(list):
    """EncodedPairs as the trainer's dataset."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("other") / "model", seed=7)


@pytest.fixture(scope="module")
def saved_adapter(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter (rank 4, alpha 8, on q_proj and v_proj) whose weights matter, saved as PEFT saves one."""
    from transformers import AutoModelForCausalLM

    model = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(tiny),
                                peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                task_type="CAUSAL_LM"))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("adapter") / "final"
    model.save_pretrained(path)
    return path


def scores(model: Any, pairs: list[EncodedPair] = PAIRS) -> torch.Tensor:
    """[N, 2] (chosen, rejected) summed completion log-probs of ``model``."""
    batch = collate(pairs, list(range(len(pairs))), 0)
    with torch.no_grad():
        sums, _ = CompletionLogps(model.eval())(**batch.inputs())
    return torch.stack([sums[: len(pairs)], sums[len(pairs):]], dim=1)


def base_model(tiny: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny)


def with_adapter(tiny: Path, adapter: Path) -> Any:
    return peft.PeftModel.from_pretrained(base_model(tiny), adapter)


def config_for(tiny: Path, tmp_path: Path, **fields: Any) -> TrainConfig:
    return flat_config(model=str(tiny), dataset_dir=str(toy_dataset(tmp_path / "data")),
                       output_dir=str(tmp_path / "out"), finetuning_type="lora", batch_size=8, learning_rate=5e-3,
                       max_steps=2, plots=False, **fields)


def metrics(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "out/metrics.jsonl").read_text().splitlines()]


def test_training_continues_a_saved_adapter_against_itself(tiny: Path, saved_adapter: Path, tmp_path: Path) -> None:
    trainer = Trainer(config_for(tiny, tmp_path, adapter=str(saved_adapter)))
    started = with_adapter(tiny, saved_adapter)
    torch.testing.assert_close(scores(trainer.model), scores(started), atol=1e-5, rtol=1e-5)  # the policy at step 0
    assert not torch.allclose(scores(started), scores(base_model(tiny)), atol=1e-2)  # the adapter matters
    # default reference: the policy training starts from (base + adapter), not the base
    torch.testing.assert_close(trainer.reference_logps(ListDataset(PAIRS), None), scores(started), atol=1e-5,
                               rtol=1e-5)
    trainable = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)  # loaded trainable, the base frozen
    assert any("q_proj" in name for name in trainable) and not any("k_proj" in name for name in trainable)
    summary = trainer.train()
    first = metrics(tmp_path)[0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at the first step
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert summary["referenceLoads"] == 0 and summary["reference"].startswith("the starting policy")
    # what is saved is a whole adapter of the base (the continued weights), not a delta over the starting one
    saved = json.loads((tmp_path / "out/final/adapter_config.json").read_text())
    assert (saved["r"], saved["lora_alpha"], sorted(saved["target_modules"])) == (4, 8, ["q_proj", "v_proj"])
    served = with_adapter(tiny, tmp_path / "out/final")
    torch.testing.assert_close(scores(served), scores(trainer.model), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(scores(served), scores(started), atol=1e-3)  # and training moved it


def test_a_reference_model_is_loaded_for_the_reference_pass(tiny: Path, other: Path, saved_adapter: Path,
                                                            tmp_path: Path) -> None:
    trainer = Trainer(config_for(tiny, tmp_path, adapter=str(saved_adapter), reference=str(other)))
    reference = trainer.reference_logps(ListDataset(PAIRS), None)
    torch.testing.assert_close(reference, scores(base_model(other)), atol=1e-5, rtol=1e-5)
    assert trainer.reference_loads == 1
    summary = trainer.train()
    assert summary["referenceLoads"] == 2  # once above, once for the run's pass (training and validation pairs)
    assert metrics(tmp_path)[0]["loss"] != pytest.approx(math.log(2), abs=1e-3)  # the policy is not the reference
    assert summary["reference"].startswith(str(other))


def test_the_base_as_reference_switches_the_adapter_off_instead_of_loading_it(
        tiny: Path, saved_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    location = {"claimName": "models", "path": "/base"}
    spec = DPOTrainingJobSpec.model_validate({
        "dataset": {"location": {"pvc": {"claimName": "data"}}},
        "local": {"output": {"claimName": "out"}, "precision": "fp32"},
        "model": {"name": "tiny", "pvc": location, "adapter": {"claimName": "models", "path": "/round-0"}},
        "referenceModel": {"name": "tiny", "pvc": location}})
    config = TrainConfig.from_spec(spec, str(tiny), str(toy_dataset(tmp_path / "data")), str(tmp_path / "out"),
                                   adapter=str(saved_adapter), reference="/mnt/pvc/models/base")
    assert config.reference_base and config.reference is None and config.adapter == str(saved_adapter)

    def no_second_model(*_: Any, **__: Any) -> None:
        raise AssertionError("the reference equal to the base model must not be loaded again")

    monkeypatch.setattr(adapters, "load_reference", no_second_model)
    config.max_steps, config.plots = 1, False
    trainer = Trainer(config)
    torch.testing.assert_close(trainer.reference_logps(ListDataset(PAIRS), None), scores(base_model(tiny)),
                               atol=1e-5, rtol=1e-5)
    summary = trainer.train()
    assert summary["referenceLoads"] == 0 and summary["reference"] == "the base model (adapters off)"
    # the policy (base + adapter) differs from the reference (base): the first step's rewards are not 0
    first = metrics(tmp_path)[0]
    assert abs(first["rewards/chosen"]) > 1e-3 and abs(first["rewards/rejected"]) > 1e-3


def test_the_reference_modes_a_spec_maps_to() -> None:
    def config(**spec: Any) -> TrainConfig:
        base = {"dataset": {"location": {"pvc": {"claimName": "data"}}}, "local": {"output": {"claimName": "o"}},
                "model": {"name": "org/base"}}
        parsed = DPOTrainingJobSpec.model_validate({**base, **spec})
        return TrainConfig.from_spec(parsed, "org/base", "", "", adapter="/a" if parsed.model.adapter else None,
                                     reference="/r" if parsed.reference_model and parsed.reference_model.pvc else None)

    assert (config().reference, config().reference_base) == (None, False)  # today's behaviour
    same = {"referenceModel": {"name": "org/base"}}
    assert (config(**same).reference, config(**same).reference_base) == (None, False)  # the starting policy anyway
    hub = {"referenceModel": {"name": "org/ref"}}
    assert config(**hub).reference == "org/ref"  # a hub id by its name
    pvc = {"referenceModel": {"name": "ref", "pvc": {"claimName": "m"}}}
    assert config(**pvc).reference == "/r"
    adapter = {"model": {"name": "org/base", "adapter": {"claimName": "m", "path": "/a"}}}
    assert config(**adapter).adapter == "/a" and not config(**adapter).reference_base
    assert config(**adapter, **same).reference_base
    with pytest.raises(ValueError, match="--adapter"):
        TrainConfig.from_spec(DPOTrainingJobSpec.model_validate({
            "dataset": {"location": {"pvc": {"claimName": "d"}}}, "local": {"output": {"claimName": "o"}},
            "model": {"name": "b", "adapter": {"claimName": "m"}}}), "b", "", "")


def test_lora_settings_that_contradict_the_saved_adapter_are_refused(tiny: Path, saved_adapter: Path,
                                                                      tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"spec\.hyperparameters\.lora\.rank is 8 but .* has rank 4") as caught:
        Trainer(config_for(tiny, tmp_path, adapter=str(saved_adapter), lora_rank=8))
    assert exit_code(caught.value) == 3
    with pytest.raises(ValueError, match=r"lora\.targetModules \['q_proj'\] differ .* \['q_proj', 'v_proj'\]"):
        Trainer(config_for(tiny, tmp_path, adapter=str(saved_adapter), lora_target_modules=["q_proj"]))
    # the same values, or none at all, agree; the dropout is the spec's (no part of the weights)
    saved = adapters.read_adapter_config(str(saved_adapter))
    assert adapters.lora_contradictions(saved, LoraParams(rank=4, alpha=8, target_modules=["v_proj", "q_proj"],
                                                          dropout=0.1), "x") == []
    assert adapters.lora_contradictions(saved, LoraParams(), "x") == []
    assert "alpha is 16" in adapters.lora_contradictions(saved, LoraParams(alpha=16), "x")[0]


def test_an_adapter_directory_that_is_missing_or_not_lora_is_named(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="model.adapter: directory .* does not exist") as missing:
        adapters.read_adapter_config(str(tmp_path / "nothing"))
    assert exit_code(missing.value) == 5
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no adapter_config.json"):
        adapters.read_adapter_config(str(tmp_path / "empty"))
    (tmp_path / "prefix").mkdir()
    (tmp_path / "prefix/adapter_config.json").write_text(json.dumps({"peft_type": "PREFIX_TUNING"}))
    with pytest.raises(ValueError, match="not LoRA"):
        adapters.read_adapter_config(str(tmp_path / "prefix"))


def test_a_reference_with_another_tokenizer_is_refused(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must share the model's tokenizer"):
        adapters.load_reference(str(tiny), torch.float32, None, vocabulary=10_000)
