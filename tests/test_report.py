"""``dpo-operator report``: a real training run's output and a resource's status become one self-contained HTML
page, which a real headless Chromium renders (text, tables and the inlined curves)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dpo_operator.cli import main
from tests.kubehelpers import Kube

pytestmark = pytest.mark.e2e
CHROMIUM = next((found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))),
                None)
TAB_BLUE, TAB_ORANGE = (31, 119, 180), (255, 127, 14)  # matplotlib's first two colours: the curves


@pytest.fixture(scope="module")
def training_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from dpo_operator.train.trainer import train
    from tests.datasets import toy_dataset
    from tests.tinymodel import build_tiny_model
    from tests.trainconfig import flat_config

    root = tmp_path_factory.mktemp("report")
    config = flat_config(model=str(build_tiny_model(root / "model")), dataset_dir=str(toy_dataset(root / "data")),
                         output_dir=str(root / "out"), finetuning_type="all_weights", epochs=4, batch_size=4,
                         learning_rate=1e-3, validate_every_steps=6)
    train(config)
    return root / "out"


def set_status(kube: Kube, kind: str, namespace: str, name: str, status: dict) -> None:
    plural = {"DPOCollection": "dpocollections", "DPOTrainingJob": "dpotrainingjobs"}[kind]
    kube.custom.patch_namespaced_custom_object_status("dpo.ai", "v1alpha1", namespace, plural, name,
                                                      {"status": status})


def make_resources(kube: Kube, namespace: str) -> None:
    kube.require_emulated()  # the statuses are written here, as the operator would
    from tests.test_collection_e2e import SPEC as COLLECTION_SPEC
    from tests.test_training_e2e import TRAINING

    kube.create("DPOCollection", namespace, "pairs", COLLECTION_SPEC)
    set_status(kube, "DPOCollection", namespace, "pairs", {
        "phase": "Succeeded", "reason": "Collected", "message": "collected 32 preference pairs",
        "pairs": {"total": 32, "training": 24, "validation": 8}, "candidates": 128, "meanScoreDiff": 0.75,
        "datasetLocation": "pvc://dpo-data/datasets/ttt"})
    kube.create("DPOTrainingJob", namespace, "dpo", {k: v for k, v in TRAINING.items() if k != "deployOnCompletion"})
    set_status(kube, "DPOTrainingJob", namespace, "dpo", {
        "phase": "Succeeded", "reason": "Trained", "message": "training completed",
        "outputModel": "pvc://dpo-data/models/dpo/final",
        "progress": {"phase": "done", "percentageDone": 100.0, "stepsCompleted": 24, "totalSteps": 24,
                     "smoothedTrainLoss": 0.4123, "eta": "0s"},
        "validation": {"pairs": 8, "loss": 0.3051, "rewardAccuracy": 1.0, "rewardMargin": 1.0305,
                       "logpsAccuracy": 0.875, "logpsPerTokenAccuracy": 1.0,
                       "reference": {"logpsAccuracy": 0.25, "logpsPerTokenAccuracy": 0.5}},
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "Trained", "message": "training completed",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}]})


def test_the_report_is_one_self_contained_page_that_chromium_renders(
        kube: Kube, namespace: str, kubeconfig: Path, training_output: Path, tmp_path: Path) -> None:
    make_resources(kube, namespace)
    page = tmp_path / "report.html"
    assert main(["report", "dpotj/dpo", "-n", namespace, "--from-dir", str(training_output), "-o", str(page),
                 "--kubeconfig", str(kubeconfig)]) == 0
    html = page.read_text()
    assert html.count("src='data:image/png;base64,") == 3  # loss, reward margin, accuracy: inlined
    assert not re.search(r"(src|href)=['\"]?(https?:|//|file:)", html) and "<script" not in html

    if CHROMIUM is None:
        pytest.skip("no Chromium here (apt-get install chromium; .ci/run installs it): the page was checked as text")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--allow-file-access-from-files"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    for text in ("DPOTrainingJob", "Validation: trained policy and reference", "Training curves", "DPOCollection",
                 "likelihood preference accuracy", "0.875", "Trainer summary", "smoothed train loss"):
        assert text in dom, text
    shot = tmp_path / "report.png"
    subprocess.run([CHROMIUM, *flags, "--window-size=1200,2600", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True, cwd=tmp_path)
    import matplotlib.image

    pixels = (matplotlib.image.imread(shot)[:, :, :3] * 255).round().astype(int)

    def present(colour: tuple[int, int, int]) -> int:
        return int((abs(pixels - colour).sum(axis=-1) <= 24).sum())

    assert pixels.shape[:2] == (2600, 1200)
    assert present(TAB_BLUE) > 500 and present(TAB_ORANGE) > 50  # the curves and the validation points were drawn
    if os.environ.get("DPO_REPORT_SCREENSHOT"):  # docs/report.png is made this way
        shutil.copyfile(shot, os.environ["DPO_REPORT_SCREENSHOT"])


def test_without_a_directory_the_report_says_what_is_missing(kube: Kube, namespace: str, kubeconfig: Path,
                                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_resources(kube, namespace)
    set_status(kube, "DPOCollection", namespace, "pairs", {"message": "collected 32 pairs <script>alert(1)</script>"})
    page = tmp_path / "report.html"
    assert main(["report", "dpocollection/pairs", "-n", namespace, "-o", str(page),
                 "--kubeconfig", str(kubeconfig)]) == 0
    html = page.read_text()
    assert "DPOCollection" in html and "<img" not in html
    assert "collected 32 pairs &lt;script&gt;alert(1)&lt;/script&gt;" in html  # status text is escaped, not markup
    assert "no --from-dir" in capsys.readouterr().err
    assert main(["report", "dpotj/missing", "-n", namespace, "-o", str(page), "--kubeconfig", str(kubeconfig)]) == 1
    assert main(["report", "widgets/x", "-n", namespace, "-o", str(page), "--kubeconfig", str(kubeconfig)]) == 1
    assert "unknown kind 'widgets'" in capsys.readouterr().err
