"""Honest numbers for the fusion: cross-fitting over folds of whole recordings (each fold scored by a fit on the
others) chooses the penalty strength, and greedy forward selection of teachers."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from asc_dist.errors import ConfigError
from asc_dist.fuse.fit import fit_fusion, fuse

log = logging.getLogger(__name__)
L2_GRID = (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
CV_FOLDS = 5


def _folds(filenames: np.ndarray, k: int) -> np.ndarray:
    """Fold index per clip: whole recordings per fold (clips of one recording are near-duplicates), seeded."""
    from asc_dist.training.context import recording_of

    keys = np.array([recording_of(str(f))[0] for f in filenames], dtype=object)
    unique = np.array(sorted(set(keys.tolist())), dtype=object)
    order = np.random.default_rng(0).permutation(len(unique))
    fold_of = {key: i % k for i, key in enumerate(unique[order])}
    return np.array([fold_of[key] for key in keys])


def _ce(z: np.ndarray, labels: np.ndarray) -> float:
    z = z.astype(np.float64)
    top = z.max(axis=1)
    return float(np.mean(top + np.log(np.exp(z - top[:, None]).sum(axis=1)) - z[np.arange(len(z)), labels]))


def cross_fit(logits: np.ndarray, labels: np.ndarray, filenames: np.ndarray, l2_grid=L2_GRID, k: int = CV_FOLDS,
              max_iter: int = 200) -> dict[str, Any]:  # fmt: skip
    """Out-of-sample fused logits for every fit row (each fold scored by a fit on the others), per penalty
    strength; returns the strength with the lowest cross-fitted loss, its logits and the loss per strength."""
    folds = _folds(filenames, min(k, max(2, len(set(filenames)))))
    losses, best = {}, None
    for l2 in l2_grid:
        oos = np.zeros(logits.shape[1:], dtype=np.float32)
        for f in np.unique(folds):
            held = folds == f
            w, b, _ = fit_fusion(logits[:, ~held], labels[~held], l2, max_iter)
            oos[held] = fuse(logits[:, held], w, b)
        losses[l2] = _ce(oos, labels)
        if best is None or losses[l2] < losses[best[0]]:
            best = (l2, oos)
    return {"l2": best[0], "logits": best[1], "loss_by_l2": {str(k_): v for k_, v in losses.items()}, "folds": int(folds.max() + 1)}


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
