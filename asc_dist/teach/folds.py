"""Out-of-fold teacher targets (`python -m asc_dist.teachers --folds K`).

A teacher scoring the clips it trained on hands out near one-hot targets (it has memorised them), and those are
exactly the clips a student learns from. With `--folds K` every roster teacher is trained K times, each time
without one fold of the training split (whole recording locations, as the validation carve cuts them), as K
parallel Ray trials. Its logits file then holds, for each training clip, the logits of the one fold model that
never saw it, and for validation and test clips the mean over the K fold models. The per-fold logits live in
RUN/folds/ (asc_dist/run/layout.py), so a killed run keeps every finished fold.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from asc_dist.data.store import WaveformStore
from asc_dist.data.table import group_folds
from asc_dist.errors import LogitsError
from asc_dist.run.layout import RunLayout
from asc_dist.run.logits import load_teachers, write_teacher_logits
from asc_dist.teach.roster import TeacherConfig

log = logging.getLogger(__name__)


def with_folds(roster: list[TeacherConfig], k: int) -> list[TeacherConfig]:
    """The roster's teachers as out-of-fold teachers (their logits files, their identity)."""
    return [replace(t, folds=k, fold=-1) for t in roster]


def fold_trials(teacher: TeacherConfig) -> list[TeacherConfig]:
    """The K trials of one out-of-fold teacher, each holding out one fold (name `NAME.foldF`)."""
    return [replace(teacher, name=f"{teacher.name}.fold{f}", fold=f) for f in range(teacher.folds)]


def combine_folds(run_dir: Path, teacher: TeacherConfig, store: WaveformStore, val_fraction: float, val_seed: int, fingerprint: str) -> dict:
    """Write the teacher's out-of-fold logits into RUN/logits from its K fold files; returns its summary row."""
    trials = fold_trials(teacher)
    parts = load_teachers(RunLayout.of(run_dir).folds_dir, [t.name for t in trials])
    if parts.fingerprint != fingerprint:
        raise LogitsError(f"the fold logits of {teacher.name} under {RunLayout.of(run_dir).folds_dir} are from other data; rerun with --force")
    train = store.split("train", val_fraction, val_seed).table
    fold_of = dict(zip(train.filename.tolist(), group_folds(train.identifier, teacher.folds).tolist()))
    is_train = parts.splits == "train"
    held_out = np.array([fold_of.get(f, -1) for f in parts.filenames.tolist()])
    if (held_out[is_train] < 0).any():
        raise LogitsError(f"the fold logits of {teacher.name} list training clips this split does not hold; rerun with --force")
    logits = parts.logits.mean(axis=0)  # val and test: the mean over the fold models
    rows = np.flatnonzero(is_train)
    logits[rows] = parts.logits[held_out[rows], rows]  # train: the fold model that never saw the clip
    config = {**teacher.to_dict(), "config_hash": teacher.config_hash(), "val_carve": [val_fraction, val_seed], "out_of_fold": True}
    write_teacher_logits(run_dir, teacher.name, parts.filenames, parts.splits, parts.devices, parts.labels, logits.astype(np.float32),
                         parts.classes, config, fingerprint)  # fmt: skip

    def accuracy(split: str) -> float | None:
        m = parts.splits == split
        return float((logits[m].argmax(1) == parts.labels[m]).mean()) if m.any() else None

    test = parts.splits == "test"
    unseen = test & ~np.isin(parts.devices, np.unique(parts.devices[is_train]))
    log.info("[%s] out-of-fold logits from %d folds: train (held-out) acc %.3f, val %.3f, test %.3f", teacher.name, teacher.folds,
             accuracy("train") or 0, accuracy("val") or 0, accuracy("test") or 0)  # fmt: skip
    params = int(parts.configs[trials[0].name].get("params") or 0)
    return {"teacher": teacher.name, "family": teacher.family, "context_s": teacher.context_s, "params": params,
            "init": f"weights {Path(teacher.weights).name}" if teacher.weights else "scratch",
            "train_acc": accuracy("train"), "val_acc": accuracy("val"), "test_acc": accuracy("test"),
            "unseen_acc": float((logits[unseen].argmax(1) == parts.labels[unseen]).mean()) if unseen.any() else None,
            "epochs_trained": teacher.epochs, "folds": teacher.folds}
