"""What a training run shows while it runs and leaves behind: progress lines for the operator, readable log lines,
periodic validation in metrics.jsonl and TensorBoard, PNG curves, and the offline checks against the reference."""

from __future__ import annotations

import json
import logging
import math
import struct
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from dpo_operator.api.progress import TrainingReport, eta_text, newest  # noqa: E402
from dpo_operator.api.results import ValidationResult  # noqa: E402
from dpo_operator.train.offline import likelihood_preferences  # noqa: E402
from dpo_operator.train.progress import Ema, TrainerProgress  # noqa: E402
from dpo_operator.train.trainer import Trainer, train  # noqa: E402
from tests.datasets import toy_dataset  # noqa: E402
from tests.tinymodel import build_tiny_model  # noqa: E402
from tests.trainconfig import flat_config  # noqa: E402

pytestmark = pytest.mark.workload


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_a_run_reports_its_phases_steps_and_validation_and_draws_its_curves(
        tiny: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dpo_operator.train.progress")
    config = flat_config(model=str(tiny), dataset_dir=str(toy_dataset(tmp_path / "data")),
                         output_dir=str(tmp_path / "out"), finetuning_type="all_weights", epochs=2, batch_size=4,
                         learning_rate=1e-3, validate_every_steps=4, log_every_steps=5, progress_seconds=0.0)
    summary = train(config)
    out = capfd.readouterr().out
    reports = [TrainingReport.model_validate_json(line.removeprefix("dpo-progress ")) for line in out.splitlines()
               if line.startswith("dpo-progress ")]
    phases = [r.phase for r in reports]
    # every phase is announced, in order; validation nests inside training
    firsts = {phase: phases.index(phase) for phase in dict.fromkeys(phases)}
    assert list(firsts) == ["loading model", "reference pass", "training", "validating", "saving", "done"]
    assert reports[-1].phase == "done" and reports[-1].step == summary["steps"] == 12 == reports[-1].total_steps
    assert newest(TrainingReport, out) == reports[-1]  # what the operator would read: the last line
    # interval 0: a line a step (and one more after each validation)
    stepped = list({r.step: r for r in reports if r.phase == "training" and r.train_loss is not None}.values())
    assert [r.step for r in stepped] == list(range(1, 13))
    assert all(r.eta_seconds is not None and r.tokens_per_second for r in stepped)
    assert stepped[-1].eta_seconds == 0.0 and stepped[0].eta_seconds > 0
    assert stepped[-1].epoch == pytest.approx(2.0)

    # periodic validation: steps 4, 8, 12 in metrics.jsonl (the last one is the end's, not scored twice)
    records = [json.loads(line) for line in (tmp_path / "out/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val/loss" in r] == [4, 8, 12]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 13))
    last_val = [r for r in records if "val/loss" in r][-1]
    assert summary["validation"]["val/loss"] == last_val["val/loss"]
    assert stepped[-1].val_loss == pytest.approx(last_val["val/loss"], abs=1e-6)

    # the smoothed loss is the bias-corrected EMA of the logged losses
    ema = Ema()
    expected = [ema.add(r["loss"]) for r in records if "loss" in r]
    assert [r.smoothed_train_loss for r in stepped] == pytest.approx(expected, abs=1e-5)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "out/tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/loss")] == [4, 8, 12]

    for name in ("loss.png", "reward_margin.png", "accuracy.png"):
        assert png_size(tmp_path / "out/plots" / name) == (640, 360)

    logged = [r.getMessage() for r in caplog.records]
    assert "phase reference pass: started" in logged and any(m.startswith("phase training: done in") for m in logged)
    step_lines = [m for m in logged if m.startswith("step ")]
    assert [m.split()[1] for m in step_lines] == ["1/12", "5/12", "10/12", "12/12"]
    assert all("tokens/s ETA " in m and "(smoothed " in m for m in step_lines)
    assert any(m.startswith("validation at step 8: loss") for m in logged)


def test_offline_checks_compare_the_policy_with_the_reference_on_the_validation_split(tiny: Path,
                                                                                      tmp_path: Path) -> None:
    # equal-length responses (the sum and the per-token preference agree); the untrained model prefers neither
    rows = [{"prompt": f"Q{i % 4}: is {i} fine?", "chosen_response": "yes", "rejected_response": "nah"}
            for i in range(32)]
    data = tmp_path / "data"
    for name, part in (("training/training_file.jsonl", rows[:24]), ("validation/validation_file.jsonl", rows[24:])):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    config = flat_config(model=str(tiny), dataset_dir=str(data), output_dir=str(tmp_path / "out"),
                         finetuning_type="all_weights", epochs=3, batch_size=8, learning_rate=1e-3, plots=False)
    # the reference's figures measured directly: the untrained model's log-probs of the validation pairs
    before = Trainer(config)
    from dpo_operator.train.data import EncodedDataset, PreferenceFile

    validation = EncodedDataset(PreferenceFile(data / "validation/validation_file.jsonl"), before.tokenizer, 1024)
    logps = before.reference_logps(validation, validation.rows.sizes())
    ref_accuracy = float((logps[:, 0] > logps[:, 1]).float().mean())
    before.env.close()

    summary = train(config)
    checks = ValidationResult.from_metrics(summary["validation"])
    assert checks.pairs == 8
    assert checks.reference_logps_accuracy == pytest.approx(ref_accuracy)
    assert checks.reward_accuracy == 1.0 and checks.reward_margin > 0 and checks.loss < math.log(2)
    # training moved the policy's own likelihoods toward the chosen responses
    assert checks.logps_accuracy == 1.0 and checks.reference_logps_accuracy < 1.0


def test_likelihood_preferences_count_strict_wins_by_sum_and_per_token() -> None:
    # two pairs; rows: chosen 0, chosen 1, rejected 0, rejected 1
    sums = torch.tensor([-4.0, -9.0, -6.0, -3.0])
    counts = torch.tensor([2, 6, 6, 1])
    reference = torch.tensor([-5.0, -2.0, -5.0, -1.0])
    # policy, pair 0: by sum -4 > -6 yes, per token -2 > -1 no; pair 1: -9 > -3 no, -1.5 > -3 yes
    # reference, pair 0: a tie by sum (no), -2.5 > -0.83 no; pair 1: -2 > -1 no, -0.33 > -1 yes
    assert likelihood_preferences(sums, counts, reference).tolist() == [1.0, 1.0, 0.0, 1.0]


def test_progress_lines_are_rate_limited_but_phase_changes_always_go_out() -> None:
    now = [0.0]
    lines: list[str] = []

    class Out:
        def write(self, text: str) -> None:
            lines.extend(t for t in text.splitlines() if t)

        def flush(self) -> None:
            pass

    progress = TrainerProgress(100, True, interval_seconds=5.0, out=Out(), clock=lambda: now[0])  # type: ignore[arg-type]
    with progress.phase("training"):
        progress.training_from(0)
        for step in range(1, 21):
            now[0] = step * 1.0  # a step a second
            progress.step({"step": step, "epoch": step / 100, "loss": 0.5, "tokens_per_second": 10.0})
        assert progress.report.eta_seconds == 80.0  # 80 steps left at 1 s a step
    emitted = [TrainingReport.model_validate_json(line.removeprefix("dpo-progress ")) for line in lines]
    assert [r.step for r in emitted] == [0, 5, 10, 15, 20]  # the phase change at 0 s, then one per 5 s
    assert eta_text(80.0) == "1m20s" and eta_text(3725) == "1h02m" and eta_text(9) == "9s"
