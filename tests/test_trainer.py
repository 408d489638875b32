"""Our DPO trainer on CPU with a tiny randomly initialised model: the loss is the formula, masks are right."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from dpo_operator.train.data import EncodedPair, collate, encode  # noqa: E402
from dpo_operator.train.logprobs import CompletionLogps  # noqa: E402
from dpo_operator.train.loss import DPOLossConfig, dpo_loss  # noqa: E402
from dpo_operator.train.precision import MixedPrecision  # noqa: E402
from dpo_operator.train.trainer import Trainer, train  # noqa: E402
from tests.datasets import toy_dataset  # noqa: E402
from tests.tinymodel import build_tiny_model  # noqa: E402
from tests.trainer_helpers import completion_counts, full_logits_logps, load_model_and_tokenizer  # noqa: E402
from tests.trainconfig import flat_config  # noqa: E402

pytestmark = pytest.mark.workload


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def load(tiny: Path, finetuning: str = "all_weights"):  # noqa: ANN201
    config = flat_config(model=str(tiny), dataset_dir="", output_dir="", finetuning_type=finetuning, lora_rank=4)
    return load_model_and_tokenizer(config, MixedPrecision("fp32", "cpu"))


PAIRS = [EncodedPair([1, 10, 11, 12], [20, 21, 2], [30, 2]), EncodedPair([1, 13], [22, 2], [31, 32, 33, 2])]


def completion_mask(pairs: list[EncodedPair], width: int) -> torch.Tensor:
    """[2B, T]: True at completion tokens of the separate layout, written out independently of collate."""
    mask = torch.zeros(2 * len(pairs), width, dtype=torch.bool)
    for row, (prompt, answer) in enumerate([(p.prompt, p.chosen) for p in pairs] + [(p.prompt, p.rejected) for p in pairs]):
        mask[row, len(prompt): len(prompt) + len(answer)] = True
    return mask


def test_completion_logps_match_full_logits_and_skip_prompt_and_padding(tiny: Path) -> None:
    model, _ = load(tiny)
    batch = collate(PAIRS, [0, 1], pad_id=0)
    assert completion_counts(batch) == [3, 2, 2, 4]  # completion tokens only, no prompt, no padding
    sums, counts = CompletionLogps(model)(**batch.inputs())
    mask = completion_mask(PAIRS, batch.input_ids.shape[1])
    reference = full_logits_logps(model, batch.input_ids, batch.attention_mask, mask)
    torch.testing.assert_close(sums, reference.sums, atol=1e-5, rtol=1e-5)
    assert counts.tolist() == [3, 2, 2, 4]
    # by hand for the first sequence: prompt [1,10,11,12] then completion [20,21,2]
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids[:1, :7]).logits[0].log_softmax(-1)
    by_hand = sum(float(logits[t - 1, tok]) for t, tok in zip(range(4, 7), [20, 21, 2], strict=True))
    assert float(sums[0]) == pytest.approx(by_hand, abs=1e-5)


def test_prompt_tokens_never_count(tiny: Path) -> None:
    model, _ = load(tiny)
    scorer = CompletionLogps(model)
    a = collate([EncodedPair([1, 10], [20, 2], [30, 2])], [0], 0)
    b = collate([EncodedPair([1, 10], [20, 2], [30, 2, 30, 2])], [0], 0)  # longer rejected: more padding on chosen
    with torch.no_grad():
        sums_a, _ = scorer(**a.inputs())
        sums_b, _ = scorer(**b.inputs())
    assert float(sums_a[0]) == pytest.approx(float(sums_b[0]), abs=1e-5)


def test_loss_equals_the_formula_by_hand() -> None:
    policy = torch.tensor([-3.0, -5.0, -4.0, -4.5])  # chosen (2 pairs), then rejected
    reference = torch.tensor([-3.5, -5.0, -3.0, -4.0])
    counts = torch.tensor([3, 2, 2, 4])
    config = DPOLossConfig(beta=0.5, preference_loss_weight=0.7, sft_loss_weight=0.2)
    out = dpo_loss(policy, counts, reference, config)
    margins = [(-3.0 + 3.5) - (-4.0 + 3.0), (-5.0 + 5.0) - (-4.5 + 4.0)]
    preference = sum(-math.log(1 / (1 + math.exp(-0.5 * m))) for m in margins) / 2
    nll = (3.0 + 5.0) / 2  # NeMo RL: summed NLL per chosen sequence, averaged over pairs
    assert float(out.loss) == pytest.approx(0.7 * preference + 0.2 * nll, rel=1e-6)
    metrics = out.metrics()
    assert metrics["rewards/chosen"] == pytest.approx(0.5 * (0.5 + 0.0) / 2)
    assert metrics["rewards/accuracies"] == 1.0


def test_average_log_probs_divides_by_completion_length() -> None:
    policy = torch.tensor([-3.0, -4.0])
    reference = torch.tensor([-6.0, -4.0])
    counts = torch.tensor([3, 4])
    summed = dpo_loss(policy, counts, reference, DPOLossConfig(beta=1.0))
    averaged = dpo_loss(policy, counts, reference, DPOLossConfig(beta=1.0, preference_average_log_probs=True))
    assert float(summed.preference.mean()) == pytest.approx(-math.log(1 / (1 + math.exp(-3.0))))
    assert float(averaged.preference.mean()) == pytest.approx(-math.log(1 / (1 + math.exp(-1.0))))


class ListDataset(list):
    """EncodedPairs as the trainer's dataset."""


def reference_of(model, pairs):  # noqa: ANN001, ANN201
    trainer = Trainer.__new__(Trainer)  # the reference pass alone, on an already loaded model
    from dpo_operator.train.distributed import DDP, Environment

    trainer.config = flat_config(model="", dataset_dir="", output_dir="", batch_size=2)
    trainer.env, trainer.device, trainer.pad_id = Environment(), torch.device("cpu"), 0
    trainer.precision, trainer.model, trainer.scorer = MixedPrecision("fp32", "cpu"), model, CompletionLogps(model)
    trainer.strategy = DDP(trainer.env, trainer.device)
    trainer.shared_prompt = False
    return trainer.reference_logps(ListDataset(pairs), None)


def test_lora_reference_is_the_base_model(tiny: Path) -> None:
    model, _ = load(tiny, "lora")
    with torch.no_grad():  # make the adapters matter, as they would after some training
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    reference = reference_of(model, PAIRS)
    base, _ = load(tiny)
    batch = collate(PAIRS, [0, 1], 0)
    with torch.no_grad():
        base_sums, _ = CompletionLogps(base)(**batch.inputs())
        adapted, _ = CompletionLogps(model)(**batch.inputs())
    torch.testing.assert_close(reference[:, 0], base_sums[:2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reference[:, 1], base_sums[2:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(adapted, base_sums, atol=1e-3)


def test_encode_truncates_prompt_from_the_left_and_appends_eos(tiny: Path) -> None:
    _, tokenizer = load(tiny)
    pair = encode(tokenizer, {"prompt": "x" * 50, "chosen_response": "yes", "rejected_response": "no"}, max_length=16)
    assert pair.chosen[-1] == tokenizer.eos_token_id and len(pair.chosen) == 4
    assert len(pair.prompt) + len(pair.chosen) <= 16
    messages = [{"role": "user", "content": "hi"}]
    assert encode(tokenizer, {"prompt": messages, "chosen_response": "a", "rejected_response": "b"}, 64).prompt


class CharTokenizer:
    """A tokenizer that adds no special tokens (as many do): an empty prompt encodes to nothing."""

    bos_token_id, eos_token_id, chat_template = None, 2, None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [3 + ord(c) % 50 for c in text]}


def test_an_empty_prompt_gets_a_start_token_so_every_completion_token_is_scored() -> None:
    pair = encode(CharTokenizer(), {"prompt": "", "chosen_response": "ab", "rejected_response": "c"}, max_length=16)
    assert pair.prompt == [2] and pair.chosen == [3 + ord("a") % 50, 3 + ord("b") % 50, 2]
    for shared in (False, True):
        batch = collate([pair, pair], [0, 1], pad_id=0, shared_prompt=shared)
        assert completion_counts(batch) == [3, 3, 2, 2]
        rows = batch.score_positions // batch.input_ids.shape[1]  # every token is predicted inside its own row
        # shared: a row holds a pair's chosen then rejected tokens; separate: rows are chosen 0, 1, rejected 0, 1
        assert rows.tolist() == ([0] * 5 + [1] * 5 if shared else [0] * 3 + [1] * 3 + [2] * 2 + [3] * 2)


@pytest.mark.parametrize("finetuning", ["all_weights", "lora"])
def test_training_separates_a_toy_preference_set(tiny: Path, tmp_path: Path, finetuning: str) -> None:
    config = flat_config(model=str(tiny), dataset_dir=str(toy_dataset(tmp_path / "data")), output_dir=str(tmp_path / "out"),
                         finetuning_type=finetuning, epochs=4, batch_size=8, learning_rate=5e-3 if finetuning == "lora" else 1e-3,
                         beta=0.1, lora_rank=8, lora_alpha=16)
    summary = train(config)
    metrics = [json.loads(line) for line in (tmp_path / "out/metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == summary["steps"] == 12
    assert metrics[0]["rewards/margins"] == pytest.approx(0.0, abs=0.05)  # the policy starts as the reference
    assert metrics[-1]["rewards/margins"] > 0.5 and metrics[-1]["loss"] < metrics[0]["loss"]
    assert summary["validation"]["val/rewards/accuracies"] == 1.0
    assert metrics[-1]["tokens_per_second"] > 0
    final = tmp_path / "out/final"
    expected = "adapter_config.json" if finetuning == "lora" else "config.json"
    assert (final / expected).exists() and (final / "tokenizer.json").exists()


def test_max_grad_norm_clips_every_update(tiny: Path, tmp_path: Path) -> None:
    """hyperparameters.maxGradNorm reaches the optimizer step. AdamW is blind to a gradient's scale except through
    its eps (1e-8), so a norm far below eps leaves the policy at the reference, and a normal one lets it move."""
    data = str(toy_dataset(tmp_path / "data"))
    margins = {}
    for norm in (1e-12, 1.0):
        out = tmp_path / f"out-{norm}"
        train(flat_config(model=str(tiny), dataset_dir=data, output_dir=str(out), finetuning_type="all_weights",
                          epochs=1, batch_size=8, learning_rate=1e-3, beta=0.1, max_grad_norm=norm, max_steps=3))
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert metrics[0]["grad_norm"] > 1e-3  # the norm before clipping: clipping has something to do
        margins[norm] = metrics[-1]["rewards/margins"]
    assert abs(margins[1e-12]) < 1e-3 < margins[1.0]
