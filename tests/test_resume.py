"""`kill -9` of a driver mid-training, then the same command: training continues from the last epoch
checkpoint (never from epoch 1), the result equals an uninterrupted run, and no MLflow run stays RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest

from asc_dist.run.logits import teacher_logits_path

ROSTER = """
defaults: {size: tiny, epochs: 12, lr: 0.002, batch_size: 16, roll: 2000}
teachers:
  - {name: cpr, family: cpresnet, seed: 1, fms_p: 0.8}
"""


def run_and_kill(cmd: list[str], marker: str, timeout_s: float = 240) -> str:
    """Start `cmd`, SIGKILL its driver as soon as `marker` appears in its output; then clear what Ray left."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out, deadline = [], time.monotonic() + timeout_s
    for line in proc.stdout:
        out.append(line)
        if marker in line:
            os.kill(proc.pid, signal.SIGKILL)
            break
        if time.monotonic() > deadline:
            break
    proc.wait(timeout=30)
    text = "".join(out)
    assert proc.returncode == -signal.SIGKILL, f"the driver was not killed at {marker!r}:\n{text[-3000:]}"
    time.sleep(2)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # Ray's agents of the dead driver's session
    except ProcessLookupError:
        pass
    return text


def run_ok(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def epoch_lines(text: str, name: str) -> list[int]:
    import re

    return [int(m) for m in re.findall(rf"\[{re.escape(name)}\] epoch (\d+)/12", text)]


def runs(run: Path) -> list:
    client = mlflow.MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    return [(e.name, r, client) for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


@pytest.fixture
def roster(tmp_path) -> Path:
    path = tmp_path / "roster.yaml"
    path.write_text(ROSTER)
    return path


def test_killed_teachers_driver_continues_from_its_last_epoch(tmp_path, synth_root, synth_store, roster):
    def cmd(out):
        return [sys.executable, "-m", "asc_dist.teachers", "--roster", str(roster), "--data", str(synth_root), "--run", str(out)]

    killed = run_and_kill(cmd(tmp_path / "run"), "[cpr] epoch 1/12")
    assert epoch_lines(killed, "cpr")[-1] < 12
    assert (tmp_path / "run" / "checkpoints" / "teachers" / "cpr.pt").is_file()
    assert not teacher_logits_path(tmp_path / "run", "cpr").exists()

    resumed = run_ok(cmd(tmp_path / "run"))
    epochs = epoch_lines(resumed, "cpr")
    assert epochs and epochs[0] > 1 and epochs[-1] == 12, epochs  # continued, not restarted
    assert not (tmp_path / "run" / "checkpoints" / "teachers" / "cpr.pt").exists()  # done: the logits mark it

    run_ok(cmd(tmp_path / "straight"))  # the same command, never interrupted
    a = pq.read_table(teacher_logits_path(tmp_path / "run", "cpr")).to_pydict()
    b = pq.read_table(teacher_logits_path(tmp_path / "straight", "cpr")).to_pydict()
    assert a["filename"] == b["filename"]
    np.testing.assert_array_equal(np.array(a["logits"]), np.array(b["logits"]))  # seeds, RNG and order restored

    (exp, r, client), = runs(tmp_path / "run")
    assert r.info.status == "FINISHED" and r.data.tags.get("asc_dist.resumed") == "true"  # the run it continued, reopened
    assert sorted({m.step for m in client.get_metric_history(r.info.run_id, "train_loss")}) == list(range(1, 13))


def test_killed_pipeline_continues_the_sweep(tmp_path, synth_root, synth_store):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "asc_dist.pipeline", "--data", str(synth_root), "--run", str(run), "--n", "2",
           "--teacher-epochs", "1", "--presets", "sm1", "--kd-lambda", "0.02", "--student-epochs", "12", "--qat-epochs", "1"]
    student = "dsflexinet-sm1-l0.02-T2-s0"
    killed = run_and_kill(cmd, f"[{student}] epoch 1/12")
    assert (run / "checkpoints" / "sweep" / f"{student}.pt").is_file()
    stuck = [r.info.run_name for _, r, _ in runs(run) if r.info.status == "RUNNING"]
    assert student in stuck  # what a kill leaves behind

    resumed = run_ok(cmd)
    assert '"ran": ["sweep", "report"]' in resumed  # teachers and fusion stood
    epochs = epoch_lines(resumed, student)
    assert epochs and epochs[0] > 1, epochs  # the sweep continued its trial; epoch 12 comes with the scores
    assert f"[{student}] epoch 1/12" in killed
    statuses = {(exp, r.info.run_name): r.info.status for exp, r, _ in runs(run)}
    assert "RUNNING" not in statuses.values(), statuses
    (_, child, client), = [x for x in runs(run) if x[1].info.run_name == student]
    assert child.info.status == "FINISHED"
    assert sorted({m.step for m in client.get_metric_history(child.info.run_id, "train_loss")}) == list(range(1, 13))
    sweeps = [r for _, r, _ in runs(run) if r.info.run_name.startswith("sweep-")]
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED"  # the sweep's parent run, reopened


def test_trial_checkpoint_belongs_to_its_key(tmp_path):
    import torch

    from asc_dist.run.checkpoint import TrialCheckpoint

    ckpt = TrialCheckpoint.of(tmp_path, "sweep", "t", key="k1")
    assert ckpt.load() is None
    ckpt.save({"trainer": {"epoch": 3, "w": torch.ones(2)}, "mlflow_run_id": "abc"})
    assert ckpt.load()["trainer"]["epoch"] == 3 and ckpt.load()["mlflow_run_id"] == "abc"
    assert list(ckpt.path.parent.iterdir()) == [ckpt.path]  # no temp file left
    assert TrialCheckpoint(ckpt.path, "k2").load() is None  # another config: start again
    ckpt.mark_stopped({"epoch": 3, "val_acc": 0.5, "table": {"x": 1}})
    assert ckpt.stopped() == {"epoch": 3, "val_acc": 0.5}
    assert TrialCheckpoint(ckpt.path, "k2").stopped() is None
    ckpt.path.write_bytes(ckpt.path.read_bytes()[:40])  # a torn file (e.g. a copy cut short): start again, no traceback
    assert ckpt.load() is None
    ckpt.clear()
    assert not ckpt.path.exists() and not ckpt.stopped_path.exists()
