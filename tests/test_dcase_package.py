"""Device-specific students and the DCASE 2025 Task 1 inference package built from them: installed into a fresh
folder and imported by name, it returns a distinct model per training device and the general one for others, the
organisers' measurement of those models gives real numbers equal to `python -m asc_dist.complexity`, and its
`predict` on real recordings equals `asc_dist.predict --device`."""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchinfo

from tests.conftest import REAL_SCENES, need

LABEL = "Doe_ASC_task1"
SEEN = ["a", "b", "c", "s1", "s2", "s3"]  # the synthetic set's training devices


def organisers_measure(model: torch.nn.Module, input_size) -> tuple[int, int]:
    """What the DCASE 2025 check computes (CPJKU/dcase2025_task1_inference complexity.py, written out here):
    torchinfo MACs of a float copy on the input's shape, and parameter bytes by dtype."""
    macs = torchinfo.summary(copy.deepcopy(model).float(), input_size=tuple(input_size), verbose=0).total_mult_adds
    sizes = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2, torch.int8: 1, torch.uint8: 1, torch.qint8: 1, torch.quint8: 1}
    return int(macs), sum(p.numel() * sizes[p.dtype] for p in model.parameters())


def test_fine_tuning_writes_a_model_per_training_device(device_student):
    import mlflow

    folder, store, result = device_student
    devices = sorted(p.name for p in (folder / "devices").iterdir())
    assert devices == sorted(SEEN)
    for dev in devices:
        for name in ("model.pt", "model_int8.pt", "model_int8_open.pt", "result.json"):
            assert (folder / "devices" / dev / name).is_file(), (dev, name)
    general = torch.load(folder / "model.pt", weights_only=False)["model"]
    tuned = torch.load(folder / "devices" / "a" / "model.pt", weights_only=False)["model"]
    assert any(not torch.equal(general[k], tuned[k]) for k in general), "the device copy is the general model unchanged"
    aware = result["device_aware"]
    assert set(aware["test_per_device"]) >= {"s4", "s5", "s6"} and 0.0 <= aware["test_acc"] <= 1.0
    # unseen devices are scored by the general student: the same accuracy there, by construction
    for dev in ("s4", "s5", "s6"):
        assert aware["test_per_device"][dev] == pytest.approx(result["test_per_device"][dev])
    runs = mlflow.MlflowClient(f"sqlite:///{folder.parent.parent / 'mlflow.db'}").search_runs(
        [e.experiment_id for e in mlflow.MlflowClient(f"sqlite:///{folder.parent.parent / 'mlflow.db'}").search_experiments()],
        filter_string=f"tags.mlflow.parentRunId = '{result['mlflow_run_id']}'")
    assert sorted(r.info.run_name.rsplit("/", 1)[-1] for r in runs) == sorted(SEEN)


def test_routed_system_scores_each_copy_on_its_own_device_only(device_student):
    """The routed report equals the plain way: every copy scoring every val/test clip, its device's rows kept."""
    from asc_dist.distill.devices import load_student, routed_reports
    from asc_dist.nets.features import STUDENT_MEL, LogMel
    from asc_dist.training.evaluation import score_splits, split_reports

    folder, store, _ = device_student
    general, cfg = load_student(folder / "model.pt")
    copies = {dev: load_student(folder / "devices" / dev / "model.pt")[0] for dev in SEEN}
    routed = routed_reports(general, copies, store, cfg, "cpu")
    d, front = cfg.data, LogMel(STUDENT_MEL)
    logits, rows = score_splits(general, front, store, ("val", "test"), d.val_fraction, d.val_seed, "cpu", amp=cfg.amp)
    for dev, model in copies.items():
        mask = rows.device == dev
        logits[mask] = score_splits(model, front, store, ("val", "test"), d.val_fraction, d.val_seed, "cpu", amp=cfg.amp)[0][mask]
    for split in ("val", "test"):
        here = rows.split == split
        expected = float((logits[here].argmax(1) == rows.label[here]).mean())
        assert routed[split].accuracy == pytest.approx(expected, abs=1.5 / here.sum())  # a tie may break the other way
        plain = split_reports(logits, rows.label, rows.device, rows.split, store.classes, seen=sorted(SEEN))[split]
        assert routed[split].log_loss == pytest.approx(plain.log_loss, rel=1e-4)  # the same logits on the same rows


def _read(path: Path) -> dict[str, np.ndarray]:
    with open(path) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return {r["filename"]: np.array([float(v) for k, v in r.items() if k not in ("filename", "scene_label")]) for r in rows}


def test_predict_device_auto_routes_by_the_tau_file_name(device_student, synth_root, tmp_path):
    folder, store, _ = device_student
    audio = sorted((synth_root / "audio").glob("*.wav"))
    pick = {"b": [p for p in audio if p.stem.endswith("-b")][0], "s5": [p for p in audio if p.stem.endswith("-s5")][:2]}
    clips = tmp_path / "clips"
    clips.mkdir()
    for p in [pick["b"], *pick["s5"]]:
        (clips / p.name).write_bytes(p.read_bytes())
    (clips / "noname.wav").write_bytes(pick["b"].read_bytes())  # the same audio, no device in its name

    def predict(model: Path, out: str, *extra: str) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "asc_dist.predict", "--model-file", str(model), str(clips), "--out", str(tmp_path / out), *extra],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done

    routed = predict(folder, "auto.csv", "--device", "auto")
    predict(folder / "model_int8.pt", "general.csv")
    predict(folder / "devices" / "b" / "model_int8.pt", "b.csv")
    auto, general, b = _read(tmp_path / "auto.csv"), _read(tmp_path / "general.csv"), _read(tmp_path / "b.csv")
    np.testing.assert_allclose(auto[pick["b"].name], b[pick["b"].name], atol=1e-6)
    assert not np.allclose(auto[pick["b"].name], general[pick["b"].name], atol=1e-6)
    for p in pick["s5"]:
        np.testing.assert_allclose(auto[p.name], general[p.name], atol=1e-6)
    np.testing.assert_allclose(auto["noname.wav"], general["noname.wav"], atol=1e-6)
    assert routed.stderr.count("device 's5' has no model of its own") == 1, routed.stderr
    assert "no device in the file name 'noname.wav'" in routed.stderr
    assert list(auto) == list(general)  # same rows, same order: the CSV does not change with --device


def test_package_installs_routes_devices_and_passes_the_organisers_check(device_student, tmp_path):
    folder, store, _ = device_student
    out = tmp_path / "pkg"
    done = subprocess.run([sys.executable, "-m", "asc_dist.export", "--model-file", str(folder), "--dcase-package", LABEL, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / LABEL / "resources" / "dummy.wav").is_file() and "torchinfo==" in (out / "requirements.txt").read_text()
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(site), str(out)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-2000:]
    assert (site / LABEL / "ckpts" / "general.pt").is_file() and (site / LABEL / "resources" / "dummy.wav").is_file()
    probe = f"""
import copy, json, sys, torch, torchinfo
import {LABEL}.{LABEL}_1 as api
sizes = {{torch.float32: 4, torch.int8: 1}}
model = api.load_model()
dummy = str(__import__("importlib.resources").resources.files("{LABEL}.resources") / "dummy.wav")
devices = {SEEN!r} + ["s4", "s5", "s6", "zz"]
inputs = api.load_inputs([dummy] * len(devices), devices, model)
out = {{}}
for dev, x in zip(devices, inputs):
    m = api.get_model_for_device(model, dev)
    macs = torchinfo.summary(copy.deepcopy(m).float(), input_size=tuple(x.shape), verbose=0).total_mult_adds
    out[dev] = {{"id": id(m), "general": m is model.general, "macs": int(macs), "bytes": sum(p.numel() * sizes[p.dtype] for p in m.parameters()),
                "shape": list(x.shape)}}
print(json.dumps(out))
"""
    env = {**os.environ, "PYTHONPATH": str(site)}
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    got = json.loads(ran.stdout.strip().splitlines()[-1])
    assert len({got[d]["id"] for d in SEEN}) == len(SEEN) and not any(got[d]["general"] for d in SEEN)
    assert all(got[d]["general"] for d in ("s4", "s5", "s6", "zz"))
    cli = subprocess.run([sys.executable, "-m", "asc_dist.complexity", str(out), "--json"], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr[-2000:]
    measured = json.loads(cli.stdout)
    for dev in SEEN + ["s4"]:
        ours = measured[dev if dev in SEEN else "general"]
        assert got[dev]["macs"] == ours["macs"] > 1_000_000 and got[dev]["bytes"] == ours["param_bytes"] > 10_000, (dev, got[dev], ours)
        assert got[dev]["shape"] == [1, store.sample_rate]  # one window of the 1-s dummy, resampled from 44.1 kHz
    # int8 weights count one byte each: the float32 part is the biases only
    assert measured["general"]["param_bytes_by_dtype"]["int8"] > measured["general"]["param_bytes_by_dtype"]["float32"]
    check = subprocess.run([sys.executable, str(out / "test_complexity.py"), "--submission_name", LABEL, "--submission_index", "1",
                            "--out", str(tmp_path / "cx.json")], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert check.returncode == 0, check.stderr[-2000:]
    cx = json.loads((tmp_path / "cx.json").read_text())
    assert cx["per_device"]["a"] == {"MACs": got["a"]["macs"], "Params": got["a"]["bytes"]} and len(cx["per_device"]) == 13
    wrong = subprocess.run([sys.executable, str(out / "test_complexity.py"), "--submission_name", "Nobody_X_task1"], capture_output=True,
                           text=True, timeout=120, env=env, cwd=tmp_path)
    assert wrong.returncode != 0 and "Nobody_X_task1" in wrong.stderr


def test_package_predict_equals_asc_dist_predict_per_device(device_student, tmp_path):
    folder, store, _ = device_student
    out = tmp_path / "pkg"
    done = subprocess.run([sys.executable, "-m", "asc_dist.export", "--model-file", str(folder), "--dcase-package", LABEL, "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    files = sorted(str(p) for p in need(REAL_SCENES / "tut2018").glob("*.wav"))[:3]
    env = {**os.environ, "PYTHONPATH": str(out)}
    for device in ("b", "s5"):
        code = (f"import json, sys, torch; from {LABEL} import {LABEL}_1 as s;"
                f"logits, classes = s.predict(sys.argv[1:], [{device!r}] * (len(sys.argv) - 1));"
                "print(json.dumps({'classes': classes, 'probs': [torch.softmax(l, 0).tolist() for l in logits]}))")
        ran = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
        assert ran.returncode == 0, ran.stderr[-2000:]
        got = json.loads(ran.stdout.strip().splitlines()[-1])
        assert got["classes"] == store.classes
        csv_out = tmp_path / f"{device}.csv"
        pred = subprocess.run([sys.executable, "-m", "asc_dist.predict", "--model-file", str(folder), "--device", device, *files, "--out", str(csv_out)],
                              capture_output=True, text=True, timeout=300)
        assert pred.returncode == 0, pred.stderr[-2000:]
        expected = _read(csv_out)
        np.testing.assert_allclose(np.array(got["probs"]), np.array(list(expected.values())), atol=2e-6)


def test_one_registered_version_carries_the_device_set(device_student, synth_root, tmp_path):
    """The registry keeps the general model and its device copies in one version; `predict --device auto` on its
    models:/ URI routes a device-b file to the device-b model."""
    import mlflow

    from asc_dist.infra import tracking
    from asc_dist.run.layout import device_folders
    from asc_dist.ship.mlflow_model import register_student

    folder, store, result = device_student
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    devices = {d: f / "model_int8.pt" for d, f in device_folders(folder).items()}
    with tracking.run(uri, "sweep", "int8-devices") as run:
        version = register_student(folder / "model_int8.pt", store.split("test").waves(np.arange(1))[0], run.run_id, uri, "asc-dist-dev", {}, devices)
    assert mlflow.MlflowClient(uri).get_model_version("asc-dist-dev", str(version)).tags["devices"] == ",".join(SEEN)
    clip = next(p for p in sorted((synth_root / "audio").glob("*.wav")) if p.stem.endswith("-b"))
    runs = {}
    for name, model in (("registry", f"models:/asc-dist-dev/{version}"), ("b", str(folder / "devices" / "b" / "model_int8.pt")),
                        ("general", str(folder / "model_int8.pt"))):
        routing = ["--device", "auto"] if name == "registry" else []  # the references: one model each
        done = subprocess.run([sys.executable, "-m", "asc_dist.predict", "--model-file", model, "--mlflow-uri", uri, *routing,
                               str(clip), "--out", str(tmp_path / f"{name}.csv")], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[name] = _read(tmp_path / f"{name}.csv")[str(clip)]
    np.testing.assert_allclose(runs["registry"], runs["b"], atol=1e-6)
    assert not np.allclose(runs["registry"], runs["general"], atol=1e-6)
