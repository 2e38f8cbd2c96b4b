"""`python -m asc_dist.predict` on real recordings (48 kHz stereo 24-bit, 10 s) with a trained int8 student."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asc_dist.ship.load import read_metadata
from tests.conftest import REAL_SCENES, need


@pytest.fixture
def student(int8_student):
    model_file, store, _ = int8_student
    return model_file, store


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asc_dist.predict", *args], capture_output=True, text=True, timeout=300)


def read_dcase(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        return reader.fieldnames, list(reader)


def test_exported_file_carries_what_predict_needs(student):
    model_file, store = student
    meta = read_metadata(model_file)
    assert meta["classes"] == store.classes and meta["sample_rate"] == 32000 and meta["clip_samples"] == 32000
    assert meta["kind"] == "int8" and meta["engine"]


def test_predict_real_recordings_in_dcase_format(student, tmp_path):
    model_file, store = student
    alone = tmp_path / "shipped" / "model_int8.pt"  # the file alone, away from its run folder
    alone.parent.mkdir()
    shutil.copy(model_file, alone)
    scenes = need(REAL_SCENES / "tut2018")
    done = cli("--model-file", str(alone), str(scenes), "--out", str(tmp_path / "pred.csv"), "--windows")
    assert done.returncode == 0, done.stderr[-2000:]
    header, rows = read_dcase(tmp_path / "pred.csv")
    assert header == ["filename", "scene_label", *store.classes]  # the model's own classes, in its order
    assert sorted(r["filename"] for r in rows) == sorted(p.name for p in scenes.glob("*.wav"))
    for r in rows:
        p = np.array([float(r[c]) for c in store.classes])
        assert p.sum() == pytest.approx(1.0, abs=1e-4) and (p > 0).all()
        assert r["scene_label"] == store.classes[int(p.argmax())]
    _, windows = read_dcase(tmp_path / "pred.windows.csv")
    assert len(windows) == 10 * len(rows)  # ten 1-s windows per 10-s recording
    assert [w["start_s"] for w in windows[:3]] == ["0.000", "1.000", "2.000"]


def test_mono_and_rate_are_handled_like_the_models_own_input(student, tmp_path):
    """A 48 kHz stereo file predicts like its own mono mix resampled to 32 kHz by hand."""
    import torch
    import torchaudio

    model_file, _ = student
    src = need(REAL_SCENES / "tut2018" / "park.wav")
    audio, sr = sf.read(src, dtype="float32", always_2d=True)
    mono32 = torchaudio.functional.resample(torch.from_numpy(audio.mean(1)), sr, 32000).numpy()
    sf.write(tmp_path / "park32.wav", mono32, 32000, subtype="FLOAT")
    shutil.copy(src, tmp_path / "park48.wav")
    done = cli("--model-file", str(model_file), str(tmp_path / "park48.wav"), str(tmp_path / "park32.wav"), "--out", str(tmp_path / "p.csv"))
    assert done.returncode == 0, done.stderr[-2000:]
    _, rows = read_dcase(tmp_path / "p.csv")
    a, b = (np.array([float(v) for k, v in r.items() if k not in ("filename", "scene_label")]) for r in rows)
    np.testing.assert_allclose(a, b, atol=2e-3)


def test_broken_files_are_named_the_good_ones_predicted(student, tmp_path):
    model_file, store = student
    scenes = need(REAL_SCENES / "tut2018")
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(scenes / "bus.wav", folder / "bus.wav")
    shutil.copy(scenes / "tram.wav", folder / "sub" / "tram.wav")
    sf.write(folder / "short_8k.flac", np.random.default_rng(0).normal(0, 0.1, 2400), 8000)  # 0.3 s: padded to one window
    (folder / "text.wav").write_text("not audio at all")
    (folder / "cut.wav").write_bytes((scenes / "park.wav").read_bytes()[:30])  # header cut short
    (folder / "torn.wav").write_bytes((scenes / "metro.wav").read_bytes()[:3000])  # header promises 10 s, 10 ms are there
    sf.write(folder / "empty.wav", np.zeros((0, 2)), 48000)
    (folder / "notes.txt").write_text("ignored: not an audio suffix")
    out = tmp_path / "pred.csv"
    done = cli("--model-file", str(model_file.parent), str(folder), str(tmp_path / "absent.wav"), "--out", str(out))  # a student folder works too
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    for bad in ("text.wav", "cut.wav", "empty.wav", "torn.wav", "absent.wav"):
        assert sum(bad in line for line in errors) == 1, errors
    assert any("torn.wav: cannot be read (truncated: its header declares 10.00 s of audio, the file holds 0.0" in e for e in errors)
    assert any("absent.wav: cannot be read (no such file)" in e for e in errors)
    assert "System error" not in done.stderr
    assert "5 of 8 file(s) could not be read" in errors[-1]
    assert "short_8k.flac is 0.30 s long, shorter than one 1.00-s window" in done.stderr
    _, rows = read_dcase(out)
    assert sorted(r["filename"] for r in rows) == ["bus.wav", "short_8k.flac", "sub/tram.wav"]


def test_fp32_checkpoint_and_bad_model_paths(student, tmp_path):
    model_file, store = student
    clip = need(REAL_SCENES / "tut2018" / "metro.wav")
    done = cli("--model-file", str(model_file.with_name("model.pt")), str(clip), "--out", str(tmp_path / "fp32.csv"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_dcase(tmp_path / "fp32.csv")[1][0]["filename"] == str(clip)
    for bad in (str(tmp_path / "missing.pt"), str(tmp_path)):
        done = cli("--model-file", bad, str(clip), "--out", str(tmp_path / "x.csv"))
        assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.strip().splitlines()[-1].startswith("error:")
    readme = tmp_path / "report.md"  # a wrong file the user gave: named as not a model, never "delete it"
    readme.write_text("# report\n")
    done = cli("--model-file", str(readme), str(clip), "--out", str(tmp_path / "x.csv"))
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and "is not a model file asc-dist wrote" in last and "delete" not in last and "model_int8.pt" in last
    assert not (tmp_path / "x.csv").exists()


def test_a_30_minute_file_is_predicted_in_bounded_memory(student, tmp_path):
    """All 1,800 windows of a long recording used to go through one forward pass (5.1 GB peak); in batches of
    --batch-size the whole process stays under 1.5 GB, and progress is logged inside the file."""
    model, _ = student
    long = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(long, "w", samplerate=32000, channels=1, subtype="PCM_16") as f:
        for _ in range(30):  # a minute at a time
            f.write((0.1 * rng.standard_normal(60 * 32000)).astype(np.float32))
    probe = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "asc_dist.predict", "--model-file", str(model), str(long),
                           "--out", str(tmp_path / "p.csv"), "--progress-s", "0"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    peak_mb = int(done.stdout.strip().splitlines()[-1]) / 1024
    assert peak_mb < 1536, f"peak RSS {peak_mb:.0f} MB"
    assert "long.wav:" in done.stderr and "windows" in done.stderr  # progress inside the file
    rows = list(csv.reader((tmp_path / "p.csv").open(), delimiter="\t"))
    assert len(rows) == 2 and Path(rows[1][0]).name == "long.wav"
