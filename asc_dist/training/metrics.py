"""The one place for per-device and per-class metrics (never pasted into each training script).

DCASE Task 1 reports accuracy per device (A, B, C, S1-S6) and singles out S4-S6, which only the test split
holds (DS-FlexiNet, arXiv 2412.20722, Table I): "unseen" accuracy is over those. Accuracies are fractions in [0, 1]; the text
table prints percentages as the papers do. Log loss is the mean negative log softmax of the true class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from asc_dist.data.table import DEVICE_ORDER, UNSEEN_DEVICES
from asc_dist.errors import LogitsError


def order_devices(devices: Sequence[str]) -> list[str]:
    """a, b, c, s1..s6 first (the papers' column order), any other device names after, sorted."""
    present = set(devices)
    known = [d for d in DEVICE_ORDER if d in present]
    return known + sorted(present - set(DEVICE_ORDER))


def _json_float(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _mean(mask: np.ndarray, correct: np.ndarray) -> float:
    return float(correct[mask].mean()) if mask.any() else float("nan")


@dataclass
class Report:
    """Metrics of one set of predictions. NaN marks a group with no clips (e.g. no unseen device)."""

    n: int
    accuracy: float
    macro_class_accuracy: float
    log_loss: float
    per_device: dict[str, float]
    device_counts: dict[str, int]
    per_class: dict[str, float]
    seen_accuracy: float
    unseen_accuracy: float
    unseen_devices: list[str]
    classes: list[str]
    confusion: np.ndarray = field(repr=False)  # [C, C] int64, rows = true class, columns = predicted

    def to_dict(self) -> dict:
        """JSON-safe: plain floats and lists, None instead of NaN."""
        return {
            "n": self.n,
            "accuracy": _json_float(self.accuracy),
            "macro_class_accuracy": _json_float(self.macro_class_accuracy),
            "log_loss": _json_float(self.log_loss),
            "per_device": {k: _json_float(v) for k, v in self.per_device.items()},
            "device_counts": dict(self.device_counts),
            "per_class": {k: _json_float(v) for k, v in self.per_class.items()},
            "seen_accuracy": _json_float(self.seen_accuracy),
            "unseen_accuracy": _json_float(self.unseen_accuracy),
            "unseen_devices": list(self.unseen_devices),
            "classes": list(self.classes),
            "confusion": self.confusion.tolist(),
        }

    def to_metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat finite floats for `Run.log_metrics`, e.g. {"test/accuracy": .., "test/acc_device_s4": ..}."""
        flat = {
            "accuracy": self.accuracy,
            "macro_class_accuracy": self.macro_class_accuracy,
            "log_loss": self.log_loss,
            "seen_accuracy": self.seen_accuracy,
            "unseen_accuracy": self.unseen_accuracy,
        }
        flat.update({f"acc_device_{d}": v for d, v in self.per_device.items()})
        flat.update({f"acc_class_{c}": v for c, v in self.per_class.items()})
        return {prefix + k: float(v) for k, v in flat.items() if math.isfinite(v)}


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def evaluate_predictions(
    logits: np.ndarray,
    labels: np.ndarray,
    devices: Sequence[str],
    classes: Sequence[str],
    seen_devices: Sequence[str] | None = None,
) -> Report:
    """Accuracy overall, per device, per class, seen vs unseen devices, log loss and confusion matrix.

    Unseen devices are those not in `seen_devices`; by default S4, S5 and S6 (absent from TAU22 train).
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    classes = list(classes)
    n_classes = len(classes)
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] != n_classes:
        raise LogitsError(f"logits have shape {logits.shape}; expected [n_clips > 0, {n_classes}] for classes {classes}")
    n = logits.shape[0]
    if labels.shape != (n,) or len(devices) != n:
        raise LogitsError(
            f"{n} rows of logits but {labels.shape[0] if labels.ndim else 0} labels and {len(devices)} devices; "
            "pass one label and one device per clip, in the same order"
        )
    if not np.isfinite(logits).all():
        bad = int((~np.isfinite(logits).all(axis=1)).sum())
        raise LogitsError(f"{bad} of {n} rows of logits hold NaN or inf; the model diverged or the logits file is corrupt")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= n_classes:
        raise LogitsError(
            f"labels must be integers in [0, {n_classes}); got {labels.dtype} in [{labels.min()}, {labels.max()}]"
        )

    devices_arr = np.asarray(list(devices), dtype=object)
    predicted = logits.argmax(axis=1)
    correct = (predicted == labels).astype(np.float64)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)

    per_class = {c: _mean(labels == k, correct) for k, c in enumerate(classes)}
    present = [v for v in per_class.values() if not math.isnan(v)]
    device_names = order_devices(list(devices))
    per_device = {d: _mean(devices_arr == d, correct) for d in device_names}
    counts = {d: int((devices_arr == d).sum()) for d in device_names}
    if seen_devices is None:
        unseen = [d for d in device_names if d in UNSEEN_DEVICES]
    else:
        unseen = [d for d in device_names if d not in set(seen_devices)]
    unseen_mask = np.isin(devices_arr, unseen)
    log_probs = _log_softmax(logits)
    return Report(
        n=n,
        accuracy=float(correct.mean()),
        macro_class_accuracy=float(np.mean(present)),
        log_loss=float(-log_probs[np.arange(n), labels].mean()),
        per_device=per_device,
        device_counts=counts,
        per_class=per_class,
        seen_accuracy=_mean(~unseen_mask, correct),
        unseen_accuracy=_mean(unseen_mask, correct),
        unseen_devices=unseen,
        classes=classes,
        confusion=confusion,
    )


def _pct(x: float, digits: int) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.{digits}f}"


def format_table(reports: Report | Mapping[str, Report], digits: int = 2) -> str:
    """A small text table, one row per report (the papers' layout): accuracy % per device, then seen,
    unseen, overall and macro-class accuracy %, and log loss."""
    if isinstance(reports, Report):
        reports = {"model": reports}
    devices = order_devices([d for r in reports.values() for d in r.per_device])
    header = ["", *devices, "seen", "unseen", "acc", "macro", "logloss"]
    rows = [header]
    for name, r in reports.items():
        rows.append(
            [
                name,
                *(_pct(r.per_device.get(d, float("nan")), digits) for d in devices),
                _pct(r.seen_accuracy, digits),
                _pct(r.unseen_accuracy, digits),
                _pct(r.accuracy, digits),
                _pct(r.macro_class_accuracy, digits),
                f"{r.log_loss:.3f}",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    def line(row: list[str]) -> str:
        return " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    lines = [line(row) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
