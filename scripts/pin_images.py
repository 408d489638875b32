"""Pin the Dockerfiles' base images by digest: ``FROM image:tag`` becomes ``FROM image:tag@sha256:<digest>``.

A tag moves (``python:3.12-slim`` is rebuilt for every Debian and Python patch release); a digest names one image.
``make pin-images`` resolves each unpinned FROM of ``docker/*.Dockerfile`` with ``docker buildx imagetools
inspect`` or, without docker, ``crane digest`` (both read the registry: it must be reachable), then rewrites the
line. Nothing is written unless every image resolved. ``--check`` only lists what is unpinned.

Images that may stay unpinned are listed in ``docker/unpinned-images.txt``, one ``image:tag  # why`` a line;
``tests/test_image_pins.py`` fails on a FROM that is neither pinned nor listed there with a reason.

Run: ``python scripts/pin_images.py [--check] [Dockerfile ...]``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
ALLOW_LIST = ROOT / "docker" / "unpinned-images.txt"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
FROM = re.compile(r"^(?P<lead>\s*FROM\s+)(?P<flags>(?:--\S+\s+)*)(?P<image>\S+)(?P<rest>(?:\s+AS\s+\S+)?\s*)$",
                  re.IGNORECASE)


@dataclass(frozen=True)
class BaseImage:
    """One ``FROM`` line that names an image (not an earlier build stage)."""

    path: Path
    line: int  # 1-based
    image: str

    @property
    def pinned(self) -> bool:
        return DIGEST.search(self.image) is not None

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path}:{self.line}: {self.image}"


def base_images(path: Path, text: str | None = None) -> list[BaseImage]:
    """The images ``path``'s FROM lines name; comments, and FROMs of an earlier stage (``AS name``), are left out."""
    text = path.read_text() if text is None else text
    stages: set[str] = set()
    found: list[BaseImage] = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = FROM.match(line)
        if match is None:
            continue
        image = match["image"]
        alias = match["rest"].split()
        if image.lower() not in stages:
            found.append(BaseImage(path, number, image))
        if len(alias) == 2:
            stages.add(alias[1].lower())
    return found


def allowed_unpinned(path: Path = ALLOW_LIST) -> dict[str, str]:
    """The allow-list: image -> why it may stay unpinned. A line without a ``# why`` is an error."""
    allowed: dict[str, str] = {}
    if not path.exists():
        return allowed
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        image, _, why = line.partition("#")
        if not why.strip():
            raise ValueError(f"{path.name}:{number}: {image.strip()} is listed without a reason (`image:tag  # why`)")
        allowed[image.strip()] = why.strip()
    return allowed


def pin(text: str, digests: dict[str, str]) -> str:
    """``text`` with each FROM whose image is in ``digests`` rewritten as ``image@digest``."""
    lines = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        match = FROM.match(body)
        if match is not None and match["image"] in digests:
            body = f"{match['lead']}{match['flags']}{match['image']}@{digests[match['image']]}{match['rest']}"
            line = body + line[len(line.rstrip("\r\n")):]
        lines.append(line)
    return "".join(lines)


def _run(command: list[str]) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120).stdout.strip()


def resolve_digest(image: str, run: Callable[[list[str]], str] = _run) -> str:
    """``sha256:...`` of ``image``'s manifest (list) in its registry, by docker buildx, else crane."""
    if shutil.which("docker"):
        try:
            answer = run(["docker", "buildx", "imagetools", "inspect", image, "--format", "{{json .Manifest}}"])
            digest = json.loads(answer)["digest"]
        except (subprocess.SubprocessError, ValueError, KeyError, TypeError) as exc:
            if not shutil.which("crane"):
                raise LookupError(f"docker buildx imagetools inspect {image} failed: {exc}") from None
        else:
            return _checked(image, digest)
    if shutil.which("crane"):
        try:
            return _checked(image, run(["crane", "digest", image]))
        except subprocess.SubprocessError as exc:
            raise LookupError(f"crane digest {image} failed: {exc}") from None
    raise LookupError("neither docker (with buildx) nor crane is installed: one of them resolves a tag to its digest")


def _checked(image: str, digest: str) -> str:
    digest = digest.strip()
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise LookupError(f"{image}: the registry answered {digest!r}, not a sha256 digest")
    return digest


def unpinned(paths: Iterable[Path]) -> list[BaseImage]:
    return [image for path in paths for image in base_images(path) if not image.pinned]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dockerfiles", nargs="*", type=Path, default=DOCKERFILES)
    parser.add_argument("--check", action="store_true", help="only list the unpinned FROM lines (exit 1 if any)")
    args = parser.parse_args(argv)
    todo = unpinned(args.dockerfiles)
    if args.check or not todo:
        for line in todo:
            print(f"unpinned: {line}")
        return 1 if todo else 0
    digests: dict[str, str] = {}
    try:
        for name in dict.fromkeys(line.image for line in todo):
            digests[name] = resolve_digest(name)
            print(f"{name} -> {digests[name]}")
    except LookupError as exc:
        print(f"nothing rewritten: {exc}", file=sys.stderr)
        return 2
    for path in args.dockerfiles:
        text = path.read_text()
        if (pinned := pin(text, digests)) != text:
            path.write_text(pinned)
            print(f"pinned {path}")
    stale = [image for image in allowed_unpinned() if image in digests]
    if stale:
        print(f"now pinned, remove from {ALLOW_LIST.name}: {', '.join(stale)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
