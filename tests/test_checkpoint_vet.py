"""A torn or foreign trial checkpoint is dealt with in the step's own log, before any trial starts (real Ray,
real teachers): torn -> named, removed, the teacher trains from epoch 1; foreign -> one error line, exit 2,
never three failed attempts buried in Ray's tracebacks."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import torch

ROSTER = "defaults: {size: tiny, epochs: 1, lr: 0.002, batch_size: 16}\nteachers:\n  - {name: cnn, family: cnn, seed: 1}\n"


def _teachers(run, root, roster):
    return subprocess.run([sys.executable, "-m", "asc_dist.teachers", "--run", str(run), "--data", str(root), "--roster", str(roster)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "RAY_ADDRESS": ""})  # fmt: skip


def test_torn_and_foreign_checkpoints(tmp_path, synth_root):
    roster = tmp_path / "roster.yaml"
    roster.write_text(ROSTER)
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "teachers" / "cnn.pt"
    ckpt.parent.mkdir(parents=True)
    buf = io.BytesIO()
    torch.save({"trainer": {"epoch": 1}}, buf)
    ckpt.write_bytes(b"\x80\x04\x95garbage" * 40)  # a pickle of someone else's, not a torch zip
    foreign = _teachers(run, synth_root, roster)
    lines = [x for x in foreign.stderr.splitlines() if x.strip()]
    assert foreign.returncode == 2 and "Traceback" not in foreign.stderr, foreign.stderr[-3000:]
    assert lines[-1].startswith("error:") and str(ckpt) in lines[-1] and "delete it" in lines[-1]
    assert "Ray:" not in foreign.stderr  # refused before any trial

    ckpt.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # torn: the writer died mid-file
    torn = _teachers(run, synth_root, roster)
    assert torn.returncode == 0, torn.stderr[-3000:]
    assert f"teacher cnn: its checkpoint {ckpt} is unreadable" in torn.stderr and "starts from epoch 1" in torn.stderr
    assert (run / "logits" / "teacher=cnn" / "part-0.parquet").is_file()
