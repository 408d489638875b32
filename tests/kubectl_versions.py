"""The kubectl binaries the kubectl tests run with: the oldest and the newest installed here.

Where several versions sit beside the ``kubectl`` on PATH (``kubectl.1.27`` ... ``kubectl.1.33``, as the Cloud SDK
installs them), the tests run with the oldest and the newest; otherwise with ``kubectl`` alone.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

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
