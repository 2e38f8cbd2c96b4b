"""`data tauify` on real recordings: UrbanSound8K slices (FLAC, 32 kHz) and TUT 2018 scenes (48 kHz stereo wav)."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asc_dist.data.check import check_dataset
from asc_dist.data.table import load_clip_table
from asc_dist.data.tauify import MANIFEST, TauifyConfig, cut_parts, tauify
from asc_dist.errors import DatasetError
from asc_dist.training.context import recording_of
from asc_dist.training.ir_bank import held_out_irs
from tests.conftest import MICIRP, REAL_SCENES, SHARED_DATA, need

US8K = SHARED_DATA / "us8k-dev"


def us8k_subset(tmp_path: Path, per_fold: int = 4) -> Path:
    """A labels CSV over a few real us8k-dev slices: whole freesound groups from folds 1, 2 and 3."""
    rows = list(csv.DictReader((need(US8K) / "meta.csv").open()))
    chosen: list[dict] = []
    for fold in ("1", "2", "3"):
        groups = sorted({r["freesound_id"] for r in rows if r["fold"] == fold})
        for g in groups:
            members = [r for r in rows if r["freesound_id"] == g]
            if len([r for r in chosen if r["fold"] == fold]) + len(members) <= per_fold:
                chosen += members
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(chosen)
    return labels


def tut_labels(tmp_path: Path, scenes=("park", "bus", "metro", "tram")) -> Path:
    src = need(REAL_SCENES / "tut2018")
    labels = tmp_path / "tut.csv"
    labels.write_text("file\tscene\trecording\n" + "".join(f"{s}.wav\t{s}\trec{i}\n" for i, s in enumerate(scenes)))
    return src, labels


def test_tut_scenes_become_one_second_parts_that_reassemble(tmp_path):
    src, labels = tut_labels(tmp_path)
    out = tmp_path / "tau"
    cfg = TauifyConfig(src=str(src), out=str(out), labels=str(labels), file_column="file", label_column="scene",
                       group_column="recording", test_fraction=0.5, seed=1)
    summary = tauify(cfg)
    assert summary.clips["train"] + summary.clips["test"] == 40  # 4 recordings x 10 s -> 10 parts each (48 kHz stereo -> 32 kHz mono)
    report = check_dataset(out)
    assert report.ok, report.format()
    meta = list(csv.DictReader((out / "meta.csv").open(), delimiter="\t"))
    by_recording: dict[str, list[int]] = {}
    for row in meta:
        key, part = recording_of(row["filename"])
        by_recording.setdefault(key, []).append(part)
        assert row["source_label"] == "a" and row["identifier"].endswith(f"-rec{['park', 'bus', 'metro', 'tram'].index(row['scene_label'])}")
    assert sorted(map(sorted, by_recording.values())) == [list(range(10))] * 4
    # deterministic for a seed: the same files, byte for byte
    again = tmp_path / "tau2"
    tauify(TauifyConfig(**{**cfg.__dict__, "out": str(again)}))
    assert (again / "meta.csv").read_text() == (out / "meta.csv").read_text()
    first = meta[0]["filename"]
    assert hashlib.sha256((again / first).read_bytes()).digest() == hashlib.sha256((out / first).read_bytes()).digest()


def test_us8k_splits_keep_groups_apart_and_unseen_devices_out_of_training(tmp_path):
    labels = us8k_subset(tmp_path)
    out = tmp_path / "us8k"
    summary = tauify(TauifyConfig(src=str(US8K), out=str(out), labels=str(labels), test_column="fold", test_values=("3",),
                                  dirs=str(need(MICIRP)), train_devices=("b", "c"), test_devices=("s4", "s5")))
    manifest = json.loads((out / MANIFEST).read_text())
    unseen = manifest["unseen_device_irs"]
    assert len(unseen) == 2 and set(unseen) == {summary.devices["s4"], summary.devices["s5"]}
    assert not set(unseen) & {summary.devices["b"], summary.devices["c"]}  # disjoint responses
    assert held_out_irs(out) == unseen  # DIR banks leave them out by name
    table = load_clip_table(out, val_fraction=0.3)
    group = np.array([i.split("-", 1)[1] for i in table.identifier])
    sides = {s: set(group[table.split == s]) for s in ("train", "val", "test")}
    assert sides["train"] and sides["val"] and sides["test"]
    assert not (sides["train"] & sides["val"]) and not (sides["train"] & sides["test"]) and not (sides["val"] & sides["test"])
    assert set(table.device[table.split != "test"]) == {"a", "b", "c"}
    assert set(table.device[table.split == "test"]) == {"a", "b", "c", "s4", "s5"}
    rows = list(csv.DictReader(labels.open()))
    assert sides["test"] == {r["freesound_id"] for r in rows if r["fold"] == "3"}


def test_last_partial_part_rule():
    part = 100
    parts, dropped = cut_parts(np.ones(250, dtype=np.float32), part)  # a half part at the end: kept, zero-padded
    assert len(parts) == 3 and not dropped and parts[2][:50].sum() == 50 and parts[2][50:].sum() == 0
    parts, dropped = cut_parts(np.ones(240, dtype=np.float32), part)  # less than half: dropped
    assert len(parts) == 2 and dropped


@pytest.mark.parametrize("problem", ["unreadable", "label missing", "group column missing", "too short"])
def test_bad_input_is_named_and_nothing_is_written(tmp_path, problem):
    src = tmp_path / "src"
    src.mkdir()
    import soundfile as sf

    sf.write(str(src / "ok.wav"), np.zeros(32000 * 2, dtype=np.float32), 32000)
    sf.write(str(src / "ok2.wav"), np.zeros(32000 * 2, dtype=np.float32), 32000)
    rows = [("ok.wav", "dog", "g1", "1"), ("ok2.wav", "cat", "g2", "2")]
    header = "filename,class,freesound_id,fold"
    expect = {"unreadable": "bad.wav", "label missing": "label is missing", "group column missing": "no column freesound_id",
              "too short": "shorter than one part"}[problem]
    if problem == "unreadable":
        (src / "bad.wav").write_bytes(b"RIFF not really a wav")
        rows.append(("bad.wav", "dog", "g3", "2"))
    elif problem == "label missing":
        rows.append(("ok.wav", "", "g1", "1"))
    elif problem == "group column missing":
        header = "filename,class,source,fold"
    else:
        sf.write(str(src / "short.wav"), np.zeros(8000, dtype=np.float32), 32000)
        rows.append(("short.wav", "dog", "g4", "2"))
    (src / "meta.csv").write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows))
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=expect):
        tauify(TauifyConfig(src=str(src), out=str(out), test_column="fold", test_values=("2",)))
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["src"]  # no dataset, no temp folder
    if problem == "unreadable":  # the CLI says it in one line, exit 2
        done = subprocess.run([sys.executable, "-m", "asc_dist.data", "tauify", str(src), str(out), "--test-column", "fold",
                               "--test-values", "2"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "bad.wav" in done.stderr
        assert not out.exists()
