"""Trainer numerics against their references: NeMo RL's loss from raw token log-probs, mixed precision that
actually moves fp32 master weights, AdamW groups and transformers' schedules, TensorBoard output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from dpo_operator.api.training import DPOParams  # noqa: E402
from dpo_operator.train.data import EncodedPair, collate, epoch_batches, rank_share, sharded_chunks  # noqa: E402
from dpo_operator.train.loss import DPOLossConfig, dpo_loss  # noqa: E402
from dpo_operator.train.optim import build_scheduler, parameter_groups  # noqa: E402
from dpo_operator.train.trainer import train  # noqa: E402
from tests.datasets import toy_dataset  # noqa: E402
from tests.tinymodel import build_tiny_model  # noqa: E402
from tests.trainer_helpers import completion_counts  # noqa: E402
from tests.trainconfig import flat_config  # noqa: E402

pytestmark = pytest.mark.workload


def nemo_rl_dpo_loss(token_logps: torch.Tensor, ref_token_logps: torch.Tensor, mask: torch.Tensor, beta: float,
                     w_pref: float, w_sft: float, pref_avg: bool, sft_avg: bool) -> torch.Tensor:
    """NeMo RL's DPOLossFn written from its definition, on raw per-token log-probs with chosen/rejected
    interleaved as NeMo RL batches them (rows 0, 2, 4... chosen; 1, 3, 5... rejected)."""
    diff = (token_logps - ref_token_logps) * mask
    rewards = diff.sum(-1)
    if pref_avg:
        rewards = rewards / mask.sum(-1)
    chosen, rejected = rewards[::2], rewards[1::2]
    preference = -torch.nn.functional.logsigmoid(beta * (chosen - rejected)).mean()
    nll = -(token_logps * mask).sum(-1)
    if sft_avg:
        nll = nll / mask.sum(-1)
    sft = nll[::2].mean()  # only chosen sequences, averaged over sequences
    return w_pref * preference + w_sft * sft


@pytest.mark.parametrize("pref_avg,sft_avg", [(False, False), (True, True), (False, True), (True, False)])
def test_loss_matches_nemo_rl_from_raw_token_logps(pref_avg: bool, sft_avg: bool) -> None:
    torch.manual_seed(0)
    pairs, width = 5, 11
    lengths = torch.randint(1, width + 1, (2 * pairs,))
    mask = (torch.arange(width)[None] < lengths[:, None]).float()  # NeMo RL order: interleaved
    token_logps = -torch.rand(2 * pairs, width) * 3
    ref_token_logps = token_logps + torch.randn(2 * pairs, width) * 0.3
    expected = nemo_rl_dpo_loss(token_logps, ref_token_logps, mask, 0.3, 0.7, 0.9, pref_avg, sft_avg)
    # ours: per-sequence sums, chosen rows first then rejected
    order = torch.cat([torch.arange(0, 2 * pairs, 2), torch.arange(1, 2 * pairs, 2)])
    sums = (token_logps * mask).sum(-1)[order]
    ref_sums = (ref_token_logps * mask).sum(-1)[order]
    config = DPOLossConfig(beta=0.3, preference_loss_weight=0.7, sft_loss_weight=0.9,
                           preference_average_log_probs=pref_avg, sft_average_log_probs=sft_avg)
    ours = dpo_loss(sums, lengths[order], ref_sums, config)
    assert float(ours.loss) == pytest.approx(float(expected), rel=1e-6)


def test_sft_averaging_follows_preference_averaging_unless_set() -> None:
    assert DPOParams(preference_average_log_probs=True).effective_sft_average_log_probs is True
    assert DPOParams(preference_average_log_probs=False).effective_sft_average_log_probs is False
    assert DPOParams(preference_average_log_probs=True, sft_average_log_probs=False).effective_sft_average_log_probs is False
    base = flat_config(model="", dataset_dir="", output_dir="", preference_average_log_probs=True)
    assert base.loss_config().sft_average_log_probs is True


def test_weight_decay_skips_biases_norms_and_embeddings(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "m"))
    decay, no_decay = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "model.embed_tokens.weight" in kept and all("norm" in n or "embed" in n for n in kept)
    assert "lm_head.weight" in decayed and any("q_proj" in n for n in decayed)
    assert len(decayed) + len(kept) == len(list(model.parameters()))


@pytest.mark.parametrize("name,expected", [
    ("constant", [0.0, 0.5, 1.0, 1.0, 1.0, 1.0]),
    ("linear", [0.0, 0.5, 1.0, 0.75, 0.5, 0.25]),
    ("cosine", [0.0, 0.5, 1.0, (1 + math.cos(math.pi * 0.25)) / 2, 0.5, (1 + math.cos(math.pi * 0.75)) / 2]),
])
def test_schedules_warm_up_then_decay(name: str, expected: list[float]) -> None:
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([param], lr=1.0)
    scheduler = build_scheduler(optimizer, name, total_steps=6, warmup=2)
    seen = []
    for _ in range(6):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx(expected)


def test_epoch_batches_group_by_length_and_cover_every_pair_once() -> None:
    import numpy as np

    sizes = np.array([10, 200, 15, 190, 12, 210, 11, 205] * 8, dtype=np.int32)
    batches = epoch_batches(sizes, 4, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    spread = [sizes[b].max() - sizes[b].min() for b in batches]
    assert max(spread) < 50  # short and long rows are not mixed
    assert epoch_batches(sizes, 4, seed=1, epoch=0) == batches != epoch_batches(sizes, 4, seed=1, epoch=1)


def test_every_rank_gets_a_share_and_weights_restore_the_global_mean() -> None:
    batch = [7, 3, 9]  # a last batch smaller than the world of 4
    shares = [rank_share(batch, rank, 4, pairs_in_step=3) for rank in range(4)]
    assert [s.indices for s in shares] == [[7], [3], [9], [7]]
    assert [s.weight for s in shares] == [4 / 3, 4 / 3, 4 / 3, 0.0]
    # DDP averages over ranks: sum(weight * mean loss) / world == the mean over the batch's pairs
    losses = {7: 1.0, 3: 2.0, 9: 6.0}
    averaged = sum(s.weight * sum(losses[i] for i in s.indices) / len(s.indices) for s in shares) / 4
    assert averaged == pytest.approx(3.0)
    chunks = [list(sharded_chunks(5, rank, 2, 2)) for rank in range(2)]
    assert len(chunks[0]) == len(chunks[1]) == 2  # the same number of forwards on every rank
    assert sorted(i for c in chunks for part, real in c for i in part[:real]) == [0, 1, 2, 3, 4]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", hidden=64)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _run(tiny: Path, data: Path, out: Path, **overrides) -> dict:  # noqa: ANN003
    settings = {"finetuning_type": "all_weights", "batch_size": 8, "learning_rate": 1e-5, "beta": 0.1, **overrides}
    config = flat_config(model=str(tiny), dataset_dir=str(data), output_dir=str(out), **settings)
    return train(config)


def test_bf16_step_moves_every_fp32_master_weight(tiny: Path, tmp_path: Path) -> None:
    """A bf16 weight cannot take a 1e-5 AdamW update (below its resolution); an fp32 master weight can."""
    data = toy_dataset(tmp_path / "data")
    _run(tiny, data, tmp_path / "bf16", precision="bf16", max_steps=1)
    before, after = _weights(tiny), _weights(tmp_path / "bf16/final")
    for name, initial in before.items():
        if "embed_tokens" in name or "lm_head" in name:
            continue  # rows of tokens absent from the batch get no gradient
        moved = (after[name] != initial).float().mean()
        assert after[name].dtype == torch.float32
        assert float(moved) == 1.0, f"{name}: only {float(moved):.1%} of the weights moved"


def test_bf16_autocast_tracks_fp32_and_fp16_stays_finite(tiny: Path, tmp_path: Path) -> None:
    data = toy_dataset(tmp_path / "data")
    runs = {}
    for precision in ("fp32", "bf16", "fp16"):
        _run(tiny, data, tmp_path / precision, precision=precision, epochs=3, learning_rate=1e-3)
        runs[precision] = [json.loads(x) for x in (tmp_path / precision / "metrics.jsonl").read_text().splitlines()]
    fp32, bf16, fp16 = ([r["loss"] for r in runs[p]] for p in ("fp32", "bf16", "fp16"))
    assert len(fp32) == len(bf16) == 9
    assert max(abs(a - b) for a, b in zip(fp32, bf16, strict=True)) < 0.02
    assert fp32[-1] < fp32[0] - 0.05 and bf16[-1] < bf16[0] - 0.05  # both learn, about equally
    assert all(math.isfinite(x) for x in fp16)
    assert all(torch.isfinite(w).all() for w in _weights(tmp_path / "fp16/final").values())


def test_metrics_reach_tensorboard(tiny: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = toy_dataset(tmp_path / "data")
    summary = _run(tiny, data, tmp_path / "out", precision="fp32", epochs=2, warmup_steps=2, lr_scheduler="linear")
    events = EventAccumulator(str(tmp_path / "out/tensorboard"))
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, summary["steps"] + 1))
    logged = [json.loads(x)["loss"] for x in (tmp_path / "out/metrics.jsonl").read_text().splitlines()]
    assert [e.value for e in loss] == pytest.approx(logged, rel=1e-6)
    assert "rewards/accuracies" in events.Tags()["scalars"]
    rates = [e.value for e in events.Scalars("train/learning_rate")]
    assert rates[0] == pytest.approx(0.5e-5) and rates[-1] == pytest.approx(0.0)  # after warmup, linear to 0


def test_collate_pads_to_a_multiple() -> None:
    batch = collate([EncodedPair([1, 2, 3], [4, 5], [6])], [0], pad_id=0, pad_to_multiple_of=8)
    assert batch.input_ids.shape == (2, 8) and completion_counts(batch) == [2, 1]
