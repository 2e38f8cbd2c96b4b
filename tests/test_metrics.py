"""Per-device / per-class metrics on a hand-checked example, and the figures built from them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from asc_dist.errors import LogitsError
from asc_dist.infra.plots import bar_figure, confusion_matrix_figure, per_device_figure, scatter_figure
from asc_dist.training.metrics import evaluate_predictions, format_table

CLASSES = ["airport", "bus", "park"]
# Eight clips: true label, predicted label (via the argmax below), device.
TRUE = np.array([0, 0, 1, 1, 2, 2, 0, 1])
PRED = np.array([0, 1, 1, 1, 2, 0, 0, 2])
DEVICES = ["s4", "a", "a", "b", "a", "s5", "c", "x9"]


def logits_for(pred: np.ndarray) -> np.ndarray:
    z = np.zeros((len(pred), 3))
    z[np.arange(len(pred)), pred] = 2.0
    return z


def test_hand_example():
    r = evaluate_predictions(logits_for(PRED), TRUE, DEVICES, CLASSES)
    assert r.n == 8 and r.accuracy == pytest.approx(5 / 8)
    assert list(r.per_device) == ["a", "b", "c", "s4", "s5", "x9"]  # paper order, unknown names last
    assert r.per_device == pytest.approx({"a": 2 / 3, "b": 1.0, "c": 1.0, "s4": 1.0, "s5": 0.0, "x9": 0.0})
    assert r.device_counts == {"a": 3, "b": 1, "c": 1, "s4": 1, "s5": 1, "x9": 1}
    assert r.per_class == pytest.approx({"airport": 2 / 3, "bus": 2 / 3, "park": 0.5})
    assert r.macro_class_accuracy == pytest.approx((2 / 3 + 2 / 3 + 0.5) / 3)
    assert r.unseen_devices == ["s4", "s5"]
    assert r.unseen_accuracy == pytest.approx(0.5) and r.seen_accuracy == pytest.approx(4 / 6)
    expected_cm = np.array([[2, 1, 0], [0, 2, 1], [1, 0, 1]])
    np.testing.assert_array_equal(r.confusion, expected_cm)
    # log loss: -log softmax of the true class; softmax of [2, 0, 0] gives e^2 / (e^2 + 2) on the argmax.
    p_hit = np.exp(2) / (np.exp(2) + 2)
    p_miss = 1 / (np.exp(2) + 2)
    assert r.log_loss == pytest.approx(-(5 * np.log(p_hit) + 3 * np.log(p_miss)) / 8)


def test_explicit_seen_devices_and_json():
    r = evaluate_predictions(logits_for(PRED), TRUE, DEVICES, CLASSES, seen_devices=["a", "b", "c", "s4", "s5"])
    assert r.unseen_devices == ["x9"] and r.unseen_accuracy == 0.0
    only_a = evaluate_predictions(logits_for(PRED[:3]), TRUE[:3], ["a"] * 3, CLASSES)
    assert np.isnan(only_a.unseen_accuracy) and np.isnan(only_a.per_class["park"])
    blob = json.loads(json.dumps(only_a.to_dict(), allow_nan=False))
    assert blob["unseen_accuracy"] is None and blob["per_class"]["park"] is None
    assert blob["confusion"] == only_a.confusion.tolist()
    metrics = only_a.to_metrics("test/")
    assert metrics["test/acc_device_a"] == pytest.approx(2 / 3) and "test/unseen_accuracy" not in metrics


def test_bad_logits_raise():
    z = logits_for(PRED)
    z[3, 1] = np.nan
    with pytest.raises(LogitsError, match="NaN"):
        evaluate_predictions(z, TRUE, DEVICES, CLASSES)
    with pytest.raises(LogitsError, match="expected"):
        evaluate_predictions(logits_for(PRED)[:, :2], TRUE, DEVICES, CLASSES)
    with pytest.raises(LogitsError, match="devices"):
        evaluate_predictions(logits_for(PRED), TRUE, DEVICES[:-1], CLASSES)


def test_format_table_lists_devices_and_models():
    r = evaluate_predictions(logits_for(PRED), TRUE, DEVICES, CLASSES)
    other = evaluate_predictions(logits_for(TRUE), TRUE, DEVICES, CLASSES)
    table = format_table({"student": r, "oracle": other})
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[0].split("|")[1].strip() == "a" and "unseen" in lines[0]
    assert "62.50" in lines[2] and "100.00" in lines[3]
    assert "model" in format_table(r)


def test_figures_save_as_png(tmp_path):
    r = evaluate_predictions(logits_for(PRED), TRUE, DEVICES, CLASSES)
    figures = {
        "cm.png": confusion_matrix_figure(r.confusion, CLASSES, "confusion"),
        "cm_counts.png": confusion_matrix_figure(r.confusion, CLASSES, "counts", normalize=False),
        "devices.png": per_device_figure({**r.per_device, "s6": float("nan")}, "per device"),
        "bars.png": bar_figure(["t1", "t2"], [0.4, 0.6], "fusion weights", "weight"),
        "scatter.png": scatter_figure([13.8, 30.7], [0.565, 0.614], ["sm1", "sm2"], "params (K)", "accuracy", "size"),
    }
    for name, fig in figures.items():
        path = tmp_path / name
        fig.savefig(path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000, name
