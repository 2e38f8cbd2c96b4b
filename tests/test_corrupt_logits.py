"""Corrupt logits never pass silently: seeded random 4-byte corruptions of real files, each either refused with
one LogitsError (never another exception) or read back identical to what was written."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest

from asc_dist.errors import LogitsError
from asc_dist.run.logits import (
    LOGIT_BOUND,
    load_targets,
    load_teachers,
    targets_path,
    teacher_logits_path,
    write_targets,
    write_teacher_logits,
)

CLASSES = ["airport", "bus", "metro", "park", "tram"]


def _rows(n=80):
    rng = np.random.default_rng(0)
    files = np.array([f"audio/bus-lyon-1-{i // 10}-{i % 10}-a.wav" for i in range(n)], dtype=object)
    splits = np.array(["train", "val", "test", "test"] * (n // 4), dtype=object)
    return files, splits, np.array(["a"] * n, dtype=object), rng.integers(0, len(CLASSES), n), rng.normal(0, 3, (n, len(CLASSES))).astype(np.float32)


def _corrupt(src, dst, rng):
    data = bytearray(src.read_bytes())
    at = int(rng.integers(0, len(data) - 4))
    data[at : at + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return bytes(data) != src.read_bytes()


@pytest.mark.parametrize("kind", ["teacher", "targets"])
def test_random_corruptions_are_refused_or_harmless(tmp_path, kind):
    files, splits, devices, labels, logits = _rows()
    clean = tmp_path / "clean"
    if kind == "teacher":
        write_teacher_logits(clean, "t", files, splits, devices, labels, logits, CLASSES, {"config_hash": "x"}, "fp")
        path = teacher_logits_path(clean, "t")
        load = lambda run: load_teachers(run).logits[0]  # noqa: E731
    else:
        write_targets(clean, files, splits, devices, labels, logits, logits * 0.5, CLASSES, ["t"], "fp")
        path = targets_path(clean)
        load = lambda run: load_targets(run).logits  # noqa: E731
    expected = load(clean)
    rng = np.random.default_rng(1234)
    refused = harmless = 0
    for trial in range(250):
        run = tmp_path / f"c{trial}"
        target = path.parent.relative_to(clean)
        (run / target).mkdir(parents=True)
        if not _corrupt(path, run / target / path.name, rng):
            continue
        try:
            got = load(run)
        except LogitsError:
            refused += 1
        else:  # read without complaint: only if what came back is exactly what was written
            np.testing.assert_array_equal(got, expected)
            harmless += 1
        shutil.rmtree(run)
    print(f"{kind}: {refused} refused, {harmless} harmless")
    assert refused > 200, (refused, harmless)


def test_out_of_range_logits_are_refused_at_write():
    files, splits, devices, labels, logits = _rows()
    logits[5, 2] = 2.1e34  # what a flipped exponent bit made of a logit in the probe
    with pytest.raises(LogitsError, match="magnitude 2.1e"):
        write_teacher_logits("/tmp/never-written", "t", files, splits, devices, labels, logits, CLASSES, {}, "fp")
    assert LOGIT_BOUND == 1e4


def test_fusion_cli_names_the_damaged_file(tmp_path):
    files, splits, devices, labels, logits = _rows()
    for name in ("a", "b"):
        write_teacher_logits(tmp_path, name, files, splits, devices, labels, logits, CLASSES, {"config_hash": name}, "fp")
    path = teacher_logits_path(tmp_path, "b")
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    path.write_bytes(bytes(data))
    res = subprocess.run([sys.executable, "-m", "asc_dist.fusion", "--run", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr and str(path) in res.stderr
    assert not (tmp_path / "fused").exists()
