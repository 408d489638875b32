"""What a report shows, gathered: the resource's status from the API (always), its dataset's (the collection a
training job trained on), and files from a local copy of its output directory (``--from-dir``: the PVC is not
reachable from where the CLI runs on a real cluster; copy it with ``kubectl cp`` from a pod that mounts it, or, on
the dev cluster, point at ``.dev-cluster/pvc/<claim>/<path>``).

Files read from that directory: ``plots/*.png`` (drawn from ``metrics.jsonl`` here when missing and matplotlib is
installed), ``summary.json`` (the trainer's), ``metrics.json`` (a collection's dataset summary).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpo_operator.api import ALL_KINDS, KindInfo
from dpo_operator.api import collection as collection_api
from dpo_operator.kube import custom_objects

log = logging.getLogger(__name__)


class ReportError(ValueError):
    """The report cannot be made; the message says why."""


@dataclass
class ReportData:
    kind: str
    namespace: str
    name: str
    resource: dict[str, Any]
    dataset: dict[str, Any] | None = None  # the DPOCollection a training job trained on
    dataset_metrics: dict[str, Any] | None = None  # a collection's metrics.json
    trainer_summary: dict[str, Any] | None = None  # the trainer's summary.json
    images: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG
    notes: list[str] = field(default_factory=list)  # what could not be included, and why


def resolve_kind(name: str) -> KindInfo:
    """``dpotrainingjob``, ``dpotrainingjobs``, ``DPOTrainingJob`` or a short name such as ``dpotj``."""
    wanted = name.lower()
    for kind in ALL_KINDS:
        if wanted in (kind.kind.lower(), kind.plural, kind.singular, *kind.short_names):
            return kind
    known = ", ".join(k.singular for k in ALL_KINDS)
    raise ReportError(f"unknown kind {name!r}: use one of {known} (or their short names)")


def _json_file(path: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _images(directory: Path, notes: list[str]) -> dict[str, bytes]:
    """The PNG curves beside the metrics, or drawn here from ``metrics.jsonl`` when the directory has none."""
    found = sorted((directory / "plots").glob("*.png"))
    if found or not (directory / "metrics.jsonl").is_file():
        return {path.name: path.read_bytes() for path in found}
    from dpo_operator.train.plots import write_plots

    with tempfile.TemporaryDirectory(prefix="dpo-report-") as scratch:
        (Path(scratch) / "metrics.jsonl").write_bytes((directory / "metrics.jsonl").read_bytes())
        drawn = write_plots(Path(scratch))
        if not drawn:
            notes.append("no plots/ in --from-dir, and matplotlib is not installed here to draw them from "
                         "metrics.jsonl (pip install matplotlib)")
        return {path.name: path.read_bytes() for path in drawn}


def gather(kind_name: str, namespace: str, name: str, from_dir: Path | None) -> ReportData:
    kind = resolve_kind(kind_name)
    resource = custom_objects.read(kind, namespace, name)
    if resource is None:
        raise ReportError(f"{kind.kind} {namespace}/{name} not found")
    data = ReportData(kind.kind, namespace, name, resource)
    ref = (((resource.get("spec") or {}).get("dataset") or {}).get("collectionRef") or {}).get("name")
    if ref:
        data.dataset = custom_objects.read(collection_api.KIND, namespace, ref)
        if data.dataset is None:
            data.notes.append(f"the DPOCollection {ref} it trained on no longer exists: no dataset summary")
    if from_dir is None:
        data.notes.append("no --from-dir: the curves and file summaries are left out (status figures only)")
        return data
    if not from_dir.is_dir():
        raise ReportError(f"--from-dir {from_dir} is not a directory")
    data.trainer_summary = _json_file(from_dir / "summary.json")
    data.dataset_metrics = _json_file(from_dir / "metrics.json")
    data.images = _images(from_dir, data.notes)
    if not data.images and kind.kind != collection_api.KIND.kind:
        data.notes.append(f"no training curves in {from_dir} (plots/*.png or metrics.jsonl)")
    return data
