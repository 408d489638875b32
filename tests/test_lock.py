"""requirements/lock.txt covers what pyproject.toml asks for, and every install path is constrained by it: a
dependency added or re-ranged without `make lock` fails here, not in next month's fresh clone."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements/lock.txt"
EXTRAS = ("test", "workload", "nat", "wandb")  # the Makefile's EXTRAS: what `make install` and the lock cover


def pins() -> dict[str, str]:
    found = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin in {LOCK.name}: {line}"
            found[canonicalize_name(name)] = version
    return found


def declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *(r for extra in EXTRAS for r in extras[extra])]
    return [r for r in map(Requirement, wanted) if canonicalize_name(r.name) != "dpo-operator"]


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    locked = pins()
    for requirement in declared():
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is not in {LOCK.name}: run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), \
            f"{LOCK.name} pins {name}=={locked[name]}, outside {requirement}: run `make lock`"


def test_torch_is_pinned_without_a_local_label() -> None:
    assert pins()["torch"] == "2.13.0"  # matches the CPU build here and the CUDA build in the workload image


def test_every_install_path_is_constrained_by_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^install:.*\n\t\$\(PIP\) install .*-c \$\(LOCK\)", makefile, re.MULTILINE)
    assert "LOCK   := requirements/lock.txt" in makefile
    for image in ("operator", "workload"):
        dockerfile = (ROOT / f"docker/{image}.Dockerfile").read_text()
        assert "COPY requirements/lock.txt" in dockerfile and "-c requirements/lock.txt" in dockerfile, image
    assert "make test" in (ROOT / ".ci/run").read_text()
