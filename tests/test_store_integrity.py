"""The packed store is verified: one flipped byte in its index, manifest or waveforms is one `error:` line and
exit 2 (never logits keyed by mangled names or a renamed class), and `pack` rebuilds such a store."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asc_dist.data.integrity import ROWS_PER_BLOCK
from asc_dist.data.store import WaveformStore, pack
from asc_dist.errors import DatasetError


@pytest.fixture
def store_copy(tmp_path, synth_store) -> Path:
    out = tmp_path / "store"
    shutil.copytree(synth_store.path, out)
    return out


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _verify(store: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asc_dist.data", "verify", str(store)], capture_output=True, text=True, timeout=120)


def test_an_intact_store_verifies(store_copy):
    done = _verify(store_copy)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["verified"] is True


@pytest.mark.parametrize("name", ["index.parquet", "manifest.json", "train.npy"])
def test_one_flipped_byte_is_one_error_line(store_copy, name):
    path = store_copy / name
    if name == "manifest.json":  # a class renamed, the JSON still valid (the probe's "bus" -> "bur")
        text = path.read_text()
        cls = json.loads(text)["classes"][1]
        offset = text.index(f'"{cls}"') + 1
    elif name == "train.npy":  # one sample of the last block, past the .npy header
        offset = path.stat().st_size - 1001
    else:
        offset = path.stat().st_size // 2
    _flip(path, offset)
    done = _verify(store_copy)
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len([x for x in lines if x.startswith("error:")]) == 1
    assert name in lines[-1] and "pack" in lines[-1] and "--force" in lines[-1]


def test_a_step_reading_corrupted_rows_stops_and_pack_rebuilds(store_copy, synth_root):
    array = np.load(store_copy / "train.npy", mmap_mode="r")
    header = (store_copy / "train.npy").stat().st_size - array.nbytes
    row_bytes = array[0].nbytes
    _flip(store_copy / "train.npy", header + 3 * row_bytes + 10)  # row 3: the first block
    store = WaveformStore(store_copy)  # manifest and index hold: it opens
    train = store.split("train", 0.15, 0)
    far = np.flatnonzero(train.rows >= ROWS_PER_BLOCK)
    if len(far):
        train.waves(far[:2])  # rows of an intact block read fine
    with pytest.raises(DatasetError, match="train.npy is corrupted.*--force"):
        train.waves(np.flatnonzero(train.rows == 3))
    _, built = pack(synth_root, store_copy, verify_rows=True)
    assert built  # rebuilt, not "up to date"
    assert _verify(store_copy).returncode == 0
    _, again = pack(synth_root, store_copy, verify_rows=True)
    assert not again


def test_a_store_from_before_checksums_is_repacked(store_copy, synth_root):
    manifest = json.loads((store_copy / "manifest.json").read_text())
    manifest.pop("checksums")
    (store_copy / "manifest.json").write_text(json.dumps(manifest))
    assert "before stores carried checksums" in _verify(store_copy).stderr
    _, built = pack(synth_root, store_copy)
    assert built and "checksums" in json.loads((store_copy / "manifest.json").read_text())
