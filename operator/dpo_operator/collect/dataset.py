"""From pairs to a DPO dataset: dedup, seeded sampling and split, JSONL rows, atomic writes.

Layout (what NeMo Customizer expects): ``training/training_file.jsonl``, ``validation/validation_file.jsonl``
and ``metrics.json``, in a directory (a PVC) or a Hugging Face Hub dataset repo (NeMo Datastore).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpo_operator.collect.events import Prompt, message_text
from dpo_operator.collect.pairs import PreferencePair

TRAIN_FILE = "training/training_file.jsonl"
VALIDATION_FILE = "validation/validation_file.jsonl"
METRICS_FILE = "metrics.json"


def deduplicate(pairs: list[PreferencePair]) -> list[PreferencePair]:
    """Drop repeated (prompt, chosen, rejected) triples; the first occurrence wins."""
    seen: set[tuple[str, str, str]] = set()
    unique = []
    for pair in pairs:
        key = (json.dumps(pair.prompt, sort_keys=True) if not isinstance(pair.prompt, str) else pair.prompt,
               pair.chosen, pair.rejected)
        if key not in seen:
            seen.add(key)
            unique.append(pair)
    return unique


def sample(pairs: list[PreferencePair], max_pairs: int | None, seed: int) -> list[PreferencePair]:
    """At most ``max_pairs`` pairs, chosen reproducibly by ``seed``, in their original order."""
    if max_pairs is None or len(pairs) <= max_pairs:
        return list(pairs)
    keep = sorted(random.Random(seed).sample(range(len(pairs)), max_pairs))
    return [pairs[i] for i in keep]


def split(items: list[Any], validation_fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Seeded shuffle, then ``max(1, int(n * (1 - fraction)))`` training items (never an empty training file).

    When nothing is left for validation (n == 1, or a fraction of 0), the last training item is reused for
    validation so that both files exist, as NeMo Customizer requires a validation file.
    """
    if not items:
        raise ValueError("no preference pairs to split")
    shuffled = list(items)
    random.Random(seed).shuffle(shuffled)
    n_train = max(1, int(len(shuffled) * (1.0 - validation_fraction)))
    train, validation = shuffled[:n_train], shuffled[n_train:]
    return train, validation or train[-1:]


def prompt_value(prompt: Prompt, full_history: bool) -> Prompt:
    """The dataset's prompt: the whole message list, or the text of the last message (checked to exist upstream)."""
    if full_history:
        return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if isinstance(prompt, str):
        return prompt
    return (message_text(prompt[-1]) or "") if prompt else ""


def to_row(pair: PreferencePair, full_history: bool) -> dict[str, Any]:
    return {"prompt": prompt_value(pair.prompt, full_history), "chosen_response": pair.chosen,
            "rejected_response": pair.rejected}


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in rows)


@dataclass
class DatasetFiles:
    """The three files of a dataset, as bytes, ready for any destination (and others beside them: the data card)."""

    training: bytes
    validation: bytes
    metrics: bytes
    extra: list[tuple[str, bytes]] = field(default_factory=list)

    def items(self) -> list[tuple[str, bytes]]:
        return [(TRAIN_FILE, self.training), (VALIDATION_FILE, self.validation), *self.extra,
                (METRICS_FILE, self.metrics)]


def write_directory(files: DatasetFiles, target: Path) -> None:
    """Write into a sibling staging directory, then swap it in with renames.

    A crash leaves either the previous dataset, or no dataset, but never a partial one under ``target``.
    """
    target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.staging-{uuid.uuid4().hex[:8]}"
    for relative, content in files.items():  # metrics.json comes last: it marks a complete dataset
        path = staging / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
    replaced = None
    if target.exists():
        replaced = target.parent / f".{target.name}.replaced-{uuid.uuid4().hex[:8]}"
        os.replace(target, replaced)
    os.replace(staging, target)
    if replaced is not None:
        shutil.rmtree(replaced, ignore_errors=True)


def write_hub(files: DatasetFiles, endpoint: str, repo_id: str, revision: str, token: str | None,
              message: str) -> None:
    """Upload all files to a Hugging Face Hub-compatible dataset repo in one commit (atomic on the server)."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from dpo_operator.nemo.datastore_hub import ensure_namespace_for_repo, upload_source, without_xet

    # NeMo Datastore: its namespace must exist before create_repo, and large files go by LFS (it has no Xet)
    datastore = ensure_namespace_for_repo(endpoint, repo_id, token)
    api = HfApi(endpoint=endpoint.rstrip("/"), token=token or False)  # never an empty bearer token
    with without_xet(datastore):
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=upload_source(content, datastore))
                      for path, content in files.items()]
        api.create_commit(repo_id, operations=operations, commit_message=message, repo_type="dataset",
                          revision=revision)


def read_hub(endpoint: str, repo_id: str, revision: str, token: str | None) -> DatasetFiles:
    """The training and validation files of a Hub-compatible dataset repo (metrics are not needed to train)."""
    import tempfile

    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint.rstrip("/"), token=token or False)
    with tempfile.TemporaryDirectory() as cache:  # a copy passes through; nothing stays in the pod's cache

        def fetch(name: str) -> bytes:
            return Path(api.hf_hub_download(repo_id, name, repo_type="dataset", revision=revision,
                                            cache_dir=cache)).read_bytes()

        return DatasetFiles(fetch(TRAIN_FILE), fetch(VALIDATION_FILE), b"{}")
