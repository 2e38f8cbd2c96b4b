"""The student's training recipe in one place: its targets (fused, averaged, one teacher's, none), the KD loss,
the trainer with the recipe's augmentations, and its evaluation on val and test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from asc_dist.data.store import WaveformStore
from asc_dist.distill.config import StudentConfig
from asc_dist.distill.online import load_online_teacher, teacher_name
from asc_dist.errors import ConfigError, LogitsError
from asc_dist.nets.features import FRONT_ENDS, LogMel
from asc_dist.run.layout import FIT_SPLIT
from asc_dist.run.logits import load_targets, targets_path
from asc_dist.training.augment import build_augmentations
from asc_dist.training.evaluation import score_splits, split_reports
from asc_dist.training.ir_bank import load_bank, resolve_tau
from asc_dist.training.kd import kd_loss
from asc_dist.training.trainer import OptimConfig, Trainer, cross_entropy_loss


def refuse_fit_clips(targets, filenames, path: Path, val_fraction: float) -> None:
    """Fused targets of the clips the fusion was fitted on are in-sample: a student must not train on them."""
    fitted = sorted(set(np.asarray(filenames).tolist()) & set(targets.filenames[targets.splits == FIT_SPLIT].tolist()))
    if fitted:
        raise ConfigError(
            f"{len(fitted)} of the student's training clips (first: {fitted[0]}) are clips the fusion was fitted on "
            f"(split '{FIT_SPLIT}' in {path}): their targets are in-sample. Give the student the --val-fraction the "
            f"teachers and fusion used (the student's is {val_fraction}), or re-run teachers and fusion with the student's")


def check_targets(cfg: StudentConfig, store: WaveformStore) -> None:
    """The driver's check, before Ray starts, of what every trial's `train_targets` enforces: each training clip
    has a target and none is in-sample for the fusion (else every trial fails the same way, three times)."""
    train_targets(cfg, store, store.split("train", cfg.data.val_fraction, cfg.data.val_seed).table.filename)


def train_targets(cfg: StudentConfig, store: WaveformStore, filenames: np.ndarray) -> np.ndarray | None:
    """Teacher logits [N_train, C] in the order of `filenames`; every training clip must have one."""
    if cfg.targets == "none" or cfg.targets.startswith("online:"):  # online: scored per batch (asc_dist/distill/online.py)
        return None
    if cfg.targets.startswith("teacher:"):  # one teacher's own logits (the study's "best single teacher" row)
        from asc_dist.run.logits import load_teachers

        one = load_teachers(cfg.run_dir, [cfg.targets.split(":", 1)[1]])
        lookup = {f: i for i, f in enumerate(one.filenames)}
        missing = [f for f in filenames if f not in lookup]
        if missing:
            raise LogitsError(f"teacher {cfg.targets} has no logits for {len(missing)} training clips (first: {missing[0]}); re-run the teachers")
        return one.logits[0][np.array([lookup[f] for f in filenames])].astype(np.float32)
    path = targets_path(cfg.run_dir)
    if not path.is_file():
        raise LogitsError(f"{path} does not exist; run `python -m asc_dist.fusion --run {cfg.run_dir}` first, or pass --targets none")
    targets = load_targets(path, column="logits" if cfg.targets == "fused" else "average")
    if list(targets.classes) != store.classes:
        raise LogitsError(f"{path} has classes {targets.classes} but the dataset has {store.classes}; re-run the teachers and fusion on this dataset")
    refuse_fit_clips(targets, filenames, path, cfg.data.val_fraction)
    lookup = {f: i for i, f in enumerate(targets.filenames)}
    missing = [f for f in filenames if f not in lookup]
    if missing:
        raise LogitsError(
            f"{len(missing)} of {len(filenames)} training clips have no target in {path} (first: {', '.join(missing[:3])}); "
            "re-run the teachers and fusion on this dataset"
        )
    return targets.logits[np.array([lookup[f] for f in filenames])].astype(np.float32)


def make_loss(cfg: StudentConfig, teacher: np.ndarray | None, device: torch.device):
    """The label CE alone without targets, and with lambda 1 (the KD term's weight is 1 - lambda = 0): then the
    student is the no-KD student bit for bit, which is what lets a study compare the two arms cleanly."""
    if cfg.kd_lambda == 1.0 or (teacher is None and not cfg.targets.startswith("online:")):
        return cross_entropy_loss
    if teacher is None:  # an online teacher: its logits for this very batch come with it

        def online_loss(logits, batch, labels, mix):
            total, ce, kd = kd_loss(logits, labels, batch.teacher_logits, cfg.kd_lambda, cfg.temperature, cfg.kd_reduction, mix=mix)
            return total, {"ce": float(ce.detach()), "kd": float(kd.detach())}

        return online_loss
    teacher_t = torch.from_numpy(teacher).to(device)

    def loss(logits, batch, labels, mix):
        total, ce, kd = kd_loss(logits, labels, teacher_t[torch.from_numpy(batch.index).to(device)], cfg.kd_lambda, cfg.temperature, cfg.kd_reduction, mix=mix)
        return total, {"ce": float(ce.detach()), "kd": float(kd.detach())}

    return loss


def student_trainer(cfg: StudentConfig, store: WaveformStore, model: torch.nn.Module, epochs: int, lr: float, amp: str | None = None) -> Trainer:
    """The student's trainer; `amp` overrides `cfg.amp` (QAT's fake-quantisers observe fp32 activations)."""
    d = cfg.data
    train, val = store.split("train", d.val_fraction, d.val_seed), store.split("val", d.val_fraction, d.val_seed)
    if cfg.train_device is not None:  # a device copy's fine-tuning: that device's clips only
        train, val = train.of_device(cfg.train_device), val.of_device(cfg.train_device)
        if len(train) == 0:
            raise ConfigError(f"no training clips of device {cfg.train_device!r}; the training devices are {sorted(set(store.split('train', d.val_fraction, d.val_seed).table.device.tolist()))}")
        val = val if len(val) else None
    aug = cfg.augment()
    bank, tau = None, None
    if aug.needs_impulse_responses:
        bank = load_bank(d.dirs, store.sample_rate, store.manifest.get("source"))
        if aug.adir_p > 0:
            tau = resolve_tau(cfg.adir_tau, train, store.sample_rate)
            aug = cfg.augment(tau)
    wave_aug, spec_aug = build_augmentations(aug, bank, store.sample_rate)
    teacher = train_targets(cfg, store, train.table.filename)
    trainer = Trainer(
        model, LogMel(FRONT_ENDS[getattr(model, "front_end", "student")]), train, val,
        OptimConfig(epochs=epochs, lr=lr, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay, seed=cfg.seed,
                    amp=cfg.amp if amp is None else amp),
        wave_aug=wave_aug, spec_aug=spec_aug, device=cfg.device, name=cfg.run_name,
    )
    trainer.loss_fn = make_loss(cfg, teacher, trainer.device)
    if teacher_name(cfg.targets):
        trainer.online_teacher = load_online_teacher(cfg.run_dir, teacher_name(cfg.targets), store.classes, store.sample_rate, trainer.device)
    trainer.adir_tau = tau  # the resolved Auto-DIR threshold (None: Auto-DIR off), logged with the run
    return trainer


def evaluate_all(model, front, store: WaveformStore, cfg: StudentConfig, device, val_logits=None) -> dict:
    """Reports on val and test (`val_logits`: the last validation's, reused); devices of the training split count as seen."""
    d = cfg.data
    logits, rows = score_splits(model, front, store, ("val", "test"), d.val_fraction, d.val_seed, device, amp=cfg.amp,
                                known={"val": val_logits})
    seen = sorted(set(store.split("train", d.val_fraction, d.val_seed).table.device.tolist()))
    return split_reports(logits, rows.label, rows.device, rows.split, store.classes, seen=seen)


