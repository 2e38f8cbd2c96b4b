"""A full disk, made real: a 3 MB tmpfs mounted in a private mount namespace (`unshare --mount`, root only).

Each step ends with one `error:` line naming the bytes and the fix, exit 2, no traceback, and leaves nothing
on the full disk; a temp folder a killed writer left is removed on the next start.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TINY_MB = 3


def _can_mount() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $d && umount $d && rmdir $d"], capture_output=True)
    return probe.returncode == 0


needs_mount = pytest.mark.skipif(not _can_mount(), reason="needs root and `unshare --mount` to mount a small tmpfs (a real full disk)")


def on_tiny_disk(tmp_path: Path, argv: list[str]) -> subprocess.CompletedProcess:
    """Run `python -m asc_dist.<argv>` with TINY (a 3 MB tmpfs) mounted at tmp_path/tiny; list what is left there."""
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", *argv])
    script = f"mount -t tmpfs -o size={TINY_MB}m tmpfs {shlex.quote(str(tiny))} && {cmd}; rc=$?; echo LEFT:$(ls -A {shlex.quote(str(tiny))} | tr '\\n' ' '); exit $rc"
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-2000:]
    return errors[0]


def left_on_disk(done: subprocess.CompletedProcess) -> str:
    return done.stdout.rsplit("LEFT:", 1)[1].strip()


@needs_mount
def test_pack_checks_free_space_first(tmp_path, synth_root, synth_store):
    done = on_tiny_disk(tmp_path, ["asc_dist.data", "pack", str(synth_root), "--out", str(tmp_path / "tiny" / "store")])
    line = one_error_line(done)
    assert "needs" in line and "free" in line and "--store" in line, line
    assert left_on_disk(done) == ""


@needs_mount
def test_synth_that_fills_the_disk_ends_in_one_line_and_leaves_nothing(tmp_path):
    done = on_tiny_disk(tmp_path, ["asc_dist.data", "synth", "--out", str(tmp_path / "tiny" / "data"), "--clips-per-device", "40"])
    line = one_error_line(done)
    assert "filled up" in line and "--out" in line, line
    assert left_on_disk(done) == ""  # the half-written dataset's temp folder is gone


@needs_mount
def test_teachers_check_free_space_before_ray_starts(tmp_path, synth_root, synth_store):
    done = on_tiny_disk(tmp_path, ["asc_dist.teachers", "--n", "1", "--size", "tiny", "--data", str(synth_root),
                                   "--run", str(tmp_path / "tiny" / "run")])
    line = one_error_line(done)
    assert "needs" in line and "--run" in line, line
    assert "Ray:" not in done.stderr  # refused before any cluster started
    assert left_on_disk(done) == ""


def test_stale_temps_of_dead_writers_are_removed_on_the_next_start(tmp_path, synth_root):
    from asc_dist.data.store import pack

    store, _ = pack(synth_root, tmp_path / "sr32000")
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".sr32000.{host}-{dead.pid}.abc.tmp"
    live = tmp_path / f".sr32000.{host}-{os.getpid()}.def.tmp"
    elsewhere = tmp_path / f".sr32000.other-host-{dead.pid}.ghi.tmp"
    for folder in (stale, live, elsewhere):
        (folder / "sr32000").mkdir(parents=True)
        (folder / "sr32000" / "train.npy").write_bytes(b"\0" * 1000)
    pack(synth_root, store)  # up to date: nothing packed, but the dead writer's leftovers go
    assert not stale.exists()
    assert live.exists() and elsewhere.exists()  # a live writer's, and another host's (it may be alive there)
