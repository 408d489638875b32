"""Where preference rows come from: files on a volume (JSONL, JSON, Parquet, Arrow, a ``datasets``
``save_to_disk`` directory with named splits) or the same files in a Hub-compatible dataset repo; and how they are
split (a validation file or split, or a seeded ratio of the training rows).

JSONL is read by ``data.PreferenceFile`` (16 bytes of index a row, exact line numbers in every message); the other
files through Hugging Face ``datasets``, memory-mapped Arrow: the host memory stays flat however large the file.
A source's rows reach the trainer and the data check as ``PreferenceRows``: normalised to our format
(``formats``), ties dropped (counted), in a fixed order of indices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dpo_operator.train.formats import FormatError, Normaliser, Row, RowError, for_columns

TIE_COLUMN = "overall_preference"  # HelpSteer3's: 0 is a tie, dropped


class RawRows(Protocol):
    """A file's rows as stored, by index."""

    def __len__(self) -> int: ...
    def raw(self, index: int) -> Mapping[str, Any]: ...
    def where(self, index: int) -> str: ...
    def sizes(self) -> np.ndarray: ...
    def columns(self) -> list[str]: ...
    def values(self, column: str) -> np.ndarray: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Reading:
    """How to read a dataset directory: the spec's ``dataset`` settings, as plain values."""

    training: str = "training/training_file.jsonl"
    validation: str | None = "validation/validation_file.jsonl"
    training_split: str = "train"
    validation_split: str | None = None
    validation_ratio: float | None = None
    format: str = "auto"
    columns: Mapping[str, str | None] | None = None
    seed: int = 42
    validation_required: bool = False  # an explicitly named validation file must exist

    @classmethod
    def from_spec(cls, dataset: Any, seed: int) -> "Reading":
        """From ``DatasetSource`` (``api.training``); a collection's output is always our own layout."""
        files = dataset.files
        columns = dataset.columns.model_dump() if dataset.columns is not None else None
        fmt = str(getattr(dataset.format, "value", dataset.format))
        return cls(files.training, files.validation or cls.validation, files.training_split, files.validation_split,
                   files.validation_ratio, fmt, columns, seed, validation_required=files.validation is not None)

    def hub_files(self) -> list[str]:
        """The files to download from a Hub repo (a ``save_to_disk`` directory cannot be listed there)."""
        return [self.training] + ([self.validation] if self.validation and self.validation_ratio is None else [])


class ArrowRows:
    """A ``datasets.Dataset`` (memory-mapped Arrow) as ``RawRows``."""

    def __init__(self, dataset: Any, name: str) -> None:
        self.dataset, self.name = dataset, name

    def __len__(self) -> int:
        return len(self.dataset)

    def raw(self, index: int) -> Mapping[str, Any]:
        return self.dataset[int(index)]  # type: ignore[no-any-return]

    def where(self, index: int) -> str:
        return f"{self.name} row {int(index) + 1}"

    def columns(self) -> list[str]:
        return list(self.dataset.column_names)

    def values(self, column: str) -> np.ndarray:
        return np.asarray(self.dataset.data.column(column).to_numpy(zero_copy_only=False))

    def sizes(self) -> np.ndarray:
        """Text bytes a row (every string in it, nested message contents included), computed column by column."""
        import pyarrow as pa
        import pyarrow.compute as pc

        table = self.dataset.data.table if hasattr(self.dataset.data, "table") else self.dataset.data
        parts = []
        for batch in table.to_batches(max_chunksize=65536):  # chunk by chunk: the memory-mapped text is never copied
            total = np.zeros(batch.num_rows, dtype=np.int64)
            for array in batch.columns:
                total += _text_bytes(array, pa, pc)
            parts.append(total)
        total = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        if self.dataset._indices is not None:  # a filtered or shuffled Dataset: its rows, in its order
            total = total[np.asarray(self.dataset._indices.column(0).to_numpy())]
        return np.minimum(total, np.iinfo(np.int32).max).astype(np.int32)

    def close(self) -> None:
        return None


def _text_bytes(array: Any, pa: Any, pc: Any) -> np.ndarray:
    """Per element of ``array``, the bytes of the strings it holds (lists and structs walked)."""
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return np.asarray(pc.fill_null(pc.binary_length(array), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    if pa.types.is_struct(kind):
        out = np.zeros(len(array), dtype=np.int64)
        for i in range(kind.num_fields):
            out += _text_bytes(array.field(i), pa, pc)
        return out
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        inner = _text_bytes(array.flatten(), pa, pc)
        parents = np.asarray(pc.list_parent_indices(array).to_numpy(zero_copy_only=False))
        return np.bincount(parents, weights=inner, minlength=len(array)).astype(np.int64)
    return np.full(len(array), 8, dtype=np.int64)  # numbers and flags: a few bytes


class PreferenceRows:
    """Rows of one source in our format, by position: ``row(i)`` normalises the ``indices[i]``-th stored row."""

    def __init__(self, raw: RawRows, normalise: Normaliser, fmt: str, indices: np.ndarray | None = None,
                 dropped: int = 0) -> None:
        self.raw, self.normalise, self.format, self.dropped = raw, normalise, fmt, dropped
        self._indices = indices  # None: every stored row, in order (no index array at all)

    @property
    def indices(self) -> np.ndarray:
        return np.arange(len(self.raw), dtype=np.int64) if self._indices is None else self._indices

    def _stored(self, index: int) -> int:
        return index if self._indices is None else int(self._indices[index])

    def __len__(self) -> int:
        return len(self.raw) if self._indices is None else len(self._indices)

    def sizes(self) -> np.ndarray:
        return self.raw.sizes() if self._indices is None else self.raw.sizes()[self._indices]

    def where(self, index: int) -> str:
        return self.raw.where(self._stored(index))

    def row(self, index: int) -> Row:
        stored = self._stored(index)
        try:
            row = self.normalise(self.raw.raw(stored))
        except RowError:
            raise
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise RowError(f"{self.raw.where(stored)}: {exc}") from None
        if row is None:  # only rows dropped at opening are ever None
            raise RowError(f"{self.raw.where(stored)}: a tie (no preference), dropped at opening")
        return row

    def subset(self, positions: np.ndarray, dropped: int = 0) -> "PreferenceRows":
        return PreferenceRows(self.raw, self.normalise, self.format, self.indices[positions], dropped)

    def close(self) -> None:
        self.raw.close()


def _load_arrow(path: Path, split: str | None, named: str) -> ArrowRows:
    """A Parquet, JSON or Arrow file, or a ``save_to_disk`` directory (``split`` picks one of its splits)."""
    import datasets

    datasets.disable_progress_bars()
    if path.is_dir():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise FormatError(f"{named} has the splits {sorted(loaded)}, not {split!r}")
            return ArrowRows(loaded[split], f"{named}[{split}]")
        return ArrowRows(loaded, named)
    suffix = path.suffix.lower()
    if suffix == ".arrow":
        return ArrowRows(datasets.Dataset.from_file(str(path)), named)  # memory-mapped in place: no copy
    builder = {".parquet": "parquet", ".json": "json"}.get(suffix)
    if builder is None:
        raise FormatError(f"{named}: unknown file type {suffix or '(none)'}; use .jsonl, .json, .parquet, .arrow or "
                          "a directory written by datasets' save_to_disk")
    try:
        return ArrowRows(datasets.load_dataset(builder, data_files=str(path), split="train"), named)
    except datasets.exceptions.DatasetGenerationError as exc:
        raise FormatError(f"{named}: cannot read it as {builder}: {exc.__cause__ or exc}") from None


def open_raw(path: Path, split: str | None = None, named: str | None = None) -> RawRows:
    named = named or str(path)
    if not path.exists():
        raise FileNotFoundError(f"{named} does not exist")
    if path.is_file() and path.suffix.lower() == ".jsonl":
        from dpo_operator.train.jsonl import PreferenceFile

        return PreferenceFile(path)
    return _load_arrow(path, split, named)


def _first(raw: RawRows) -> Mapping[str, Any] | None:
    try:
        return raw.raw(0) if len(raw) else None
    except ValueError:
        return None


def preference_rows(raw: RawRows, reading: Reading) -> PreferenceRows:
    """``raw`` in our format; HelpSteer3 ties dropped (counted in ``dropped``)."""
    fmt, normalise = for_columns(reading.format, raw.columns(), _first(raw), reading.columns)
    if fmt != "helpsteer3":
        return PreferenceRows(raw, normalise, fmt)
    try:
        preference = np.asarray(raw.values(TIE_COLUMN), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"{TIE_COLUMN} must be a number in every row: {exc}") from None
    keep = np.flatnonzero(preference != 0)
    return PreferenceRows(raw, normalise, fmt, keep, dropped=len(preference) - len(keep))


@dataclass
class Splits:
    training: PreferenceRows
    validation: PreferenceRows | None


def open_splits(directory: Path, reading: Reading) -> Splits:
    """The training rows and the validation rows (a file or split, a seeded share of the training rows, or none)."""
    training_path = directory / reading.training
    if not training_path.exists():
        raise FileNotFoundError(f"dataset directory {directory} lacks {reading.training}")
    training = preference_rows(open_raw(training_path, reading.training_split, reading.training), reading)
    if not len(training):
        raise ValueError(f"{reading.training} holds no preference rows")
    if reading.validation_ratio is not None:
        order = np.random.default_rng(reading.seed).permutation(len(training))
        count = max(1, int(round(len(training) * reading.validation_ratio)))
        if count >= len(training):
            raise ValueError(f"dataset.files.validationRatio {reading.validation_ratio} leaves no training rows "
                             f"of {len(training)}")
        return Splits(training.subset(np.sort(order[count:]), training.dropped),  # ties count with the training rows
                      training.subset(np.sort(order[:count])))
    if training_path.is_dir():  # a save_to_disk directory: its validation split, when it has one
        split = reading.validation_split or "validation"
        try:
            validation_raw = open_raw(training_path, split, reading.training)
        except FormatError:
            if reading.validation_split:
                raise
            return Splits(training, None)
        return Splits(training, preference_rows(validation_raw, _same(reading, training)))
    if not reading.validation:
        return Splits(training, None)
    validation_path = directory / reading.validation
    if not validation_path.exists():
        if reading.validation_required:
            raise FileNotFoundError(f"dataset.files.validation {reading.validation} does not exist")
        return Splits(training, None)
    validation = preference_rows(open_raw(validation_path, reading.validation_split, reading.validation),
                                 _same(reading, training))
    return Splits(training, validation if len(validation) else None)


def _same(reading: Reading, training: PreferenceRows) -> Reading:
    """The validation rows are read in the format detected for the training rows."""
    if reading.columns is not None or training.format == "columns":
        return reading
    return Reading(**{**reading.__dict__, "format": training.format})


def download_hub(endpoint: str, repo_id: str, revision: str, token: str | None, reading: Reading,
                 target: Path) -> Path:
    """The reading's files of a Hub-compatible dataset repo at ``revision``, copied under ``target`` at their paths
    (the default validation file may be absent)."""
    import shutil
    import tempfile

    from huggingface_hub import HfApi
    from huggingface_hub.errors import EntryNotFoundError

    api = HfApi(endpoint=endpoint.rstrip("/"), token=token or False)  # never an empty bearer token
    with tempfile.TemporaryDirectory() as cache:
        for name in reading.hub_files():
            try:
                path = api.hf_hub_download(repo_id, name, repo_type="dataset", revision=revision, cache_dir=cache)
            except EntryNotFoundError:
                if name == reading.training or reading.validation_required:
                    raise FileNotFoundError(f"{name} is not in dataset repo {repo_id}@{revision}") from None
                continue
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target / name)
    return target
