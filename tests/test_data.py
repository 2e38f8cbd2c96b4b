"""Data layer on real audio: TAU layout reading, check, validation carve-out, packing and its fingerprint."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from asc_dist.data.check import check_dataset
from asc_dist.data.store import PackConfig, WaveformStore, pack
from asc_dist.data.table import carve_validation, load_clip_table, read_layout
from asc_dist.errors import DatasetError
from tests.conftest import REAL_SCENES, need


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asc_dist.data", *args], capture_output=True, text=True, timeout=300)


def test_check_real_tau_clip_names_missing_files():
    root = need(REAL_SCENES / "tau2022_mobile_dev")
    proc = run_cli("check", str(root))
    assert proc.returncode == 2
    assert "problem missing: 5" in proc.stdout
    assert "airport-barcelona-203-6129-0-a.wav" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_check_clean_real_dataset(real_tau):
    proc = run_cli("check", str(real_tau))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no problems found" in proc.stdout
    report = check_dataset(real_tau)
    assert report.expected == {"sample_rate": 48000, "channels": 2, "duration_s": 1.0}
    assert len(report.classes) == 10
    assert report.counts["train"]["a"]["airport"] == 2 and report.counts["test"]["b"]["tram"] == 2


def test_check_reports_each_kind(real_tau):
    clips = sorted((real_tau / "audio").glob("*.wav"))
    clips[0].write_bytes(b"RIFF not really a wav")
    clips[1].unlink()
    sf.write(clips[2], np.zeros((16000, 2)), 16000, subtype="PCM_16")  # wrong rate (and length)
    sf.write(clips[3], np.zeros(48000), 48000, subtype="PCM_24")  # mono among stereo
    sf.write(clips[4], np.zeros((24000, 2)), 48000, subtype="PCM_24")  # half a second
    fold = real_tau / "evaluation_setup" / "fold1_train.csv"
    fold.write_text(fold.read_text() + "audio/ghost-x-1-0-0-a.wav\tairport\n")
    report = check_dataset(real_tau)
    for kind in ("corrupt", "missing", "sample_rate", "channels", "duration", "not_in_meta"):
        assert kind in report.problems, kind
    assert report.problems["corrupt"] == [clips[0].relative_to(real_tau).as_posix()]
    proc = run_cli("check", str(real_tau))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "problem corrupt: 1" in proc.stdout and "problem not_in_meta: 1" in proc.stdout


def test_check_bom_duplicates_typo_label_and_no_val(real_tau):
    """A spreadsheet's UTF-8 BOM is read, a repeated row is a problem (it would be packed twice), a label far rarer
    than the rest and a missing validation split are warnings that name what to look at."""
    meta = real_tau / "meta.csv"
    meta.write_bytes(b"\xef\xbb\xbf" + meta.read_bytes())
    assert check_dataset(real_tau).ok
    lines = meta.read_text(encoding="utf-8-sig").splitlines()
    lines[1] = lines[1].replace("\tairport\t", "\tairprot\t")  # one clip with a typo label
    meta.write_text("\n".join(lines) + "\n")
    fold = real_tau / "evaluation_setup" / "fold1_train.csv"
    fold.write_text(fold.read_text() + fold.read_text().splitlines()[2] + "\n")
    report = check_dataset(real_tau)
    assert report.problems["duplicate"] == [f"{fold.read_text().splitlines()[2].split(chr(9))[0]} (fold1_train.csv, 2 times)"]
    assert any("'airprot' has 1 clip" in w for w in report.warnings)
    assert any("no validation split" in w for w in report.warnings)  # real_tau trains each scene on one location
    proc = run_cli("check", str(real_tau))
    assert proc.returncode == 2 and "problem duplicate: 1" in proc.stdout and "warning: label 'airprot'" in proc.stdout


def test_classes_come_from_the_data(real_tau):
    meta = real_tau / "meta.csv"
    lines = meta.read_text().splitlines()
    keep = [lines[0]] + [l for l in lines[1:] if l.split("\t")[1] in ("bus", "park", "tram")]
    meta.write_text("\n".join(keep) + "\n")
    for name in ("fold1_train.csv", "fold1_evaluate.csv"):
        f = real_tau / "evaluation_setup" / name
        rows = f.read_text().splitlines()
        f.write_text("\n".join([rows[0]] + [r for r in rows[1:] if r.split("\t")[1] in ("bus", "park", "tram")]) + "\n")
    table = load_clip_table(real_tau, val_fraction=0.0)
    assert table.classes == ["bus", "park", "tram"]
    assert set(table.label.tolist()) == {0, 1, 2}


def test_validation_is_carved_by_location():
    rng = np.random.default_rng(0)
    identifier = np.array([f"city{c}-{l}" for c, l in zip(rng.integers(0, 3, 2000), rng.integers(0, 40, 2000))], dtype=object)
    label = rng.integers(0, 10, 2000)
    identifier = np.array([f"{i}-{l}" for i, l in zip(identifier, label)], dtype=object)  # locations are scene-specific
    val = carve_validation(identifier, label, 0.2, seed=3)
    assert not set(identifier[val]) & set(identifier[~val])
    assert 0.15 < val.mean() < 0.35
    assert set(label[val].tolist()) == set(range(10))  # every scene represented
    np.testing.assert_array_equal(val, carve_validation(identifier, label, 0.2, seed=3))
    assert not np.array_equal(val, carve_validation(identifier, label, 0.2, seed=4))


def test_subset_split_restricts_training(real_tau):
    layout = read_layout(real_tau)
    subset = [f for f, _ in layout.fold_train][::2]
    (real_tau / "split25.csv").write_text("filename\tscene_label\n" + "\n".join(f"{f}\tx" for f in subset) + "\n")
    table = load_clip_table(real_tau, val_fraction=0.0, subset_percent=25)
    assert sorted(table.of_split("train").filename.tolist()) == sorted(subset)
    with pytest.raises(DatasetError, match="split50.csv not found"):
        load_clip_table(real_tau, subset_percent=50)


def test_pack_decodes_mono_resampled_and_reuses(real_tau, tmp_path):
    out = tmp_path / "store"
    store_dir, built = pack(real_tau, out, PackConfig(sample_rate=32000))
    assert built
    store = WaveformStore(store_dir)
    assert store.manifest["samples"] == 32000 and store.sample_rate == 32000
    test = store.split("test")
    assert len(test) == 40
    name = test.table.filename[5]
    audio, sr = sf.read(real_tau / name, dtype="float32", always_2d=True)
    expected = torchaudio.functional.resample(torch.from_numpy(audio.mean(axis=1)), sr, 32000).numpy()
    np.testing.assert_allclose(test.waves(np.array([5]))[0], expected[:32000], atol=1e-5)
    # Unchanged dataset: not re-packed.
    assert pack(real_tau, out, PackConfig(sample_rate=32000)) == (store_dir, False)
    # Changed audio: re-packed.
    clip = real_tau / name
    a, sr = sf.read(clip, always_2d=True)
    sf.write(clip, a * 0.5, sr, subtype="PCM_24")
    _, rebuilt = pack(real_tau, out, PackConfig(sample_rate=32000))
    assert rebuilt and WaveformStore(store_dir).fingerprint != store.fingerprint


def test_pack_corrupt_file_leaves_no_store(real_tau, tmp_path):
    victim = sorted((real_tau / "audio").glob("*.wav"))[7]
    victim.write_bytes(victim.read_bytes()[:20])
    out = tmp_path / "store"
    with pytest.raises(DatasetError, match=victim.name):
        pack(real_tau, out)
    assert not out.exists()
    assert not list(tmp_path.glob(".store*"))
    proc = run_cli("pack", str(real_tau), "--out", str(out))
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and victim.name in proc.stderr
    assert not out.exists()


def test_store_splits_follow_validation_settings(real_tau, tmp_path):
    store = WaveformStore(pack(real_tau, tmp_path / "s")[0])
    table = store.table(val_fraction=0.0)
    assert set(table.split.tolist()) == {"train", "test"}
    train = store.split("train", val_fraction=0.0)
    assert train.waves(np.arange(3)).shape == (3, 32000)
    assert np.isfinite(train.source).all()


def test_waves_come_back_in_the_order_asked(synth_store):
    import numpy as np

    train = synth_store.split("train")
    index = np.array([5, 0, 17, 3, 3, 11])  # unsorted, with a repeat
    got = train.waves(index)
    assert got.dtype == np.float32 and got.shape == (6, train.source.shape[1])
    for k, i in enumerate(index):
        np.testing.assert_array_equal(got[k], train.source[train.rows[i]])


def test_int16_store_round_trips_real_audio_and_is_its_own_data(real_tau, tmp_path):
    """int16 (16-bit PCM) store: within 1/32768 of the float32 store on every clip, half the bytes, decoded to
    float32 on read, and a different fingerprint, so teachers' logits and checkpoints of one are not reused for
    the other."""
    import json

    from asc_dist.run.logits import write_teacher_logits
    from asc_dist.teach.driver import is_done
    from asc_dist.teach.roster import TeacherConfig
    from asc_dist.teach.trial import TeacherRunContext, teacher_checkpoint

    f32 = WaveformStore(pack(real_tau, tmp_path / "f32")[0])
    i16 = WaveformStore(pack(real_tau, tmp_path / "i16", PackConfig(dtype="int16"))[0])
    assert i16.manifest["dtype"] == "int16" and i16.manifest["clipped_samples"] == 0 and i16.manifest["int16_full_scale"] == 32768
    assert (tmp_path / "i16" / "train.npy").stat().st_size * 2 == pytest.approx((tmp_path / "f32" / "train.npy").stat().st_size, rel=0.01)
    for split in ("train", "test"):  # every clip of the store
        a, b = f32.split(split, val_fraction=0.0), i16.split(split, val_fraction=0.0)
        assert b.source.dtype == np.int16
        index = np.arange(len(a))[::-1]  # every clip, out of order
        want, got = a.waves(index), b.waves(index)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1 / 32768)
        assert np.abs(got - want).max() > 0  # really re-quantised (24-bit source resampled)
        np.testing.assert_array_equal(got, b.source[b.rows[index]].astype(np.float32) * (1 / 32768))
    assert np.abs(f32.split("train").waves(np.arange(4))).max() > 0.01  # not silence

    assert i16.fingerprint != f32.fingerprint
    t = TeacherConfig(name="t", family="cnn")
    table = f32.table()
    write_teacher_logits(tmp_path / "run", "t", table.filename, table.split, table.device, table.label,
                         np.zeros((len(table), len(f32.classes)), dtype=np.float32), f32.classes,
                         {"config_hash": t.config_hash(), "val_carve": [0.15, 0]}, f32.fingerprint)  # fmt: skip
    assert is_done(tmp_path / "run", t, f32.fingerprint) and not is_done(tmp_path / "run", t, i16.fingerprint)
    keys = {teacher_checkpoint(t, TeacherRunContext(str(tmp_path / "run"), str(s.path), 0.15, 0, s.fingerprint, "", "", None)).key
            for s in (f32, i16)}
    assert len(keys) == 2
    assert json.loads((tmp_path / "f32" / "manifest.json").read_text())["dtype"] == "float32"


def test_pack_cli_dtype_choice_and_steps_keep_it(real_tau, tmp_path):
    import json

    from asc_dist.data.prepare import DataConfig, prepare_store

    out = tmp_path / "store"
    proc = run_cli("pack", str(real_tau), "--out", str(out), "--dtype", "int16")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert printed["dtype"] == "int16" and printed["packed"]
    # A later step (prepare_store, as teachers/students/pipeline call it) reuses the int16 store as it is.
    store = prepare_store(DataConfig(root=str(real_tau), store=str(out)), tmp_path / "run")
    assert store.manifest["dtype"] == "int16" and store.fingerprint == printed["fingerprint"]
    bad = run_cli("pack", str(real_tau), "--out", str(tmp_path / "bad"), "--dtype", "int8")
    assert bad.returncode == 2 and "invalid choice: 'int8'" in bad.stderr and "Traceback" not in bad.stderr
    with pytest.raises(DatasetError, match="store dtype 'int8' is not one of float32, float16, int16"):
        pack(real_tau, tmp_path / "bad", PackConfig(dtype="int8"))
    assert not (tmp_path / "bad").exists()


def test_int16_pack_counts_and_warns_clipped_samples(real_tau, tmp_path, caplog):
    clip = sorted((real_tau / "audio").glob("*.wav"))[0]
    audio, sr = sf.read(clip, dtype="float32", always_2d=True)
    loud = audio / np.abs(audio).max() * 3.0  # float wav: samples up to 3x full scale
    sf.write(clip, loud, sr, subtype="FLOAT")
    with caplog.at_level("WARNING", logger="asc_dist.data.store"):
        store = WaveformStore(pack(real_tau, tmp_path / "s", PackConfig(dtype="int16"))[0])
    n = store.manifest["clipped_samples"]
    assert n > 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f"{n} samples" in warnings[0] and "clipped" in warnings[0]
    name = clip.relative_to(real_tau).as_posix()
    (wave,) = [d.waves(np.flatnonzero(d.table.filename == name))[0]
               for d in (store.split(s, val_fraction=0.0) for s in ("train", "test")) if name in d.table.filename]
    assert wave.max() == 32767 / 32768 and wave.min() == -1.0  # saturated at both ends of the int16 range
