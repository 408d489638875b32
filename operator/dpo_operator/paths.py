"""Paths inside a volume: what the workloads write to or read from must not leave the directory it belongs to.

The API refuses ``..`` segments at admission; a pod checks again, after following symlinks (a directory on a
shared PVC may be a link to anywhere), and fails deterministically (exit code 3) rather than write outside.
"""

from __future__ import annotations

from pathlib import Path


class PathEscapes(ValueError):
    """A path from the spec or the command line leaves the directory it must stay in."""


def inside(root: Path, relative: str) -> Path:
    """``root / relative`` with symlinks followed; raises :class:`PathEscapes` when that is outside ``root``."""
    base = root.resolve()
    target = (base / relative.lstrip("/")).resolve()
    if target != base and base not in target.parents:
        raise PathEscapes(f"path {relative!r} leaves its volume {root} (it resolves to {target}): refused")
    return target


def no_backsteps(path: str, what: str) -> str:
    """``path`` unless it has a ``..`` segment (a directory argument a pod was given)."""
    if ".." in path.split("/"):
        raise PathEscapes(f"{what} {path!r} has a '..' segment: paths may not leave their volume")
    return path
