"""Every Dockerfile base image is pinned by digest, or listed in docker/unpinned-images.txt with a reason; and
scripts/pin_images.py (``make pin-images``) rewrites FROM lines as image:tag@sha256:<digest>."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import pin_images  # noqa: E402

DIGEST = "sha256:" + "ab" * 32


def test_every_base_image_is_pinned_or_allowed_with_a_reason() -> None:
    allowed = pin_images.allowed_unpinned()
    images = [image for path in pin_images.DOCKERFILES for image in pin_images.base_images(path)]
    assert {image.path.name for image in images} >= {"operator.Dockerfile", "workload.Dockerfile"}
    loose = [str(image) for image in images if not image.pinned and image.image not in allowed]
    assert not loose, f"pin these by digest (`make pin-images`) or list them in docker/unpinned-images.txt: {loose}"
    unused = set(allowed) - {image.image for image in images if not image.pinned}
    assert not unused, f"docker/unpinned-images.txt lists images no Dockerfile leaves unpinned: {unused}"


def test_from_lines_of_stages_and_comments_are_not_images(tmp_path: Path) -> None:
    text = ("# FROM commented:1\nFROM python:3.12-slim AS build\nRUN true\nFROM build\n"
            f"FROM --platform=linux/amd64 gcr.io/distroless/python3@{DIGEST} AS final\nfrom alpine:3\n")
    found = pin_images.base_images(tmp_path / "x.Dockerfile", text)
    assert [(i.line, i.image, i.pinned) for i in found] == [
        (2, "python:3.12-slim", False), (5, f"gcr.io/distroless/python3@{DIGEST}", True), (6, "alpine:3", False)]


def test_pin_rewrites_only_the_resolved_images_and_keeps_stage_names_and_flags() -> None:
    text = "FROM python:3.11-slim AS build\nCOPY . .\nFROM --platform=$BUILDPLATFORM python:3.11-slim\nFROM other:1\n"
    pinned = pin_images.pin(text, {"python:3.11-slim": DIGEST})
    assert pinned == (f"FROM python:3.11-slim@{DIGEST} AS build\nCOPY . .\n"
                      f"FROM --platform=$BUILDPLATFORM python:3.11-slim@{DIGEST}\nFROM other:1\n")


def test_an_allow_list_line_without_a_reason_is_refused(tmp_path: Path) -> None:
    listed = tmp_path / "unpinned.txt"
    listed.write_text("# comment\npython:3.12-slim  # no registry\nalpine:3\n")
    with pytest.raises(ValueError, match="alpine:3 is listed without a reason"):
        pin_images.allowed_unpinned(listed)


def test_a_registry_answer_that_is_not_a_digest_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda tool: "/usr/bin/crane" if tool == "crane" else None)
    assert pin_images.resolve_digest("python:3.12-slim", run=lambda command: DIGEST + "\n") == DIGEST
    with pytest.raises(LookupError, match="not a sha256 digest"):
        pin_images.resolve_digest("python:3.12-slim", run=lambda command: "latest")


def test_without_a_registry_tool_nothing_is_rewritten(tmp_path: Path) -> None:
    dockerfile = tmp_path / "x.Dockerfile"
    dockerfile.write_text("FROM python:3.12-slim\n")
    env = {"PATH": str(tmp_path)}  # neither docker nor crane
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "pin_images.py"), str(dockerfile)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert "neither docker (with buildx) nor crane is installed" in done.stderr
    assert dockerfile.read_text() == "FROM python:3.12-slim\n"
