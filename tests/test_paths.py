"""Clip paths stay inside the dataset folder: absolute paths and ../ escapes are refused with the row named."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from asc_dist.data.table import read_layout
from asc_dist.errors import DatasetError


@pytest.mark.parametrize("bad", ["/etc/passwd", "../../../etc/passwd", "../other/audio/x.wav"])
@pytest.mark.parametrize("where", ["meta.csv", "evaluation_setup/fold1_train.csv"])
def test_rows_outside_the_root_are_refused(synth_root, tmp_path, bad, where):
    root = tmp_path / "ds"
    shutil.copytree(synth_root, root, ignore=shutil.ignore_patterns("packed"))
    path = root / where
    lines = path.read_text().splitlines()
    first = lines[1].split("\t")
    lines[1] = "\t".join([bad, *first[1:]])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="outside the dataset folder"):
        read_layout(root)
    res = subprocess.run([sys.executable, "-m", "asc_dist.data", "pack", str(root)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "outside the dataset folder" in res.stderr and bad in res.stderr and "Traceback" not in res.stderr
    assert not (root / "packed").exists()
