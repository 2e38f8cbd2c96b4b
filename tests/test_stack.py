"""The matched-set guard: a mismatched torch/torchaudio/torchvision ends every CLI with one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys

from asc_dist.infra import stack

PINS = {"torch": "2.11.0", "torchaudio": "2.11.0", "torchvision": "0.26.0"}


def test_matched_set_passes_local_build_tags():
    assert stack.mismatch({"torch": "2.11.0+cu130", "torchaudio": "2.11.0", "torchvision": "0.26.0+cpu"}, PINS) is None


def test_mismatched_versions_name_all_three_and_the_repair():
    msg = stack.mismatch({"torch": "2.11.0", "torchaudio": "2.11.1", "torchvision": "0.26.0"}, PINS)
    assert "torch 2.11.0, torchaudio 2.11.1, torchvision 0.26.0" in msg
    assert "torchaudio 2.11.0" in msg and "pip install -r" in msg and "requirements.lock" in msg
    assert "torchvision missing" in stack.mismatch({"torch": "2.11.0", "torchaudio": "2.11.0", "torchvision": None}, PINS)


def test_pins_come_from_the_requirements():
    reqs = ["torch==2.11.0", "torchaudio==2.11.0", "torchvision==0.26.0", "ray[train,tune]==2.60.*", "numpy<3,>=1.26"]
    assert stack.pinned_versions(reqs) == PINS
    assert stack.pinned_versions() == PINS  # the installed asc-dist's metadata, i.e. pyproject.toml


def _cli(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_refuses_a_mismatched_set(tmp_path):
    # pip's view of torchaudio, as after `pip install torchaudio==2.11.1`: a dist-info ahead of site-packages
    info = tmp_path / "torchaudio-2.11.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: torchaudio\nVersion: 2.11.1\n")
    res = _cli(tmp_path, "asc_dist.fusion", "--help")
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr
    assert "torchaudio 2.11.1" in res.stderr and "-m pip install -r" in res.stderr
    # --version still answers, and says what is wrong
    res = _cli(tmp_path, "asc_dist", "--version")
    assert res.returncode == 0 and "torchaudio 2.11.1" in res.stdout and "not the matched set" in res.stdout


def test_cli_refuses_a_torchaudio_that_cannot_load(tmp_path):
    # the failure seen on a fresh machine: the compiled library does not match torch
    (tmp_path / "torchaudio").mkdir()
    (tmp_path / "torchaudio" / "__init__.py").write_text(
        "raise OSError('libtorchaudio.so: undefined symbol: torch_exception_get_what_without_backtrace')\n")
    res = _cli(tmp_path, "asc_dist.complexity", "dsflexinet:sm1")
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "undefined symbol" in res.stderr and "torch 2.11.0" in res.stderr and "pip install -r" in res.stderr


def test_version_report_names_the_stack():
    res = subprocess.run([sys.executable, "-m", "asc_dist", "--version"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    for name in ("asc-dist 0.1.0", "torch 2.11.0", "torchaudio 2.11.0", "ray 2.60", "mlflow 3.17"):
        assert name in res.stdout
