"""The workload image's NAT environment (requirements/nat-lock.txt, /opt/nat): NAT, the plugins NVIDIA's DPO
example names and the collector's dependencies pinned on Python 3.12, apart from the trainer's lock."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
NAT_IN, NAT_LOCK = ROOT / "requirements/nat.in", ROOT / "requirements/nat-lock.txt"
NOT_IN_THE_NAT_ENVIRONMENT = {"kopf", "kubernetes"}  # the operator's, not the collector's


def pins() -> dict[str, str]:
    found = {}
    for line in NAT_LOCK.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin in {NAT_LOCK.name}: {line}"
            found[canonicalize_name(name)] = version
    return found


def requirements(lines: list[str]) -> list[Requirement]:
    return [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]


def test_what_the_nat_environment_needs_is_pinned_within_range() -> None:
    locked = pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    collector = [r for r in requirements(project["dependencies"])
                 if canonicalize_name(r.name) not in NOT_IN_THE_NAT_ENVIRONMENT]
    for requirement in [*requirements(NAT_IN.read_text().splitlines()), *collector]:
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in {NAT_LOCK.name}: add it to nat.in, run `make nat-lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), \
            f"{NAT_LOCK.name} pins {name}=={locked[name]}, outside {requirement}: run `make nat-lock`"


def test_the_conflicting_pins_live_only_in_the_nat_environment() -> None:
    locked = pins()
    for plugin in ("nvidia-nat", "nvidia-nat-eval", "nvidia-nat-nemo-customizer", "nvidia-nat-langchain"):
        assert locked[plugin] == "1.9.0", plugin
    assert int(locked["huggingface-hub"].split(".")[0]) < 2  # nvidia-nat-nemo-customizer's pin
    assert int(locked["python-dateutil"].split(".")[0]) < 3 and "boto3" in locked  # nvidia-nat[eval]'s
    assert not NOT_IN_THE_NAT_ENVIRONMENT & set(locked)
    assert "--python-version 3.12" in NAT_LOCK.read_text().splitlines()[1]


def test_the_workload_image_builds_both_environments_on_python_3_12() -> None:
    dockerfile = (ROOT / "docker/workload.Dockerfile").read_text()
    assert "FROM python:3.12-slim" in dockerfile
    assert "/opt/nat/bin/pip install --no-cache-dir -r requirements/nat-lock.txt" in dockerfile
    assert "/opt/nat/bin/pip install --no-cache-dir --no-deps ." in dockerfile  # the collector, without kubernetes
    assert '".[workload,wandb]"' in dockerfile and "nat," not in dockerfile  # no NAT in the trainer's environment
    assert "DPO_NAT_PYTHON=/opt/nat/bin/python" in dockerfile
