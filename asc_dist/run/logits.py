"""Teacher logits and fused targets as Parquet, keyed by filename (docs/CONTRACTS.md).

Raw per-teacher logits are stored, never pre-averaged or pre-softmaxed, so any fusion can be refitted later
(docs/CONTRACTS.md). Rows are aligned by `filename`, never by row order: the anchors that index
teacher outputs by CSV row number break silently when someone reorders a file (fschmid56/EfficientAT keys its teacher predictions by file name for this reason).
Columns become numpy through the Arrow buffers (`fixed_size_list.values.to_numpy().reshape`), so reading
12 teachers x 230,350 clips costs under a second of CPU; there is no Python loop over rows.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from asc_dist.errors import LogitsError
from asc_dist.run.atomic import atomic_path
from asc_dist.run.layout import RunLayout

_ROW_COLUMNS = ("filename", "split", "device", "label")
DIGEST_KEY = "sha256"


@dataclass(frozen=True)
class TeacherMeta:
    """What a logits file says about itself, read from the Parquet footer only."""

    name: str
    path: Path
    classes: list[str]
    config: dict[str, Any]
    fingerprint: str
    rows: int


@dataclass(frozen=True, eq=False)
class TeacherLogits:
    """All teachers' logits on one clip set, rows sorted by filename: `logits[t, n]` is teacher t on clip n."""

    names: list[str]
    filenames: np.ndarray  # [N] str (object), sorted
    splits: np.ndarray  # [N] str (object)
    devices: np.ndarray  # [N] str (object)
    labels: np.ndarray  # [N] int64
    logits: np.ndarray  # [T, N, C] float32
    classes: list[str]
    configs: dict[str, dict[str, Any]]
    fingerprint: str

    def mask(self, split: str) -> np.ndarray:
        return self.splits == split

    def subset(self, names: Sequence[str]) -> TeacherLogits:
        """The same clips with only `names`, in that order."""
        index = [self.names.index(n) for n in names]
        return TeacherLogits(
            list(names), self.filenames, self.splits, self.devices, self.labels,
            self.logits[index], self.classes, {n: self.configs[n] for n in names}, self.fingerprint,
        )


@dataclass(frozen=True, eq=False)
class FusedTargets:
    """One target per clip (fused or averaged logits), rows sorted by filename."""

    filenames: np.ndarray
    splits: np.ndarray
    devices: np.ndarray
    labels: np.ndarray
    logits: np.ndarray  # [N, C] float32
    classes: list[str]
    teachers: list[str]
    fingerprint: str

    def rows_for(self, filenames: Sequence[str] | np.ndarray) -> np.ndarray:
        """Row of each filename in this table, -1 where it has no target (a mask, EfficientAT style)."""
        found = pc.index_in(pa.array(np.asarray(filenames, dtype=object), pa.string()),
                            value_set=pa.array(self.filenames, pa.string()))
        return found.fill_null(-1).to_numpy().astype(np.int64)


def teacher_logits_path(run_dir: str | os.PathLike, name: str) -> Path:
    return RunLayout.of(run_dir).teacher_logits(name)


def targets_path(run_dir: str | os.PathLike) -> Path:
    return RunLayout.of(run_dir).targets


def _check_name(name: str) -> None:
    if not name or any(ch in name for ch in "/\\=,") or name.startswith("."):
        raise LogitsError(
            f"teacher name {name!r} cannot be a folder name teacher=<name>; use letters, digits, '-', '_' or '.'"
        )


# Largest |logit| accepted. A trained classifier's logits are tens at most, and softmax saturates long before
# (float32 exp underflows past differences of ~100); fused logits are scaled by a temperature of a few. A flipped
# exponent bit gives 1e30 and more: 1e4 leaves a hundredfold margin above anything real and catches those.
LOGIT_BOUND = 1e4


def _check_finite(logits: np.ndarray, what: str) -> None:
    if not np.isfinite(logits).all():
        bad = int(np.count_nonzero(~np.isfinite(logits).all(axis=-1)))
        raise LogitsError(
            f"{what} has NaN or infinite logits in {bad} clips; re-score that teacher "
            "(a diverged model or a broken checkpoint) or leave it out with --teachers"
        )
    peak = float(np.abs(logits).max()) if logits.size else 0.0
    if peak > LOGIT_BOUND:
        raise LogitsError(f"{what} has a logit of magnitude {peak:.3g}, beyond any trained model's ({LOGIT_BOUND:g}); "
                          "the file is corrupt or the model diverged: re-score that teacher")


# What a damaged file makes the Parquet reader raise (a corrupt footer can fail in many ways, none of them a bug)
_DAMAGE = (OSError, pa.ArrowException, ValueError, KeyError, IndexError, TypeError, OverflowError, MemoryError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _digest(table: pa.Table, meta: dict[str, str]) -> str:
    """SHA-256 of every column and the metadata: page checksums cover the data pages, this also the footer."""
    h = hashlib.sha256()
    for key in sorted(k for k in meta if k != DIGEST_KEY):
        h.update(f"{key}={meta[key]}\0".encode())
    for name in table.column_names:
        col = table[name].combine_chunks()
        h.update(name.encode())
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            # the offsets and the bytes they delimit, straight from Arrow's buffers (no Python strings)
            width = np.int64 if pa.types.is_large_string(col.type) else np.int32
            offsets = np.frombuffer(col.buffers()[1], dtype=width)[col.offset : col.offset + len(col) + 1].astype(np.int64)
            h.update((offsets - offsets[0]).tobytes())
            h.update(memoryview(col.buffers()[2])[offsets[0] : offsets[-1]] if len(col) else b"")
        elif pa.types.is_fixed_size_list(col.type):
            h.update(col.flatten().to_numpy(zero_copy_only=False).tobytes())
        else:
            h.update(col.to_numpy(zero_copy_only=False).tobytes())
    return h.hexdigest()


def _read(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read with page checksums verified and the whole-file digest checked; any damage is one LogitsError."""
    fix = "delete it and re-run the step that wrote it (teachers or fusion)"
    try:
        table = pq.read_table(path, page_checksum_verification=True)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    except _DAMAGE as exc:
        raise LogitsError(f"{path} is damaged ({_first_line(exc)}); {fix}") from None
    if meta.get(DIGEST_KEY) != _digest(table.replace_schema_metadata(None), meta):
        raise LogitsError(f"{path} does not match its own checksum (a corrupted byte); {fix}")
    return table.select(columns) if columns else table


def _logits_array(logits: np.ndarray) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(logits, dtype=np.float32).reshape(-1), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, logits.shape[1])


def _row_table(filenames, splits, devices, labels, n_classes: int, what: str) -> dict[str, pa.Array]:
    cols = {
        "filename": pa.array(np.asarray(filenames, dtype=object), pa.string()),
        "split": pa.array(np.asarray(splits, dtype=object), pa.string()),
        "device": pa.array(np.asarray(devices, dtype=object), pa.string()),
        "label": pa.array(np.asarray(labels), pa.int32()),
    }
    n = len(cols["filename"])
    if any(len(c) != n for c in cols.values()):
        raise LogitsError(f"{what}: filename, split, device and label have different lengths; pass one value per clip")
    labels_np = cols["label"].to_numpy()
    if n and (labels_np.min() < 0 or labels_np.max() >= n_classes):
        raise LogitsError(f"{what}: labels must index the {n_classes} classes (0..{n_classes - 1})")
    return cols


def _write(path: Path, cols: dict[str, pa.Array], metadata: dict[str, str]) -> Path:
    """Dictionaries and statistics only on the small columns: on 230 K unique filenames and random floats
    they cost write time and (the filename dictionary) a 5x slower read, and no reader filters on them.
    Page checksums and a digest of the whole content (`_digest`) make any later corruption an error."""
    table = pa.table(cols)
    metadata = {**metadata, DIGEST_KEY: _digest(table, metadata)}
    table = table.replace_schema_metadata({k.encode(): v.encode() for k, v in metadata.items()})
    with atomic_path(path) as tmp:
        pq.write_table(
            table, tmp, use_dictionary=["split", "device"], write_statistics=["split", "device", "label"],
            write_page_checksum=True,
        )
    return path


def write_teacher_logits(
    run_dir: str | os.PathLike,
    teacher_name: str,
    filenames: Sequence[str] | np.ndarray,
    splits: Sequence[str] | np.ndarray,
    devices: Sequence[str] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    logits: np.ndarray,
    classes: Sequence[str],
    teacher_config: dict[str, Any],
    fingerprint: str,
) -> Path:
    """Write one teacher's raw logits [N, C] on every clip it scored; returns the file written (atomically)."""
    _check_name(teacher_name)
    what = f"teacher {teacher_name!r}"
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[1] != len(classes):
        raise LogitsError(f"{what}: logits have shape {logits.shape}, expected [clips, {len(classes)} classes]")
    _check_finite(logits, what)
    cols = _row_table(filenames, splits, devices, labels, len(classes), what)
    if len(cols["filename"]) != logits.shape[0]:
        raise LogitsError(f"{what}: {logits.shape[0]} logit rows for {len(cols['filename'])} filenames")
    cols["logits"] = _logits_array(logits)
    meta = {
        "classes": json.dumps(list(classes)),
        "teacher": json.dumps(teacher_config, sort_keys=True, default=str),
        "fingerprint": fingerprint,
    }
    return _write(teacher_logits_path(run_dir, teacher_name), cols, meta)


def _footer(path: Path) -> tuple[dict[str, str], int, pa.Schema]:
    try:
        pf = pq.ParquetFile(path)
        raw = pf.schema_arrow.metadata or {}
        return {k.decode(): v.decode() for k, v in raw.items()}, pf.metadata.num_rows, pf.schema_arrow
    except _DAMAGE as exc:
        raise LogitsError(f"{path}: not a readable Parquet file ({_first_line(exc)}); delete it and re-run the step that wrote it") from None


def read_teacher_meta(path: str | os.PathLike) -> TeacherMeta:
    """Classes, config and fingerprint from the footer, without reading the data."""
    path = Path(path)
    meta, rows, schema = _footer(path)
    missing = [k for k in ("classes", "teacher", "fingerprint") if k not in meta]
    missing += [c for c in (*_ROW_COLUMNS, "logits") if c not in schema.names]
    if missing:
        raise LogitsError(f"{path}: missing {', '.join(missing)}; write it with asc_dist.run.logits.write_teacher_logits")
    name = path.parent.name.removeprefix("teacher=")
    try:
        return TeacherMeta(name, path, json.loads(meta["classes"]), json.loads(meta["teacher"]), meta["fingerprint"], rows)
    except json.JSONDecodeError:
        raise LogitsError(f"{path}: damaged metadata; delete it and re-score that teacher") from None


def _discover(run_dir: Path, teachers: Sequence[str] | None) -> list[Path]:
    logits_dir = RunLayout.of(run_dir).logits_dir
    found = sorted(logits_dir.glob(f"teacher=*/{RunLayout.of(run_dir).teacher_logits('*').name}"))
    available = [p.parent.name.removeprefix("teacher=") for p in found]
    if not found:
        raise LogitsError(
            f"no teacher logits under {logits_dir} (expected {RunLayout.of('').teacher_logits('<name>')}); "
            "score teachers first with python -m asc_dist.teachers"
        )
    if teachers is None:
        return found
    if len(set(teachers)) != len(teachers) or not teachers:
        raise LogitsError(f"teacher list {list(teachers)} is empty or repeats a name; name each teacher once")
    unknown = [t for t in teachers if t not in available]
    if unknown:
        raise LogitsError(f"no logits for teacher(s) {unknown} under {logits_dir}; available: {available}")
    return [teacher_logits_path(run_dir, t) for t in teachers]


def _fixed_list_to_numpy(col: pa.ChunkedArray | pa.Array, n_classes: int, what: str) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not pa.types.is_fixed_size_list(arr.type) or arr.type.list_size != n_classes:
        raise LogitsError(f"{what}: logits column is {arr.type}, expected fixed_size_list<float32>[{n_classes}]")
    if arr.null_count:
        raise LogitsError(f"{what}: {arr.null_count} clips have null logits; re-score that teacher")
    values = arr.values.slice(arr.offset * n_classes, len(arr) * n_classes)
    return values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(len(arr), n_classes)


def _coverage_error(metas: list[TeacherMeta]) -> LogitsError:
    """Slow path, only on a mismatch: re-read the filenames and say which teacher lacks or repeats which clips."""
    cols = [_read(m.path, ["filename"])["filename"] for m in metas]
    sets = [set(c.to_pylist()) for c in cols]
    union = set().union(*sets)
    problems = []
    for meta, col, s in zip(metas, cols, sets):
        missing, duplicated = union - s, len(col) - len(s)
        if missing or duplicated:
            example = f", e.g. {sorted(missing)[0]!r} missing" if missing else ""
            problems.append(f"{meta.name!r}: {len(missing)} missing, {duplicated} duplicated{example}")
    return LogitsError(
        f"teachers cover different clip sets ({len(union)} clips in all): {'; '.join(problems)}; "
        "re-score those teachers on the full clip table or leave them out with --teachers"
    )


def _check_same_meta(metas: list[TeacherMeta]) -> None:
    ref = metas[0]
    for m in metas[1:]:
        if m.classes != ref.classes:
            raise LogitsError(
                f"teacher {m.name!r} has classes {m.classes} but {ref.name!r} has {ref.classes}; "
                "re-score it with the same class list"
            )
        if m.fingerprint != ref.fingerprint:
            raise LogitsError(
                f"teacher {m.name!r} was scored on data fingerprint {m.fingerprint!r} but {ref.name!r} on "
                f"{ref.fingerprint!r}; re-score it on the current clip table"
            )
    if len({m.rows for m in metas}) > 1:
        raise _coverage_error(metas)


def load_teachers(run_dir: str | os.PathLike, teachers: Sequence[str] | None = None) -> TeacherLogits:
    """Read `RUN_DIR/logits/teacher=*/part-0.parquet` (or only `teachers`), aligned by filename.

    Every teacher must cover exactly the same clips once, agree on split/device/label for each clip,
    use the same classes and data fingerprint, and hold only finite logits; otherwise LogitsError.
    Files are read one at a time, so memory holds the result plus one teacher's table.
    """
    metas = [read_teacher_meta(p) for p in _discover(Path(run_dir), teachers)]
    _check_same_meta(metas)
    names, n_classes, columns = [m.name for m in metas], len(metas[0].classes), [*_ROW_COLUMNS, "logits"]
    table = _read(metas[0].path, columns)
    first = table.select(list(_ROW_COLUMNS))  # the first teacher's rows in file order
    if pc.count_distinct(first["filename"]).as_py() != len(first):
        raise _coverage_error(metas)
    order = pc.sort_indices(first["filename"])
    order_np = order.to_numpy()
    base = first.take(order)
    logits = np.empty((len(metas), len(base), n_classes), dtype=np.float32)
    for t, meta in enumerate(metas):
        what = f"teacher {meta.name!r} ({meta.path})"
        if t:
            table = _read(meta.path, columns)
        if table["filename"].equals(first["filename"]):
            # Same row order as the first teacher (scored from the same clip table): reuse its sort.
            idx = order_np
            same = all(table[c].equals(first[c]) for c in ("split", "device", "label"))
        else:
            sort = pc.sort_indices(table["filename"])
            rows = table.select(list(_ROW_COLUMNS)).take(sort)
            if not rows["filename"].equals(base["filename"]):
                raise _coverage_error(metas)
            same = all(rows[c].equals(base[c]) for c in ("split", "device", "label"))
            idx = sort.to_numpy()
        if not same:
            raise LogitsError(
                f"{what} disagrees with {names[0]!r} on the split, device or label of some clips; "
                "re-score it from the current clip table"
            )
        np.take(_fixed_list_to_numpy(table["logits"], n_classes, what), idx, axis=0, out=logits[t])
        _check_finite(logits[t], what)
    ref = metas[0]
    return TeacherLogits(
        names=names,
        filenames=base["filename"].to_numpy(),
        splits=base["split"].to_numpy(),
        devices=base["device"].to_numpy(),
        labels=base["label"].to_numpy().astype(np.int64),
        logits=logits,
        classes=list(ref.classes),
        configs={m.name: m.config for m in metas},
        fingerprint=ref.fingerprint,
    )


def write_targets(
    run_dir: str | os.PathLike,
    filenames: Sequence[str] | np.ndarray,
    splits: Sequence[str] | np.ndarray,
    devices: Sequence[str] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    fused: np.ndarray,
    average: np.ndarray,
    classes: Sequence[str],
    teachers: Sequence[str],
    fingerprint: str,
) -> Path:
    """Write `RUN_DIR/fused/targets.parquet` (fused and uniform-average logits per clip), atomically."""
    fused, average = np.asarray(fused), np.asarray(average)
    for what, arr in (("fused targets", fused), ("averaged targets", average)):
        if arr.ndim != 2 or arr.shape[1] != len(classes):
            raise LogitsError(f"{what} have shape {arr.shape}, expected [clips, {len(classes)} classes]")
        _check_finite(arr, what)
    cols = _row_table(filenames, splits, devices, labels, len(classes), "fused targets")
    if not len(cols["filename"]) == len(fused) == len(average):
        raise LogitsError(f"fused targets: {len(fused)}/{len(average)} rows for {len(cols['filename'])} filenames")
    cols["logits"] = _logits_array(fused)
    cols["average"] = _logits_array(average)
    meta = {"classes": json.dumps(list(classes)), "teachers": json.dumps(list(teachers)), "fingerprint": fingerprint}
    return _write(targets_path(run_dir), cols, meta)


def load_targets(path: str | os.PathLike, column: str = "logits") -> FusedTargets:
    """Read fused targets (`column="logits"`) or the uniform average (`column="average"`).

    `path` is the Parquet file or a run folder holding `fused/targets.parquet`.
    """
    if column not in ("logits", "average"):
        raise LogitsError(f"target column {column!r} does not exist; use 'logits' (fused) or 'average'")
    path = Path(path)
    if path.is_dir():
        path = targets_path(path)
    if not path.is_file():
        raise LogitsError(f"no fused targets at {path}; run python -m asc_dist.fusion --run RUN_DIR first")
    meta, _, schema = _footer(path)
    if "classes" not in meta or "teachers" not in meta or column not in schema.names:
        raise LogitsError(f"{path}: not a fused-targets file; rewrite it with python -m asc_dist.fusion")
    table = _read(path, [*_ROW_COLUMNS, column])
    classes = json.loads(meta["classes"])
    table = table.take(pc.sort_indices(table["filename"]))
    values = _fixed_list_to_numpy(table[column], len(classes), str(path))
    _check_finite(values, f"{path} ({column})")
    return FusedTargets(
        filenames=table["filename"].to_numpy(),
        splits=table["split"].to_numpy(),
        devices=table["device"].to_numpy(),
        labels=table["label"].to_numpy().astype(np.int64),
        logits=values,
        classes=classes,
        teachers=json.loads(meta["teachers"]),
        fingerprint=meta.get("fingerprint", ""),
    )
