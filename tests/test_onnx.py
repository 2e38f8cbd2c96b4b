"""ONNX export of a trained student (front end included): onnxruntime matches torch on real clips; its own
static int8 runs; `predict` takes the .onnx file."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import REAL_SCENES, need

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install -e '.[onnx]')")


@pytest.fixture(scope="module")
def exported(int8_student, tmp_path_factory):
    model_file, store, _ = int8_student
    out = tmp_path_factory.mktemp("onnx") / "student.onnx"
    done = subprocess.run([sys.executable, "-m", "asc_dist.export", "--onnx", "--model-file", str(model_file.parent), "--out", str(out),
                           "--int8", "--calib-clips", "64"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), model_file


def real_windows() -> np.ndarray:
    from asc_dist.ship.audio import cut, read_mono

    return np.concatenate([cut(read_mono(p, 32000), 32000, 32000, p.name).waves[:3] for p in sorted(need(REAL_SCENES / "tut2018").glob("*.wav"))])


def test_onnxruntime_matches_torch_on_real_clips(exported):
    import onnxruntime as ort

    from asc_dist.ship.load import load_model

    result, model_file = exported
    fp32 = load_model(str(model_file.with_name("model.pt")))
    waves = real_windows()  # 30 one-second windows of the ten real recordings, 48 kHz stereo mixed down
    session = ort.InferenceSession(result["onnx"], providers=["CPUExecutionProvider"])
    got = session.run(None, {"waves": waves})[0]
    expected = fp32.logits(torch.from_numpy(waves)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-3)
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["classes"]) == fp32.classes and meta["sample_rate"] == "32000"
    int8 = ort.InferenceSession(result["onnx_int8"], providers=["CPUExecutionProvider"]).run(None, {"waves": waves})[0]
    assert int8.shape == expected.shape and np.isfinite(int8).all()
    # int8 against torch fp32, within a stated tolerance: a total variation distance of at most 0.05 between the
    # probabilities on average and the same top class for at least 90 % of the windows (measured: 0.001 and 100 %)
    p_int8, p_fp32 = torch.softmax(torch.from_numpy(int8), 1), torch.softmax(torch.from_numpy(expected), 1)
    mean_abs = float((p_int8 - p_fp32).abs().sum(1).mean() / 2)  # total variation distance per window
    agree = float((p_int8.argmax(1) == p_fp32.argmax(1)).float().mean())
    assert mean_abs <= 0.05 and agree >= 0.9, (mean_abs, agree)
    ops = {n.op_type for n in __import__("onnx").load(result["onnx_int8"]).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops  # onnxruntime's QDQ int8


def test_predict_takes_the_onnx_file(exported, tmp_path):
    result, model_file = exported
    scenes = need(REAL_SCENES / "tut2018")
    rows = {}
    for model in (result["onnx"], str(model_file.with_name("model.pt"))):
        out = tmp_path / f"{len(rows)}.csv"
        done = subprocess.run([sys.executable, "-m", "asc_dist.predict", "--model-file", model, str(scenes), "--out", str(out)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        rows[model] = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    onnx_rows, torch_rows = rows.values()
    assert [r[:2] for r in onnx_rows] == [r[:2] for r in torch_rows]  # same files, same labels
    np.testing.assert_allclose(np.array([r[2:] for r in onnx_rows], float), np.array([r[2:] for r in torch_rows], float), atol=1e-4)
