"""One writer per run folder: a second writer is refused with the holder's PID; a killed holder frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from asc_dist.run.lock import run_lock

HOLD = "import sys, time; from asc_dist.run.lock import run_lock\nwith run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)\n"


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_with_the_holders_pid(tmp_path):
    run = tmp_path / "run"
    holder = _holder(run)
    try:
        res = subprocess.run([sys.executable, "-m", "asc_dist.students", "--run", str(run), "--targets", "none", "--epochs", "1"],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert f"PID {holder.pid}" in res.stderr and "in use by another asc-dist process" in res.stderr
        assert not (run / "data").exists()  # refused before any work
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_never_leaves_the_folder_stuck(tmp_path):
    holder = _holder(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with run_lock(tmp_path) as folder:  # the OS released it with the process
        assert (folder / ".lock").read_text().startswith(f"PID {os.getpid()}")


def test_reentrant_within_one_process(tmp_path):
    with run_lock(tmp_path):
        with run_lock(tmp_path):  # the pipeline holds it while its steps take it again
            pass
        with run_lock(tmp_path):
            pass


def test_a_failed_step_leaves_no_new_folder(tmp_path):
    import pytest

    run = tmp_path / "new"
    with pytest.raises(RuntimeError):
        with run_lock(run):
            raise RuntimeError("bad input found inside the step")
    assert not run.exists()
