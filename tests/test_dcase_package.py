"""The DCASE 2025 Task 1 inference package built from a trained student: importable from its folder alone
(PYTHONPATH, no install), its `predict` on real recordings equals `asc_dist.predict`, its complexity check runs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np

from tests.conftest import REAL_SCENES, need

LABEL = "Doe_ASC_task1"


def test_package_predicts_like_asc_dist(int8_student, tmp_path):
    model_file, store, _ = int8_student
    out = tmp_path / "pkg"
    done = subprocess.run([sys.executable, "-m", "asc_dist.export", "--model-file", str(model_file.parent), "--dcase-package", LABEL,
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert {p.name for p in out.iterdir()} == {LABEL, "requirements.txt", "setup.py", "test_complexity.py"}
    assert (out / LABEL / "ckpts" / "model_int8.pt").is_file() and "torch==" in (out / "requirements.txt").read_text()
    files = sorted(str(p) for p in need(REAL_SCENES / "tut2018").glob("*.wav"))[:4]
    code = (f"import json, sys, torch; from {LABEL} import {LABEL}_1 as s;"
            "logits, classes = s.predict(sys.argv[1:], ['a'] * (len(sys.argv) - 1));"
            "print(json.dumps({'classes': classes, 'probs': [torch.softmax(l, 0).tolist() for l in logits]}))")
    env = {**os.environ, "PYTHONPATH": str(out)}
    ran = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    got = json.loads(ran.stdout.strip().splitlines()[-1])
    assert got["classes"] == store.classes
    pred = subprocess.run([sys.executable, "-m", "asc_dist.predict", "--model-file", str(model_file), *files, "--out", str(tmp_path / "p.csv")],
                          capture_output=True, text=True, timeout=300)
    assert pred.returncode == 0, pred.stderr[-2000:]
    with open(tmp_path / "p.csv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    expected = np.array([[float(r[c]) for c in store.classes] for r in rows])
    np.testing.assert_allclose(np.array(got["probs"]), expected, atol=2e-6)
    check = subprocess.run([sys.executable, "test_complexity.py"], capture_output=True, text=True, timeout=60, cwd=out)
    assert check.returncode == 0 and json.loads(check.stdout)["macs"] > 0, check.stderr
