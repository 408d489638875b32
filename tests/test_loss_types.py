"""TRL 1.16's DPO loss types: ours equals TRL's own ``DPOTrainer._compute_loss`` on the same per-token log-probs
(loss, its gradient, the metrics TRL logs); the spec's loss fields are validated; the trainer trains the loss the spec
names; the customizer backend refuses what NeMo Customizer cannot train.

TRL's method is called unbound on a stand-in ``self`` holding the attributes its ``__init__`` would set, and a
stand-in model whose ``fused_lm_head`` output carries the given per-token log-probs: every line of TRL's loss code
runs (with precomputed reference log-probs, reverse KL, no LD-DPO or WPO weighting, as ours).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
trl = pytest.importorskip("trl")

from dpo_operator.api.training import DPOTrainingJobSpec, Hyperparameters, LossType  # noqa: E402
from dpo_operator.runtime.errors import InvalidSpec  # noqa: E402
from dpo_operator.handlers.training_customizer import check_spec  # noqa: E402
from dpo_operator.nemo import customizer as nemo  # noqa: E402
from dpo_operator.train.loss import DPOLossConfig, dpo_loss  # noqa: E402
from dpo_operator.train.trainer import train  # noqa: E402
from tests.datasets import toy_dataset  # noqa: E402
from tests.tinymodel import build_tiny_model  # noqa: E402
from tests.trainconfig import flat_config  # noqa: E402

TOLERANCE = dict(rtol=1e-5, atol=1e-6)


class Accelerator:
    device = torch.device("cpu")

    @staticmethod
    def gather(value: torch.Tensor) -> torch.Tensor:
        return value

    gather_for_metrics = gather


class LogpsModel:
    """Stands in for the policy under TRL's ``fused_lm_head=True``: per-token log-probs of the shifted labels."""

    def __init__(self, per_token: torch.Tensor) -> None:
        self.per_token = per_token

    def __call__(self, **_: Any) -> SimpleNamespace:
        zeros = torch.zeros_like(self.per_token.detach())
        return SimpleNamespace(log_probs=self.per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


def batch(pairs: int = 6, width: int = 14, seed: int = 0) -> dict[str, torch.Tensor]:
    """[chosen rows, rejected rows]: a prompt then a completion of varied length; per-token policy log-probs on the
    completion positions (shifted, as a causal LM scores them) and per-sequence reference sums."""
    generator = torch.Generator().manual_seed(seed)
    completion = torch.zeros(2 * pairs, width, dtype=torch.long)
    for row in range(2 * pairs):
        prompt = int(torch.randint(1, 5, (), generator=generator))
        length = int(torch.randint(1, width - prompt + 1, (), generator=generator))
        completion[row, prompt: prompt + length] = 1
    shifted = completion[:, 1:].float()
    per_token = -(0.2 + 2.0 * torch.rand(2 * pairs, width - 1, generator=generator)) * shifted
    reference = per_token.sum(1) + 1.5 * torch.randn(2 * pairs, generator=generator)
    return {"completion_mask": completion, "per_token": per_token, "reference": reference}


def trl_loss(data: dict[str, torch.Tensor], per_token: torch.Tensor, loss_types: list[str], weights: list[float] | None,
             beta: float, label_smoothing: float = 0.0,
             discopop_tau: float = 0.05) -> tuple[torch.Tensor, dict[str, Any]]:
    from trl import DPOTrainer

    pairs = per_token.shape[0] // 2
    trainer = SimpleNamespace(
        model=SimpleNamespace(training=True), accelerator=Accelerator(), aux_loss_enabled=False,
        precompute_ref_logps=True, ld_alpha=None, f_divergence_type="reverse_kl", beta=beta, loss_types=loss_types,
        loss_weights=weights or [1.0] * len(loss_types), label_smoothing=label_smoothing, use_weighting=False,
        args=SimpleNamespace(discopop_tau=discopop_tau), _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0, _tp_size=1)
    completion = data["completion_mask"]
    inputs = {"input_ids": torch.ones_like(completion), "attention_mask": torch.ones_like(completion),
              "completion_mask": completion, "ref_chosen_logps": data["reference"][:pairs],
              "ref_rejected_logps": data["reference"][pairs:]}
    loss = DPOTrainer._compute_loss(trainer, LogpsModel(per_token), inputs, return_outputs=False)
    return loss, {key: values[-1] for key, values in trainer._metrics["train"].items()}


def ours(data: dict[str, torch.Tensor], per_token: torch.Tensor, config: DPOLossConfig) -> Any:
    counts = data["completion_mask"].sum(1)
    return dpo_loss(per_token.sum(1), counts, data["reference"], config)


CASES = [(["sigmoid"], None, 0.1, 0.0), (["hinge"], None, 0.1, 0.0), (["ipo"], None, 0.5, 0.0),
         (["exo_pair"], None, 0.1, 1e-3), (["nca_pair"], None, 0.1, 0.0), (["robust"], None, 0.1, 0.2),
         (["bco_pair"], None, 0.1, 0.0), (["sppo_hard"], None, 0.3, 0.0), (["aot"], None, 0.1, 0.0),
         (["aot"], None, 0.1, 0.1), (["aot_unpaired"], None, 0.1, 0.25), (["apo_zero"], None, 0.2, 0.0),
         (["apo_down"], None, 0.2, 0.0), (["discopop"], None, 0.05, 0.0), (["sft"], None, 0.1, 0.0),
         (["sigmoid_norm"], None, 2.0, 0.0),
         (["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0], 0.1, 0.0),  # MPO, TRL's example
         (["robust", "sft", "ipo"], [1.0, 0.05, 0.5], 0.2, 0.1), (["hinge", "apo_zero"], [0.0, 2.0], 0.1, 0.0)]


def test_every_trl_loss_type_is_covered() -> None:
    assert {t for case in CASES for t in case[0]} == {t.value for t in LossType}


@pytest.mark.parametrize(("types", "weights", "beta", "smoothing"), CASES,
                         ids=["+".join(case[0]) + f"-ls{case[3]}" for case in CASES])
def test_loss_gradient_and_metrics_equal_trls(types: list[str], weights: list[float] | None, beta: float,
                                              smoothing: float) -> None:
    data = batch()
    trl_tokens = data["per_token"].clone().requires_grad_()
    expected, trl_metrics = trl_loss(data, trl_tokens, types, weights, beta, smoothing, discopop_tau=0.07)
    expected.backward()

    our_tokens = data["per_token"].clone().requires_grad_()
    config = DPOLossConfig(beta=beta, loss_types=tuple(types), loss_weights=tuple(weights or [1.0] * len(types)),
                           label_smoothing=smoothing, discopop_tau=0.07)
    out = ours(data, our_tokens, config)
    out.loss.backward()

    assert float(expected.detach()) != 0.0
    torch.testing.assert_close(out.loss, expected.float(), **TOLERANCE)
    scored = data["completion_mask"][:, 1:].bool()  # the other entries are no log-probs (TRL's fused head: 0)
    torch.testing.assert_close(our_tokens.grad[scored], trl_tokens.grad[scored], **TOLERANCE)
    assert trl_tokens.grad[scored].abs().sum() > 0
    # the per-pair split is exact: its mean is the loss
    torch.testing.assert_close(out.per_pair()["loss"].mean(), expected.detach().float(), **TOLERANCE)
    metrics = out.metrics()
    for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
                "logps/rejected"):
        assert metrics[key] == pytest.approx(trl_metrics[key], rel=1e-5, abs=1e-6), key


def test_the_default_loss_is_trls_sigmoid_when_summed() -> None:
    """NeMo RL's loss (lossType unset) and TRL's sigmoid are one objective: same loss, same gradient."""
    data = batch(seed=3)
    results = []
    for config in (DPOLossConfig(beta=0.2), DPOLossConfig(beta=0.2, loss_types=("sigmoid",), loss_weights=(1.0,))):
        tokens = data["per_token"].clone().requires_grad_()
        out = ours(data, tokens, config)
        out.loss.backward()
        results.append((out.loss.detach(), tokens.grad))
    (default_loss, default_grad), (sigmoid_loss, sigmoid_grad) = results
    torch.testing.assert_close(default_loss, sigmoid_loss)
    torch.testing.assert_close(default_grad, sigmoid_grad)
    assert default_grad.abs().sum() > 0


def spec_error(dpo: dict[str, Any], **hyper: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        Hyperparameters.model_validate({"dpo": dpo, **hyper})
    return str(caught.value)


@pytest.mark.parametrize(("dpo", "field"), [
    ({"lossType": ["sigmoid", "hinge"], "lossWeights": [1.0]}, "dpo.lossWeights has 1 weights for 2"),
    ({"lossType": ["sigmoid"], "lossWeights": [0.0]}, "dpo.lossWeights are all 0"),
    ({"lossType": ["hinge"], "lossWeights": [-1.0]}, "lossWeights.0\n  Input should be greater than or equal to 0"),
    ({"lossType": ["hinge"], "lossWeights": [float("inf")]}, "dpo.lossWeights must be finite and >= 0"),
    ({"lossWeights": [1.0]}, "dpo.lossWeights is set without dpo.lossType"),
    ({"lossType": ["ipo", "ipo"]}, "dpo.lossType lists ipo more than once"),
    ({"lossType": ["simpo"]}, "lossType"),
    ({"lossType": []}, "lossType"),
    ({"lossType": ["sigmoid"], "sftLossWeight": 0.5}, "dpo.sftLossWeight weight the default loss only"),
    ({"lossType": ["sigmoid"], "preferenceLossWeight": 2.0}, "dpo.preferenceLossWeight"),
    ({"lossType": ["sigmoid"], "preferenceAverageLogProbs": True}, "use sigmoid_norm or ipo"),
    ({"lossType": ["sigmoid"], "sftAverageLogProbs": False}, "dpo.sftAverageLogProbs apply to the default loss"),
    ({"labelSmoothing": 0.1}, "dpo.labelSmoothing applies only to lossType robust"),
    ({"lossType": ["sigmoid", "hinge"], "labelSmoothing": 0.1}, "not to sigmoid, hinge"),
    ({"lossType": ["robust"], "labelSmoothing": 0.5}, "labelSmoothing"),
    ({"lossType": ["exo_pair"]}, "exo_pair needs dpo.labelSmoothing > 0"),
    ({"lossType": ["sigmoid"], "discopopTau": 0.1}, "dpo.discopopTau applies only to lossType discopop"),
    ({"discopopTau": 0.1}, "dpo.discopopTau applies only to lossType discopop"),
])
def test_nonsense_is_refused_naming_the_field(dpo: dict[str, Any], field: str) -> None:
    assert field in spec_error(dpo)


def test_sft_training_takes_no_loss_type() -> None:
    assert "dpo.lossType is for trainingType dpo" in spec_error({"lossType": ["sigmoid"]}, trainingType="sft")


def test_spec_loss_fields_reach_the_loss() -> None:
    hp = Hyperparameters.model_validate({"dpo": {"refPolicyKlPenalty": 0.3, "lossType": ["robust", "sft"],
                                                 "lossWeights": [1.0, 0.5], "labelSmoothing": 0.1}})
    assert DPOLossConfig.from_hyperparameters(hp) == DPOLossConfig(
        beta=0.3, loss_types=("robust", "sft"), loss_weights=(1.0, 0.5), label_smoothing=0.1)
    assert DPOLossConfig.from_hyperparameters(Hyperparameters.model_validate(
        {"dpo": {"lossType": ["hinge", "discopop"], "discopopTau": 0.1}})).loss_weights == (1.0, 1.0)
    assert DPOLossConfig.from_hyperparameters(Hyperparameters()) == DPOLossConfig()  # the NeMo RL default


def customizer_spec(dpo: dict[str, Any]) -> DPOTrainingJobSpec:
    return DPOTrainingJobSpec.model_validate({
        "backend": "customizer", "dataset": {"collectionRef": {"name": "pairs"}}, "model": {"name": "m@v1"},
        "hyperparameters": {"dpo": dpo}, "customizer": {"entityStoreUrl": "http://e", "datastoreUrl": "http://d"}})


@pytest.mark.parametrize("dpo", [{"lossType": ["hinge"]}, {"lossType": ["sigmoid", "sft"]},
                                 {"lossType": ["sigmoid"], "lossWeights": [0.5]},
                                 {"lossType": ["robust"], "labelSmoothing": 0.1}])
def test_the_customizer_backend_refuses_loss_types_it_cannot_train(dpo: dict[str, Any]) -> None:
    with pytest.raises(InvalidSpec) as refused:
        check_spec(customizer_spec(dpo))
    assert "spec.hyperparameters.dpo.lossType" in str(refused.value) and "backend: local" in str(refused.value)


def test_the_customizer_backend_takes_trls_sigmoid_alone_as_its_own_loss() -> None:
    spec = customizer_spec({"lossType": ["sigmoid"], "refPolicyKlPenalty": 0.2})
    check_spec(spec)
    sent, not_honoured = nemo.customizer_hyperparameters(spec.hyperparameters)
    assert sent["dpo"]["ref_policy_kl_penalty"] == 0.2 and sent["dpo"]["preference_loss_weight"] == 1.0
    assert sent["dpo"]["sft_loss_weight"] == 0.0 and not_honoured == []


def train_losses(tmp_path: Path, name: str, **dpo: Any) -> list[dict[str, Any]]:
    tiny = tmp_path / "tiny"
    if not tiny.exists():
        build_tiny_model(tiny)
        toy_dataset(tmp_path / "data")
    config = flat_config(str(tiny), str(tmp_path / "data"), str(tmp_path / name), finetuning_type="all_weights",
                         batch_size=8, learning_rate=1e-3, max_steps=3, shared_prompt=False, **dpo)
    summary = train(config)
    assert "val/logps/chosen" in summary["validation"]
    return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]


def test_the_trainer_trains_the_loss_type_the_spec_names(tmp_path: Path) -> None:
    default = train_losses(tmp_path, "default")
    sigmoid = train_losses(tmp_path, "sigmoid", loss_type=["sigmoid"])
    hinge = train_losses(tmp_path, "hinge", loss_type=["hinge", "sft"], loss_weights=[1.0, 0.1])
    # TRL's sigmoid is NeMo RL's default loss: the same run
    for ours_default, ours_sigmoid in zip(default, sigmoid, strict=True):
        assert ours_sigmoid["loss"] == pytest.approx(ours_default["loss"], rel=1e-5)
    assert default[0]["loss"] == pytest.approx(0.6931472, abs=1e-6)  # ln 2: the policy is the reference
    # hinge: relu(1 - beta * 0) = 1 at the first step, plus 0.1 x the chosen tokens' mean NLL (TRL's sft)
    first = hinge[0]
    assert first["preference_loss"] == pytest.approx(1.0, abs=1e-6) and first["sft_loss"] > 0
    assert first["loss"] == pytest.approx(1.0 + 0.1 * first["sft_loss"], rel=1e-6)
    assert first["logps/chosen"] < 0 and hinge[-1]["loss"] != pytest.approx(default[-1]["loss"])
