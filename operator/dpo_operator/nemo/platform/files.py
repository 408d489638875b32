"""Filesets of the NeMo platform's files service: a dataset written into one, idempotently.

``POST /apis/files/v2/workspaces/{ws}/filesets`` creates the fileset (409: it exists, read it back);
``PUT .../filesets/{name}/-/{path}`` writes a file. A file already there with the same content is not sent again
(the listing gives sizes; a file of the same size is read back and compared), so a retried upload Job costs no
second upload of what is already in place. This runs in the upload pod (it can mount the dataset's PVC)."""

from __future__ import annotations

from typing import Any

from dpo_operator.collect.dataset import DatasetFiles
from dpo_operator.nemo.platform.client import PlatformClient
from dpo_operator.nemo.platform.dpo_rows import named_files

SERVICE = "files"


def ensure_fileset(client: PlatformClient, name: str, description: str) -> dict[str, Any]:
    """The dataset fileset ``name`` of the client's workspace, created when missing."""
    body = {"name": name, "description": description[:255], "purpose": "dataset"}
    created = client.request("POST", SERVICE, "filesets", json=body, ok=(409,))
    if isinstance(created, dict) and created.get("name") == name:
        return created
    return client.request("GET", SERVICE, "filesets", name) or {}


def listed_sizes(client: PlatformClient, fileset: str) -> dict[str, int]:
    answer = client.request("GET", SERVICE, "filesets", fileset, "files") or {}
    return {str(f.get("path")): int(f.get("size") or 0) for f in answer.get("data") or [] if isinstance(f, dict)}


def _same(client: PlatformClient, fileset: str, path: str, content: bytes, sizes: dict[str, int]) -> bool:
    if sizes.get(path) != len(content):
        return False
    return bool(client.request("GET", SERVICE, "filesets", fileset, "-", path, raw=True) == content)


def put_file(client: PlatformClient, fileset: str, path: str, content: bytes, sizes: dict[str, int]) -> bool:
    """Write ``path`` unless the same content is there already; answers whether it was written."""
    if _same(client, fileset, path, content, sizes):
        return False
    client.request("PUT", SERVICE, "filesets", fileset, "-", path, content=content,
                   headers={"Content-Type": "application/octet-stream"})
    return True


def _count(jsonl: bytes) -> int:
    return sum(1 for line in jsonl.splitlines() if line.strip())


def upload_dataset(files: DatasetFiles, client: PlatformClient, fileset: str, description: str) -> dict[str, Any]:
    """Write the dataset's files into the fileset; answers the upload result for the operator (``filesUrl`` is the
    fileset reference ``workspace/name`` a job names as its dataset)."""
    if _count(files.training) == 0:
        raise ValueError("the training file is empty: nothing to train on")
    ensure_fileset(client, fileset, description)
    sizes = listed_sizes(client, fileset)
    for path, content in named_files(files):
        put_file(client, fileset, path, content, sizes)
    return {"repoId": fileset, "filesUrl": f"{client.workspace}/{fileset}",
            "pairs": {"training": _count(files.training), "validation": _count(files.validation)}}

