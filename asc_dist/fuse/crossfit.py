"""Honest numbers for the fusion: cross-fitting over folds of whole locations (or recordings; each fold scored by
a fit on the others) chooses the penalty strength and weighs the fusion against the average, and greedy forward
selection of teachers."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from asc_dist.data.table import group_folds
from asc_dist.errors import ConfigError
from asc_dist.fuse.fit import average, class_balanced, fit_fusion, fuse

log = logging.getLogger(__name__)
L2_GRID = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
CV_FOLDS = 5


def location_of(filename: str) -> str:
    """`city-location` of a TAU clip name (scene-city-location-segment-part-device); the recording otherwise."""
    from asc_dist.training.context import recording_of

    key, part = recording_of(str(filename))
    fields = key.split("|")[0].split("-")
    return "-".join(fields[1:3]) if part is not None and len(fields) >= 4 else key


def clip_folds(filenames: np.ndarray, k: int, by: str = "location") -> tuple[np.ndarray, str]:
    """(fold index per clip, the grouping used): whole groups per fold, seeded (asc_dist.data.table.group_folds).
    `location` is how the test split is cut (a fold then holds places no fit has heard, the shift a new city
    brings); `recording` keeps near-duplicate clips together. Falls back to recordings when the clips come from
    fewer than two locations."""
    from asc_dist.training.context import recording_of

    keys = [location_of(str(f)) if by == "location" else recording_of(str(f))[0] for f in filenames]
    if by == "location" and len(set(keys)) < 2:
        return clip_folds(filenames, k, by="recording")
    return group_folds(np.array(keys, dtype=object), min(k, max(2, len(set(keys))))), by


def ce(z: np.ndarray, labels: np.ndarray, row_weights: np.ndarray | None = None) -> float:
    """Cross-entropy of logits `z` [N, C]: the mean, or the `row_weights`-weighted sum (weights sum to 1)."""
    z = z.astype(np.float64)
    top = z.max(axis=1)
    nll = top + np.log(np.exp(z - top[:, None]).sum(axis=1)) - z[np.arange(len(z)), labels]
    return float(np.mean(nll) if row_weights is None else np.sum(nll * row_weights / np.sum(row_weights)))


def cross_fit(logits: np.ndarray, labels: np.ndarray, filenames: np.ndarray, l2_grid=L2_GRID, k: int = CV_FOLDS,
              max_iter: int = 200, *, biases: bool = True, balanced: bool = False, by: str = "location") -> dict[str, Any]:  # fmt: skip
    """Out-of-sample fused logits for every fit row (each fold scored by a fit on the others), per penalty
    strength; returns the strength with the lowest cross-fitted loss, its logits, the loss per strength, and
    per fold the fused and the averaged loss on that fold (what `fusion_pays` weighs)."""
    folds, grouped_by = clip_folds(filenames, k, by)
    weights = class_balanced(labels) if balanced else None
    losses, best = {}, None
    for l2 in l2_grid:
        oos = np.zeros(logits.shape[1:], dtype=np.float32)
        for f in np.unique(folds):
            held = folds == f
            fit_w = None if weights is None else class_balanced(labels[~held])
            w, b, _ = fit_fusion(logits[:, ~held], labels[~held], l2, max_iter, biases=biases, row_weights=fit_w)
            oos[held] = fuse(logits[:, held], w, b)
        losses[l2] = ce(oos, labels, weights)
        if best is None or losses[l2] < losses[best[0]]:
            best = (l2, oos)
    avg = average(logits)
    per_fold = []
    for f in np.unique(folds):
        held = folds == f
        rw = None if weights is None else weights[held]
        per_fold.append({"fold": int(f), "clips": int(held.sum()), "fused_loss": ce(best[1][held], labels[held], rw),
                         "average_loss": ce(avg[held], labels[held], rw)})
    return {"l2": best[0], "logits": best[1], "loss_by_l2": {str(k_): v for k_, v in losses.items()},
            "folds": int(folds.max() + 1), "by": grouped_by, "per_fold": per_fold}


def fusion_pays(per_fold: list[dict]) -> dict[str, Any]:
    """Use the fitted fusion only if its cross-fitted gain over the average (loss, mean over folds) is larger
    than the gain's fold-to-fold spread (standard deviation); otherwise the average is the safer target."""
    gains = np.array([f["average_loss"] - f["fused_loss"] for f in per_fold])
    gain, spread = float(gains.mean()), float(gains.std(ddof=1)) if len(gains) > 1 else float("inf")
    pays = bool(gain > 0 and gain > spread)
    return {"use": "fusion" if pays else "average", "gain": gain, "spread": spread, "per_fold_gain": gains.tolist(),
            "why": (f"cross-fitted gain over the average {gain:+.4f} (loss) {'exceeds' if pays else 'does not exceed'} "
                    f"its fold-to-fold spread {spread:.4f}")}


def select_teachers(
    logits: np.ndarray, labels: np.ndarray, names: list[str], k: int, l2: float = 1e-4, max_iter: int = 200
) -> list[dict[str, Any]]:
    """Greedy forward selection: add, K times, the teacher whose addition gives the lowest fused val loss.

    Each candidate set is refitted from scratch; returns [{teacher, val_loss}] in the order chosen.
    """
    if k > len(names):
        raise ConfigError(f"--select {k} asks for more teachers than the {len(names)} available ({names})")
    chosen: list[int] = []
    steps = []
    for _ in range(k):
        best = None
        for cand in (i for i in range(len(names)) if i not in chosen):
            report = fit_fusion(logits[chosen + [cand]], labels, l2, max_iter)[2]
            if best is None or report.loss < best[1]:
                best = (cand, report.loss)
        chosen.append(best[0])
        steps.append({"teacher": names[best[0]], "val_loss": best[1]})
        log.info("select %d: +%s -> val loss %.4f", len(chosen), names[best[0]], best[1])
    return steps
