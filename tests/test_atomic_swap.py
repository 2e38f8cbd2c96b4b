"""The store's folder swap is race-free: two processes swapping one folder 300 times each, no error, and the folder
is always one writer's whole folder (a fixed `.old` name raised ENOTEMPTY about once in 300 swaps)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SWAPPER = """
import sys
from pathlib import Path
from asc_dist.run.atomic import atomic_path
target, who = Path(sys.argv[1]), sys.argv[2]
for i in range(300):
    with atomic_path(target) as tmp:
        tmp.mkdir()
        for k in range(3):
            (tmp / f"part{k}").write_text(f"{who} {i}")
"""


def test_two_processes_swap_one_folder_300_times_each(tmp_path):
    target = tmp_path / "store"
    target.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", SWAPPER, str(target), who], stderr=subprocess.PIPE, text=True) for who in "ab"]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    parts = sorted(Path(target).iterdir())
    assert [p.name for p in parts] == ["part0", "part1", "part2"]
    assert len({p.read_text() for p in parts}) == 1  # one writer's whole folder, not a mix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # no temp or old folder left
