"""Teacher logits and fused targets on real Parquet files: round trips, alignment by filename, and each error."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asc_dist.errors import LogitsError
from asc_dist.run.logits import (
    _digest,
    load_targets,
    load_teachers,
    read_teacher_meta,
    teacher_logits_path,
    write_targets,
    write_teacher_logits,
)

CLASSES = ["airport", "bus", "metro", "park"]
DEVICES = np.array(["a", "b", "c", "s1", "s4"], dtype=object)


def clips(n: int = 60, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "filenames": np.array([f"audio/clip-{i:04d}-{DEVICES[i % 5]}.wav" for i in range(n)], dtype=object),
        "splits": np.array(["train", "val", "test"], dtype=object)[np.arange(n) % 3],
        "devices": DEVICES[np.arange(n) % 5],
        "labels": rng.integers(0, len(CLASSES), n),
    }


def write(run_dir, name, rows, logits, order=None, classes=CLASSES, fingerprint="fp1"):
    order = np.arange(len(logits)) if order is None else order
    return write_teacher_logits(
        run_dir, name, *(rows[k][order] for k in ("filenames", "splits", "devices", "labels")),
        logits[order], classes, {"arch": name, "seed": 1}, fingerprint,
    )


def test_round_trip_aligns_by_filename_and_keeps_metadata(tmp_path):
    rows = clips()
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 60, 4)).astype(np.float32)
    path = write(tmp_path, "cpr-1", rows, a)
    write(tmp_path, "passt-1", rows, b, order=rng.permutation(60))  # shuffled rows: must still align

    assert path == teacher_logits_path(tmp_path, "cpr-1") and path.is_file()
    meta = read_teacher_meta(path)
    assert (meta.name, meta.classes, meta.config, meta.fingerprint, meta.rows) == (
        "cpr-1", CLASSES, {"arch": "cpr-1", "seed": 1}, "fp1", 60)
    schema = pq.read_schema(path)
    assert schema.field("logits").type == pa.list_(pa.float32(), 4)
    assert schema.field("label").type == pa.int32()

    got = load_teachers(tmp_path)
    order = np.argsort(rows["filenames"])
    assert got.names == ["cpr-1", "passt-1"] and got.classes == CLASSES and got.fingerprint == "fp1"
    assert list(got.filenames) == sorted(rows["filenames"])
    np.testing.assert_array_equal(got.labels, rows["labels"][order])
    np.testing.assert_array_equal(got.devices, rows["devices"][order])
    np.testing.assert_array_equal(got.logits[0], a[order])
    np.testing.assert_array_equal(got.logits[1], b[order])
    assert got.logits.dtype == np.float32 and got.logits.shape == (2, 60, 4)
    assert got.configs["passt-1"]["arch"] == "passt-1"
    assert got.mask("val").sum() == 20
    only = load_teachers(tmp_path, ["passt-1"])
    np.testing.assert_array_equal(only.logits[0], b[order])


def test_targets_round_trip(tmp_path):
    rows = clips(30)
    fused, avg = np.random.default_rng(2).standard_normal((2, 30, 4)).astype(np.float32)
    path = write_targets(tmp_path, *rows.values(), fused, avg, CLASSES, ["t1", "t2"], "fp9")
    assert path == tmp_path / "fused" / "targets.parquet"
    meta = pq.read_schema(path).metadata
    assert json.loads(meta[b"teachers"]) == ["t1", "t2"] and meta[b"fingerprint"] == b"fp9"
    order = np.argsort(rows["filenames"])
    fused_back = load_targets(path)
    np.testing.assert_array_equal(fused_back.logits, fused[order])
    np.testing.assert_array_equal(load_targets(tmp_path, column="average").logits, avg[order])
    assert fused_back.classes == CLASSES and fused_back.teachers == ["t1", "t2"]
    idx = fused_back.rows_for([rows["filenames"][5], "audio/unknown.wav"])
    assert idx[1] == -1 and fused_back.filenames[idx[0]] == rows["filenames"][5]
    with pytest.raises(LogitsError, match="column"):
        load_targets(path, column="probs")


def test_non_finite_logits_name_the_teacher(tmp_path):
    rows = clips()
    bad = np.zeros((60, 4), np.float32)
    bad[3, 1] = np.nan
    with pytest.raises(LogitsError, match="'noisy'.*NaN or infinite"):
        write(tmp_path, "noisy", rows, bad)
    assert not (tmp_path / "logits" / "teacher=noisy" / "part-0.parquet").exists()

    # A file written by someone else that holds an inf is caught on load.
    write(tmp_path, "good", rows, np.zeros((60, 4), np.float32))
    table = pq.read_table(teacher_logits_path(tmp_path, "good"))
    flat = np.zeros(240, np.float32)
    flat[7] = np.inf
    table = table.set_column(4, "logits", pa.FixedSizeListArray.from_arrays(pa.array(flat), 4))
    target = teacher_logits_path(tmp_path, "broken")
    target.parent.mkdir(parents=True)
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    meta["sha256"] = _digest(table.replace_schema_metadata(None), meta)  # a consistent file, but with an inf
    pq.write_table(table.replace_schema_metadata(meta), target)
    with pytest.raises(LogitsError, match="'broken'.*NaN or infinite"):
        load_teachers(tmp_path)
    pq.write_table(table, target)  # the same without a matching digest: refused as damaged
    with pytest.raises(LogitsError, match="does not match its own checksum"):
        load_teachers(tmp_path)


def test_different_clip_sets_are_named_with_counts(tmp_path):
    rows = clips()
    z = np.zeros((60, 4), np.float32)
    write(tmp_path, "full", rows, z)
    write(tmp_path, "short", rows, z, order=np.arange(55))
    with pytest.raises(LogitsError, match=r"'short': 5 missing, 0 duplicated"):
        load_teachers(tmp_path)

    dup = np.r_[np.arange(58), 0, 1]  # same row count as the others, two clips twice and two absent
    write(tmp_path, "short", rows, z, order=dup)
    with pytest.raises(LogitsError, match=r"'short': 2 missing, 2 duplicated"):
        load_teachers(tmp_path)


def test_disagreeing_metadata_is_rejected(tmp_path):
    rows = clips()
    z = np.zeros((60, 4), np.float32)
    write(tmp_path, "t1", rows, z)
    write(tmp_path, "t2", rows, z, classes=["w", "x", "y", "z"])
    with pytest.raises(LogitsError, match="'t2' has classes"):
        load_teachers(tmp_path)
    write(tmp_path, "t2", rows, z, fingerprint="other")
    with pytest.raises(LogitsError, match="'t2'.*fingerprint"):
        load_teachers(tmp_path)
    relabelled = dict(rows, labels=(rows["labels"] + 1) % 4)
    write(tmp_path, "t2", relabelled, z)
    with pytest.raises(LogitsError, match="'t2'.*disagrees"):
        load_teachers(tmp_path)


def test_missing_teachers_and_bad_shapes(tmp_path):
    with pytest.raises(LogitsError, match="no teacher logits under"):
        load_teachers(tmp_path)
    rows = clips()
    write(tmp_path, "t1", rows, np.zeros((60, 4), np.float32))
    with pytest.raises(LogitsError, match=r"no logits for teacher\(s\) \['t9'\].*available: \['t1'\]"):
        load_teachers(tmp_path, ["t9"])
    with pytest.raises(LogitsError, match="expected"):
        write(tmp_path, "t2", rows, np.zeros((60, 3), np.float32))
    with pytest.raises(LogitsError, match="folder name"):
        write(tmp_path, "a=b", rows, np.zeros((60, 4), np.float32))
