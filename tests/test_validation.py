"""Every config is validated in the driver, before Ray or MLflow start: one line, exit 2, nothing written."""

from __future__ import annotations

import subprocess
import sys

import pytest

from asc_dist.errors import ConfigError
from asc_dist.teach.roster import load_roster


@pytest.mark.parametrize("text, message", [
    ("defualts: {size: tiny}\nteachers:\n  - {name: a, family: cnn}\n", "unknown top-level key"),
    ("teachers:\n  - {name: a, family: cnn, epochs: two}\n", "epochs must be int"),
    ("teachers:\n  - {name: a, family: cnn, lr: fast}\n", "lr must be float"),
    ("teachers:\n  - {name: ../x, family: cnn}\n", "names a folder"),
    ("defaults: [1]\nteachers:\n  - {name: a, family: cnn}\n", "must be a mapping"),
])  # fmt: skip
def test_roster_schema(tmp_path, text, message):
    path = tmp_path / "roster.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_roster(path)


@pytest.mark.parametrize("args, message", [
    (["asc_dist.teachers", "--val-fraction", "1.5"], "val-fraction"),
    (["asc_dist.teachers", "--val-fraction", "0"], "val-fraction"),
    (["asc_dist.teachers", "--mlflow-uri", "bogus://x"], "not a tracking URI"),
    (["asc_dist.students", "--epochs", "0", "--targets", "none"], "--epochs must be >= 1"),
])  # fmt: skip
def test_bad_options_fail_before_any_work(tmp_path, args, message):
    run = tmp_path / "run"
    flag = "--run"
    res = subprocess.run([sys.executable, "-m", *args, flag, str(run)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().count("\n") == 0 or res.stderr.strip().splitlines()[-1].startswith("error:")
    assert not run.exists()
