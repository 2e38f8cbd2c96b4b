"""Interrupts and failures are never success (real subprocesses, real signals, real Ray and MLflow).

Ctrl-C reaches a whole process group; before this, Tune caught it, ended its loop and returned the unfinished
trials as if a scheduler had stopped them: an epoch-1 student was quantised and registered, results.json written
and the rerun had nothing to do.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from asc_dist.run.lock import run_lock
from tests.conftest import make_targets, start_until, step_env

EPOCHS = 6


def _tune_cmd(run: Path, root: Path) -> list[str]:
    return [sys.executable, "-m", "asc_dist.tune", "--run", str(run), "--data", str(root), "--presets", "sm1", "--kd-lambda", "0.02,0.5",
            "--epochs", str(EPOCHS), "--scheduler", "fifo", "--qat-epochs", "1", "--cpus-per-trial", "1"]  # fmt: skip


def test_sigint_during_the_sweep_records_nothing_and_the_rerun_finishes(tmp_path, synth_root, synth_store):
    run = tmp_path / "run"
    make_targets(run, synth_store)
    log = tmp_path / "tune.log"
    proc = start_until(_tune_cmd(run, synth_root), log, f"epoch 1/{EPOCHS}")
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    rc = proc.wait(timeout=180)
    text = log.read_text()
    assert rc == 130, text[-3000:]
    assert text.strip().splitlines()[-1].startswith("interrupted: nothing was recorded as finished")
    assert not (run / "sweep" / "results.json").exists()
    client = mlflow.MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    assert client.search_registered_models() == []
    runs = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    assert runs and all(r.info.status == "KILLED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    with run_lock(run):  # free: the interrupted process let go of it
        pass

    again = subprocess.run(_tune_cmd(run, synth_root), capture_output=True, text=True, env=step_env(), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = json.loads((run / "sweep" / "results.json").read_text())["trials"]
    assert len(trials) == 2 and all(t["test_acc"] is not None and not t["stopped_early"] for t in trials)
    assert len(client.search_registered_models()) == 1


def test_tune_refuses_incomplete_targets_before_ray_starts(tmp_path, synth_root, synth_store):
    run = tmp_path / "run"
    make_targets(run, synth_store, drop=10)
    done = subprocess.run(_tune_cmd(run, synth_root), capture_output=True, text=True, env=step_env(), timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Ray:" not in done.stderr  # refused before Ray started
    assert re.search(r"error: 10 of \d+ training clips have no target", done.stderr)


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_sigterm_is_an_interrupt_too(tmp_path, synth_root, sig):
    """A step stopped by SIGTERM (a scheduler's kill, `timeout`) unwinds like Ctrl-C: one line, exit 130."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "asc_dist.students", "--run", str(run), "--data", str(synth_root), "--targets", "none",
           "--preset", "sm1", "--epochs", "50"]  # fmt: skip
    log = tmp_path / "students.log"
    proc = start_until(cmd, log, "epoch 1/50")
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 130, log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text and text.strip().splitlines()[-1].startswith("interrupted:")
    client = mlflow.MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("students").experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"]


def test_sigint_during_teachers_is_killed_not_failed_and_the_rerun_finishes(tmp_path, synth_root):
    roster = tmp_path / "roster.yaml"
    roster.write_text("defaults: {size: tiny, epochs: 6, lr: 0.002, batch_size: 16}\nteachers:\n  - {name: cnn, family: cnn, seed: 1}\n")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "asc_dist.teachers", "--run", str(run), "--data", str(synth_root), "--roster", str(roster)]
    log = tmp_path / "teachers.log"
    proc = start_until(cmd, log, "epoch 1/6")
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=180) == 130
    text = log.read_text()
    assert text.strip().splitlines()[-1].startswith("interrupted:")
    assert "retries" not in text and "Tuner.restore" not in text
    assert not (run / "logits" / "teacher=cnn").exists()
    client = mlflow.MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("teachers").experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"]
    assert (run / "checkpoints" / "teachers" / "cnn.pt").is_file()  # the epochs done are kept

    again = subprocess.run(cmd, capture_output=True, text=True, env=step_env(), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run / "logits" / "teacher=cnn" / "part-0.parquet").is_file()


def test_sigint_during_the_pipelines_sweep_then_the_rerun_finishes(tmp_path, synth_root):
    """The probe of the issue: Ctrl-C during the pipeline's sweep used to exit 0 with "pipeline done", an epoch-1
    student quantised and registered, and a rerun with nothing to do."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "asc_dist.pipeline", "--run", str(run), "--data", str(synth_root), "--n", "2", "--teacher-epochs", "1",
           "--presets", "sm1", "--kd-lambda", "0.02,0.5", "--student-epochs", str(EPOCHS), "--qat-epochs", "1"]  # fmt: skip
    log = tmp_path / "pipeline.log"
    proc = start_until(cmd, log, f"epoch 1/{EPOCHS}", timeout_s=400)  # teachers train 1 epoch: this is the sweep
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=180) == 130
    last = log.read_text().strip().splitlines()[-1]
    assert last.startswith("interrupted:") and "python -m asc_dist.pipeline --run" in last  # names the command that continues
    assert not (run / "sweep" / "results.json").exists() and not (run / "report.md").exists()
    client = mlflow.MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    assert client.search_registered_models() == []
    sweep_runs = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    assert sweep_runs and all(r.info.status == "KILLED" for r in sweep_runs), [(r.info.run_name, r.info.status) for r in sweep_runs]
    with run_lock(run):
        pass

    again = subprocess.run(cmd, capture_output=True, text=True, env=step_env(), timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "sweep" in again.stderr and (run / "report.md").is_file()
    trials = json.loads((run / "sweep" / "results.json").read_text())["trials"]
    assert len(trials) == 2 and all(t["val_acc"] is not None and t["error"] is None for t in trials)
    assert any(t.get("registered_model") for t in trials)
