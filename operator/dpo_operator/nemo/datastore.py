"""Copy a preference dataset into NeMo Datastore (its Hugging Face Hub API under ``/v1/hf``).

This runs in the upload pod (``dpo-operator upload-dataset``), which can mount the dataset's PVC; the operator
itself never needs the volume. The source is a dataset directory or another Hub-compatible repo.
"""

from __future__ import annotations

import json
from pathlib import Path

from dpo_operator.collect.dataset import METRICS_FILE, TRAIN_FILE, VALIDATION_FILE, DatasetFiles, read_hub, write_hub

__all__ = ["hf_endpoint", "read_directory", "read_hub", "upload", "result_json"]


def hf_endpoint(datastore_url: str) -> str:
    return datastore_url.rstrip("/") + "/v1/hf"


def _count(jsonl: bytes) -> int:
    return sum(1 for line in jsonl.splitlines() if line.strip())


def read_directory(path: Path) -> DatasetFiles:
    missing = [name for name in (TRAIN_FILE, VALIDATION_FILE) if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(f"dataset directory {path} lacks {', '.join(missing)}")
    metrics = path / METRICS_FILE
    return DatasetFiles((path / TRAIN_FILE).read_bytes(), (path / VALIDATION_FILE).read_bytes(),
                        metrics.read_bytes() if metrics.is_file() else b"{}")


def upload(files: DatasetFiles, datastore_url: str, repo_id: str, token: str | None) -> dict[str, object]:
    """One commit into ``repo_id`` (created if needed); answers the row counts for the operator."""
    if _count(files.training) == 0:
        raise ValueError("the training file is empty: nothing to train on")
    write_hub(files, hf_endpoint(datastore_url), repo_id, "main", token, "dataset uploaded by dpo-operator")
    return {"repoId": repo_id, "filesUrl": f"hf://datasets/{repo_id}",
            "pairs": {"training": _count(files.training), "validation": _count(files.validation)}}


def result_json(result: dict[str, object]) -> str:
    return json.dumps(result, sort_keys=True)
