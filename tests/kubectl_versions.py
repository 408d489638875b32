"""The kubectl binaries the kubectl tests run with: the oldest and the newest installed here.

Where several versions sit beside the ``kubectl`` on PATH (``kubectl.1.27`` ... ``kubectl.1.33``, as the Cloud SDK
installs them), the tests run with the oldest and the newest; otherwise with ``kubectl`` alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

_VERSIONED = re.compile(r"kubectl\.(\d+)\.(\d+)")


def installed_kubectls() -> list[str]:
    found = shutil.which("kubectl")
    if found is None:
        return []
    folder = Path(os.path.realpath(found)).parent
    versioned = sorted((tuple(int(n) for n in m.groups()), str(p)) for p in folder.iterdir()
                       if (m := _VERSIONED.fullmatch(p.name)) and os.access(p, os.X_OK))
    if len(versioned) < 2:
        return [found]
    return [versioned[0][1], versioned[-1][1]]


def version_id(binary: str) -> str:
    """A test id for a binary: ``kubectl.1.27`` or ``kubectl``."""
    return Path(binary).name


@pytest.fixture(scope="module", params=installed_kubectls() or [None], ids=lambda b: version_id(b) if b else "none")
def kubectl_on_path(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """Puts one of :func:`installed_kubectls` first on PATH as ``kubectl`` for a test module (each in turn)."""
    binary = request.param
    if binary is None:
        yield None
        return
    folder = tmp_path_factory.mktemp("kubectl")
    (folder / "kubectl").symlink_to(binary)
    before = os.environ["PATH"]
    os.environ["PATH"] = f"{folder}{os.pathsep}{before}"
    try:
        yield binary
    finally:
        os.environ["PATH"] = before


def client_minor() -> int:
    """The minor version of the ``kubectl`` now first on PATH (``kubectl version --client``)."""
    done = subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True, text=True,
                          check=True, timeout=30)
    return int(re.sub(r"\D", "", json.loads(done.stdout)["clientVersion"]["minor"]))
