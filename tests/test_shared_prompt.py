"""The shared-prompt layout (one sequence a pair, the prompt computed once) scores and trains exactly like two
sequences a pair, and the trainer falls back to two sequences where a model's attention ignores custom masks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from dpo_operator.train.data import EncodedPair, collate  # noqa: E402
from dpo_operator.train.logprobs import CompletionLogps  # noqa: E402
from dpo_operator.train.precision import MixedPrecision  # noqa: E402
from dpo_operator.train.trainer import train  # noqa: E402
from tests.tinymodel import build_tiny_model  # noqa: E402
from tests.trainer_helpers import completion_counts, load_model_and_tokenizer  # noqa: E402
from tests.trainconfig import flat_config  # noqa: E402

pytestmark = pytest.mark.workload

# different prompt, chosen and rejected lengths: padding in every segment of both layouts
PAIRS = [EncodedPair([1, 10, 11, 12], [20, 21, 2], [30, 2]), EncodedPair([1, 13], [22, 2], [31, 32, 33, 2]),
         EncodedPair([1, 14, 15, 16, 17, 18], [23, 2], [34, 35, 2])]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def load(tiny: Path, finetuning: str = "all_weights", attention: str = "sdpa"):  # noqa: ANN201
    config = flat_config(model=str(tiny), dataset_dir="", output_dir="", finetuning_type=finetuning, lora_rank=4)
    model, _ = load_model_and_tokenizer(config, MixedPrecision("fp32", "cpu"))
    model.set_attn_implementation(attention)
    if finetuning == "lora":
        with torch.no_grad():  # adapters that matter
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 0.3)
    return model


def test_the_shared_layout_computes_each_prompt_once() -> None:
    shared, separate = collate(PAIRS, [0, 1, 2], 0, shared_prompt=True), collate(PAIRS, [0, 1, 2], 0)
    assert shared.input_ids.shape == (3, 11) and separate.input_ids.shape == (6, 9)
    assert shared.input_ids[0, :9].tolist() == [1, 10, 11, 12, 20, 21, 2, 30, 2]
    assert shared.position_ids[0, :9].tolist() == [0, 1, 2, 3, 4, 5, 6, 4, 5]  # rejected restarts after the prompt
    mask = shared.attention_mask[0, 0]
    assert mask[7, :4].all() and not mask[7, 4:7].any() and mask[7, 7]  # rejected sees the prompt, not chosen
    assert mask[6, :7].all() and not mask[6, 7:].any()  # chosen: causal over prompt and itself
    assert mask[10, 10] and mask[10].sum() == 1  # padding sees only itself (no all-masked row)
    assert completion_counts(shared) == completion_counts(separate) == [3, 2, 2, 2, 4, 3]
    assert shared.tokens == separate.tokens == sum(2 * len(p.prompt) + len(p.chosen) + len(p.rejected) for p in PAIRS)


def test_an_empty_response_scores_nothing_in_either_layout() -> None:
    pairs = [EncodedPair([1, 10], [], [30, 2]), EncodedPair([1, 11, 12], [20, 2], [])]  # a tokenizer without EOS
    for shared in (True, False):
        batch = collate(pairs, [0, 1], 0, shared_prompt=shared)
        assert completion_counts(batch) == [0, 2, 2, 0]
        assert len(batch.score_positions) == len(batch.score_targets) == 4


@pytest.mark.parametrize(("finetuning", "attention"), [("all_weights", "sdpa"), ("all_weights", "eager"), ("lora", "sdpa")])
def test_shared_layout_scores_and_gradients_equal_two_sequences(tiny: Path, finetuning: str, attention: str) -> None:
    model = load(tiny, finetuning, attention)
    scorer = CompletionLogps(model)
    results = []
    for shared in (True, False):
        model.zero_grad()
        sums, counts = scorer(**collate(PAIRS, [0, 1, 2], 0, shared_prompt=shared).inputs())
        (sums * torch.linspace(1.0, 2.0, len(sums))).sum().backward()  # every sequence's gradient counts
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        results.append((sums.detach(), counts, grads))
    (shared_sums, shared_counts, shared_grads), (sums, counts, grads) = results
    torch.testing.assert_close(shared_sums, sums, atol=2e-5, rtol=1e-5)
    assert shared_counts.tolist() == counts.tolist() == [3, 2, 2, 2, 4, 3]
    assert shared_grads.keys() == grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(shared_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def write_dataset(path: Path) -> Path:
    rows = [{"prompt": f"Board {i}: where next, X at {i % 9}?", "chosen_response": f"cell {(i + 4) % 9}",
             "rejected_response": "cell " + str(i % 9) + " again" * (i % 3)} for i in range(20)]
    for name, part in (("training/training_file.jsonl", rows[:16]), ("validation/validation_file.jsonl", rows[16:])):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    return path


def run(tiny: Path, tmp_path: Path, label: str, shared: bool) -> tuple[dict, list[dict], dict]:
    config = flat_config(model=str(tiny), dataset_dir=str(write_dataset(tmp_path / "data")),
                         output_dir=str(tmp_path / label), finetuning_type="all_weights", batch_size=4, epochs=2,
                         learning_rate=1e-3, shared_prompt=shared, sft_loss_weight=0.5)
    summary = train(config)
    metrics = [json.loads(line) for line in (tmp_path / label / "metrics.jsonl").read_text().splitlines()]
    from safetensors.torch import load_file

    return summary, metrics, load_file(tmp_path / label / "final/model.safetensors")


def test_training_in_the_shared_layout_equals_two_sequences(tiny: Path, tmp_path: Path) -> None:
    shared, shared_metrics, shared_weights = run(tiny, tmp_path, "shared", True)
    separate, metrics, weights = run(tiny, tmp_path, "separate", False)
    assert shared["sharedPrompt"] is True and separate["sharedPrompt"] is False
    assert len(shared_metrics) == len(metrics) == 8
    for a, b in zip(shared_metrics, metrics, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-4)
        assert a["rewards/margins"] == pytest.approx(b["rewards/margins"], abs=1e-4)
    assert metrics[-1]["loss"] < metrics[0]["loss"]  # it trained
    for name, tensor in weights.items():
        torch.testing.assert_close(shared_weights[name], tensor, atol=1e-4, rtol=1e-3, msg=name)
    assert shared["validation"]["val/loss"] == pytest.approx(separate["validation"]["val/loss"], abs=1e-4)


def test_a_model_whose_attention_ignores_custom_masks_falls_back_to_two_sequences(
        tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """An attention that applies plain causal masking (as some architectures do) would let rejected tokens see
    the chosen ones; the first-pairs check catches it and the run trains with two sequences a pair."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def causal_only(module, query, key, value, attention_mask, **kwargs):  # noqa: ANN001, ANN003, ANN202
        return sdpa_attention_forward(module, query, key, value, None, is_causal=True, **kwargs)

    AttentionInterface.register("causal_only", causal_only)
    monkeypatch.setattr("dpo_operator.train.trainer.supports_custom_masks", lambda model: True)
    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained

    def with_causal_only(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        model = original(*args, **kwargs)
        model.set_attn_implementation("causal_only")
        return model

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", with_causal_only)
    with caplog.at_level("WARNING"):
        summary, metrics, _ = run(tiny, tmp_path, "fallback", True)
    assert summary["sharedPrompt"] is False
    assert "training with two sequences per pair" in caplog.text
    assert metrics[-1]["loss"] < metrics[0]["loss"]
