"""A read-only run folder (or output folder) is one `error:` line and exit 2 in every step, before any work.

The folder is made read-only the way a user meets it (a read-only mount: EROFS, which even root gets) with a bind
mount inside a private user and mount namespace (`unshare -rm`); where the kernel does not allow that, skip.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asc_dist.run.logits import write_teacher_logits
from tests.conftest import make_targets


def _can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o ro tmpfs /mnt"], capture_output=True)
    return done.returncode == 0


pytestmark = pytest.mark.skipif(not _can_mount(), reason="needs `unshare -rm` (user + mount namespaces) to make a read-only mount")


def _readonly(folder: Path, cmd: list[str], timeout: int = 180) -> subprocess.CompletedProcess:
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, str(folder), *cmd], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run(tmp_path_factory, synth_store):
    """A run folder with two teachers' logits, fused targets and teachers.json: every step has its input."""
    run = tmp_path_factory.mktemp("ro") / "run"
    make_targets(run, synth_store)
    table = synth_store.table()
    teachers = {}
    for k, name in enumerate(("t1", "t2")):
        rng = np.random.default_rng(k)
        logits = 3.0 * np.eye(len(synth_store.classes), dtype=np.float32)[table.label] + rng.normal(0, 2, (len(table), len(synth_store.classes))).astype(np.float32)
        write_teacher_logits(run, name, table.filename, table.split, table.device, table.label, logits, synth_store.classes,
                             {"config_hash": name}, synth_store.fingerprint)  # fmt: skip
        teachers[name] = {"teacher": name, "family": "cnn", "val_acc": 0.5}
    (run / "teachers.json").write_text(json.dumps({"fingerprint": synth_store.fingerprint, "teachers": teachers}))
    return run


def _steps(run: Path, root: Path, model: Path, wav: Path) -> dict[str, list[str]]:
    data = ["--data", str(root)]
    return {
        "students": ["asc_dist.students", "--run", str(run), *data, "--preset", "sm1", "--epochs", "1"],
        "tune": ["asc_dist.tune", "--run", str(run), *data, "--presets", "sm1", "--epochs", "1"],
        "teachers": ["asc_dist.teachers", "--run", str(run), *data, "--n", "1", "--epochs", "1"],
        "fusion": ["asc_dist.fusion", "--run", str(run)],
        "pipeline": ["asc_dist.pipeline", "--run", str(run), *data],
        "study": ["asc_dist.study", "--run", str(run), *data, "--seeds", "1", "--epochs", "1"],
        "predict": ["asc_dist.predict", "--model-file", str(model), str(wav), "--out", str(run / "predictions.csv")],
        "data synth": ["asc_dist.data", "synth", "--out", str(run / "synth")],
    }


@pytest.mark.parametrize("step", ["students", "tune", "teachers", "fusion", "pipeline", "study", "predict", "data synth"])
def test_every_step_on_a_read_only_folder_is_one_line(run, synth_root, int8_student, step):
    model, store, _ = int8_student
    wav = next((synth_root / "audio").glob("*.wav"))
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    done = _readonly(run, [sys.executable, "-m", *_steps(run, synth_root, model, wav)[step]])
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert lines[-1].startswith("error:") and str(run) in lines[-1], lines[-1]
    assert "Read-only file system" in lines[-1] and "--" in lines[-1]  # the OS's reason and the flag that fixes it
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
