"""Score a model on the val and test splits and log the result (tables and pictures) to an MLflow run.

One function for teachers and students alike, so a per-device table and a confusion matrix look the same
whichever step produced them.
"""

from __future__ import annotations

import numpy as np

from asc_dist.data.table import ClipTable
from asc_dist.infra.tracking import Run
from asc_dist.training.context import ContextSplit
from asc_dist.training.metrics import Report, evaluate_predictions
from asc_dist.training.trainer import predict


def score_splits(
    model, front, store, splits: tuple[str, ...], val_fraction: float, val_seed: int, device, context_k: int = 1, amp: str = "bf16",
    known: dict[str, np.ndarray | None] | None = None,
) -> tuple[np.ndarray, ClipTable]:
    """Logits (float32) of every clip of `splits` (those present), clean audio in eval mode, and their table rows;
    on CUDA the model runs under bf16 autocast unless `amp` is "off" (`asc_dist.training.trainer.autocast`).

    `context_k` > 1: each clip is scored through its context window (`asc_dist.training.context`), each distinct
    window once, and the window's logits are stored for every clip it scores. `known`: a split's logits (per
    clip, or per context window) already computed by this model on clean audio in eval mode
    (`Trainer.final_val_logits`), used instead of scoring the split again."""
    table = store.table(val_fraction, val_seed)
    present = [s for s in splits if (table.split == s).any()]

    def split_logits(name: str) -> np.ndarray:
        data = store.split(name, val_fraction, val_seed)
        windows = ContextSplit(data, context_k) if context_k > 1 else data
        reuse = (known or {}).get(name)
        if reuse is not None and len(reuse) != len(windows):
            raise ValueError(f"known {name} logits have {len(reuse)} rows for {len(windows)} {'windows' if context_k > 1 else 'clips'}")
        if context_k <= 1:
            return reuse if reuse is not None else predict(model, front, data, device=device, amp=amp)
        if reuse is None:
            reuse = predict(model, front, windows, batch_size=max(4, 128 // context_k), device=device, amp=amp)
        return reuse[windows.index.clip_window]

    logits = np.concatenate([split_logits(s) for s in present])
    return logits, table.take(np.concatenate([np.flatnonzero(table.split == s) for s in present]))


def split_reports(
    logits: np.ndarray, labels: np.ndarray, devices: np.ndarray, splits: np.ndarray, classes: list[str], seen: list[str] | None = None
) -> dict[str, Report]:
    """A `Report` per split present among val and test; "seen" devices default to those of the train rows."""
    seen = seen or sorted(set(devices[splits == "train"].tolist())) or None
    out = {}
    for split in ("val", "test"):
        mask = splits == split
        if mask.any():
            out[split] = evaluate_predictions(logits[mask], labels[mask], devices[mask].tolist(), classes, seen_devices=seen)
    return out


def log_reports(run: Run, reports: dict[str, Report], title: str) -> dict[str, float]:
    """Metrics (`val_acc`, `test_acc`, `test_unseen_acc`, per device ...), report JSON and PNGs into `run`."""
    from asc_dist.infra.plots import confusion_matrix_figure, per_device_figure

    flat: dict[str, float] = {}
    for split, report in reports.items():
        flat.update(report.to_metrics(prefix=f"{split}_"))
        run.log_json(report.to_dict(), f"{split}_report.json")
    run.log_metrics(flat)
    if "test" in reports:
        test = reports["test"]
        run.log_figure(confusion_matrix_figure(test.confusion, test.classes, f"{title}: test confusion"), "confusion_matrix.png")
        run.log_figure(per_device_figure(test.per_device, f"{title}: test accuracy per device"), "per_device_accuracy.png")
    return flat
