"""Device-specific students: after the general student, one copy per training device fine-tuned on that device's
clips, for DCASE 2025 Task 1 where the recording device is known at inference (the organisers' baseline,
CPJKU/dcase2025_task1_baseline, fine-tunes its general model per device; arXiv 2505.01747, section 4).

Each copy starts from the general student's fp32 weights and trains `device_epochs` at `device_lr` with the
general student's own recipe and targets (KD from the fused targets when the general student used them), minus
the device impulse-response augmentation (it imitates *other* devices, which a copy for one device should not
learn to ignore); then QAT and int8 like the general one when `qat_epochs` > 0. The copies live in
RUN/students/NAME/devices/DEV/ beside the general student's files, each its own MLflow child run.

The system is scored as it is deployed: each val/test clip goes to its device's copy, clips of devices without
a copy (unseen: s4-s6, anything unknown) to the general student (`routed_reports`).
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
from torch import nn

from asc_dist.data.store import WaveformStore
from asc_dist.distill.config import StudentConfig, build_student_model
from asc_dist.errors import ConfigError
from asc_dist.nets.features import FRONT_ENDS, LogMel
from asc_dist.run.atomic import write_text_atomic
from asc_dist.run.checkpoint import load_plain
from asc_dist.run.layout import DEVICES_DIR, STUDENT_CHECKPOINT, STUDENT_RESULT
from asc_dist.training.evaluation import score_splits, split_reports
from asc_dist.training.trainer import predict

log = logging.getLogger(__name__)


def training_devices(cfg: StudentConfig, store: WaveformStore) -> list[str]:
    d = cfg.data
    return sorted(set(store.split("train", d.val_fraction, d.val_seed).table.device.tolist()))


def device_config(general: StudentConfig, device: str) -> StudentConfig:
    """The fine-tuning config of `general`'s copy for `device`."""
    return replace(general, name=f"{general.run_name}/{DEVICES_DIR}/{device}", train_device=device, epochs=general.device_epochs,
                   lr=general.device_lr, device_epochs=0, adir_tau=None, adir_p=0.0, dir_p=0.0, parent_run_id=None)


def routed_reports(general: nn.Module, copies: dict[str, nn.Module], store: WaveformStore, cfg: StudentConfig, device) -> dict:
    """Val and test reports of the deployed system: each clip scored by its device's copy, else by `general`."""
    d = cfg.data
    front = LogMel(FRONT_ENDS[getattr(general, "front_end", "student")])
    logits, rows = score_splits(general, front, store, ("val", "test"), d.val_fraction, d.val_seed, device, amp=cfg.amp)
    for dev, model in copies.items():  # each copy scores its own device's clips only, in the rows' order (split, then table)
        mask = rows.device == dev
        parts = [predict(model, front, store.split(s, d.val_fraction, d.val_seed).of_device(dev), device=device, amp=cfg.amp)
                 for s in ("val", "test") if (mask & (rows.split == s)).any()]
        if parts:
            logits[mask] = np.concatenate(parts)
    return split_reports(logits, rows.label, rows.device, rows.split, store.classes, seen=training_devices(cfg, store))


def _routed_int8(general: dict, copies: dict[str, dict]) -> dict:
    """The int8 system's test accuracy per device (each copy on its own device) and overall, weighted by clips."""
    per_device = dict(general.get("int8_test_per_device") or {})
    for dev, result in copies.items():
        if dev in per_device and result.get("int8_test_per_device"):
            per_device[dev] = result["int8_test_per_device"].get(dev)
    counts = general.get("test_device_counts") or {}
    if not per_device or not counts or any(v is None for v in per_device.values()):
        return {}
    total = sum(counts.get(k, 0) for k in per_device)
    return {"int8_test_acc": sum(per_device[k] * counts.get(k, 0) for k in per_device) / max(1, total), "int8_test_per_device": per_device}


def finetune_devices(general_cfg: StudentConfig, store: WaveformStore, general_model: nn.Module, general_result: dict) -> dict:
    """Fine-tune one copy of `general_model` per training device; returns the fields added to the general result:
    `devices` (each copy's result) and `device_aware` (the routed system's val/test scores)."""
    from asc_dist.distill.student import train_student

    if general_cfg.device_epochs < 1:
        raise ConfigError("device-specific students need --device-epochs >= 1")
    devices = training_devices(general_cfg, store)
    copies, results = {}, {}
    for i, dev in enumerate(devices, 1):
        cfg = replace(device_config(general_cfg, dev), parent_run_id=general_result.get("mlflow_run_id"))
        log.info("[%s] device copy %d/%d: %s, %d epoch(s) at lr %g on its clips", general_cfg.run_name, i, len(devices), dev, cfg.epochs, cfg.lr)
        result = train_student(cfg, store=store, init_model=copy.deepcopy(general_model).cpu())
        results[dev] = {k: v for k, v in result.items() if k in ("name", "val_acc", "test_acc", "test_per_device", "checkpoint", "mlflow_run_id",
                                                                 "int8_torchscript", "int8_test_per_device", "wall_s")}  # fmt: skip
        copies[dev] = load_student(Path(result["checkpoint"]))[0]
    reports = routed_reports(general_model.cpu().eval(), copies, store, general_cfg, "cpu")
    val, test = reports.get("val"), reports.get("test")
    aware = {"val_acc": val.accuracy if val else None, "test_acc": test.accuracy if test else None,
             "seen_acc": test.seen_accuracy if test else None, "unseen_acc": test.unseen_accuracy if test else None,
             "test_log_loss": test.log_loss if test else None, "test_per_device": test.per_device if test else {},
             **_routed_int8(general_result, results)}  # fmt: skip
    log.info("[%s] device-specific system: test %.1f %% (general %.1f %%)", general_cfg.run_name, 100 * (aware["test_acc"] or 0),
             100 * (general_result.get("test_acc") or 0))
    return {"devices": results, "device_aware": aware, "device_epochs": general_cfg.device_epochs, "device_lr": general_cfg.device_lr}


def load_student(checkpoint: Path) -> tuple[nn.Module, StudentConfig]:
    """A student's fp32 model and config from its model.pt."""
    ckpt = load_plain(checkpoint)
    cfg = StudentConfig.from_dict(ckpt["config"])
    model = build_student_model(cfg, len(ckpt["classes"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), cfg


def finetune_existing(student_dir: str | Path, device_epochs: int, device_lr: float, qat_epochs: int | None = None,
                      store: WaveformStore | None = None, **overrides) -> dict:
    """Device copies of an already trained general student (its folder RUN/students/NAME) on the data it was trained
    on; its result.json gains `devices` and `device_aware`. `overrides` (e.g. mlflow_uri, threads) replace fields of
    its stored config."""
    folder = Path(student_dir)
    checkpoint, result_file = folder / STUDENT_CHECKPOINT, folder / STUDENT_RESULT
    if not checkpoint.is_file() or not result_file.is_file():
        raise ConfigError(f"{folder} holds no trained student (model.pt and result.json); train the general student first")
    model, cfg = load_student(checkpoint)
    # the folder, not the checkpoint's recorded (absolute) run_dir, says where the copies go: a moved run stays whole
    where = {"run_dir": str(folder.resolve().parent.parent), "name": folder.name}
    cfg = replace(cfg, device_epochs=device_epochs, device_lr=device_lr, **{**where, **overrides})
    if qat_epochs is not None:
        cfg = replace(cfg, qat_epochs=qat_epochs)
    cfg.validate()
    if store is None:
        from asc_dist.data.prepare import prepare_store

        store = prepare_store(cfg.data, cfg.run_dir)
    result = json.loads(result_file.read_text())
    result.update(finetune_devices(cfg, store, model, result))
    write_text_atomic(result_file, json.dumps(result, indent=2, default=str))
    return result
