"""Train one student with knowledge distillation from the fused (or averaged) teacher targets.

Reads the packed waveform store and `RUN_DIR/fused/targets.parquet` (joined by filename: every training clip
must have a target), trains with `asc_dist.kd.kd_loss` and the seed's augmentations, logs to MLflow and
writes the fp32 checkpoint to `RUN_DIR/students/<name>/model.pt`. The same function is the Ray Tune
trainable's body (`report` per epoch, resume from the last epoch's state).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from asc_dist import tracking
from asc_dist.atomic import atomic_path, write_text_atomic
from asc_dist.audio.store import WaveformStore
from asc_dist.augment import AugmentConfig, build_augmentations
from asc_dist.dir_bank import load_bank, resolve_tau
from asc_dist.errors import ConfigError, LogitsError
from asc_dist.evaluation import log_reports, score_splits, split_reports
from asc_dist.features import FRONT_ENDS, LogMel
from asc_dist.kd import kd_loss, validate_kd
from asc_dist.logits import load_targets, targets_path
from asc_dist.prepare import DataConfig
from asc_dist.train import OptimConfig, Trainer, check_amp, cross_entropy_loss

log = logging.getLogger(__name__)
TARGET_KINDS = ("fused", "average", "none")


@dataclass
class StudentConfig:
    run_dir: str
    data: DataConfig = field(default_factory=DataConfig)
    model: str = "dsflexinet"
    preset: str = "sm2"
    norm: str = "rn"  # Residual Normalization or plain BN (DS-FlexiNet)
    targets: str = "fused"  # fused | average | none (plain cross-entropy) | teacher:NAME (one teacher's logits)
    kd_lambda: float = 0.02  # weight of the label loss (CP-JKU recipe)
    temperature: float = 2.0
    kd_reduction: str = "cpjku"
    fms_p: float = 0.4
    fms_alpha: float = 0.3
    # The paper's recipe by default: Auto-DIR p 0.6 with tau "auto" (the mean energy of the device-a training
    # clips, asc_dist.dir_bank; the paper's 323 is that mean on raw TAU22), over --dirs or generated responses
    adir_tau: float | str | None = "auto"  # a number, "auto", or None = Auto-DIR off
    adir_p: float = 0.6
    dir_p: float = 0.0  # plain DIR on device-a clips (exclusive with Auto-DIR)
    roll_s: float = 0.125
    freqm: int = 48
    timem: int = 0
    mixup_alpha: float = 0.0
    stretch_p: float = 0.0
    epochs: int = 30
    lr: float = 0.005
    batch_size: int = 64
    weight_decay: float = 1e-3
    seed: int = 0
    qat_epochs: int = 0
    qat_lr: float = 5e-5
    name: str | None = None
    experiment: str = "students"
    mlflow_uri: str | None = None
    parent_run_id: str | None = None
    device: str = "auto"
    threads: int = 0  # torch threads (0 = torch's default)
    amp: str = "bf16"  # bf16 autocast of the forward on a GPU, or "off" (fp32); QAT always trains in fp32

    @property
    def run_name(self) -> str:
        if self.name:
            return self.name
        kd = "ce" if self.targets == "none" else f"{self.targets.replace(':', '-')}-l{self.kd_lambda:g}-T{self.temperature:g}"
        return f"{self.model}-{self.preset}-{self.norm}-{kd}-s{self.seed}"

    @property
    def out_dir(self) -> Path:
        return Path(self.run_dir) / "students" / self.run_name

    def augment(self, tau: float | None = None) -> AugmentConfig:
        """The augmentation config; `tau` is the resolved Auto-DIR threshold (a placeholder until the data is read)."""
        if tau is None:
            tau = float(self.adir_tau) if isinstance(self.adir_tau, (int, float)) else 323.0
        return AugmentConfig(
            dir_p=self.dir_p, adir_p=self.adir_p if self.adir_tau is not None else 0.0,
            adir_tau=tau,
            roll_max_s=self.roll_s, stretch_p=self.stretch_p, mixup_alpha=self.mixup_alpha,
            freqm=self.freqm, timem=self.timem, fms_p=self.fms_p, fms_alpha=self.fms_alpha,
        )

    def validate(self) -> None:
        from students.registry import student_presets

        if self.preset not in student_presets(self.model):  # unknown model raises inside
            raise ConfigError(f"unknown preset {self.preset!r} for {self.model}; choose one of {', '.join(student_presets(self.model))}")
        if self.targets not in TARGET_KINDS and not self.targets.startswith("teacher:"):
            raise ConfigError(f"--targets {self.targets!r} is unknown; choose one of {', '.join(TARGET_KINDS)}")
        if self.norm not in ("rn", "bn"):
            raise ConfigError(f"--norm {self.norm!r} is unknown; choose rn (Residual Normalization) or bn")
        validate_kd(self.kd_lambda, self.temperature, self.kd_reduction)
        if isinstance(self.adir_tau, str) and self.adir_tau != "auto":
            raise ConfigError(f"Auto-DIR tau {self.adir_tau!r} is neither a number nor 'auto'")
        self.augment()  # probabilities and ranges; DIR without --dirs uses generated responses (asc_dist.dir_bank)
        if self.epochs < 1 or self.qat_epochs < 0 or self.lr <= 0 or self.batch_size < 1:
            raise ConfigError(f"--epochs must be >= 1 (got {self.epochs}: an untrained student is not worth exporting), "
                              "--qat-epochs >= 0, --lr > 0 and --batch-size >= 1")
        check_amp(self.amp)
        self.data.check()

    def to_dict(self) -> dict:
        return asdict(self)


def build_student_model(cfg: StudentConfig, n_classes: int) -> torch.nn.Module:
    from students.registry import build_student

    return build_student(cfg.model, cfg.preset, n_classes=n_classes, norm=cfg.norm)


def refuse_fit_clips(targets, filenames, path: Path, val_fraction: float) -> None:
    """Fused targets of the clips the fusion was fitted on are in-sample: a student must not train on them."""
    from asc_dist.fusion import FIT_SPLIT

    fitted = sorted(set(np.asarray(filenames).tolist()) & set(targets.filenames[targets.splits == FIT_SPLIT].tolist()))
    if fitted:
        raise ConfigError(
            f"{len(fitted)} of the student's training clips (first: {fitted[0]}) are clips the fusion was fitted on "
            f"(split '{FIT_SPLIT}' in {path}): their targets are in-sample. Give the student the --val-fraction the "
            f"teachers and fusion used (the student's is {val_fraction}), or re-run teachers and fusion with the student's")


def check_fit_split(cfg: StudentConfig, store: WaveformStore) -> None:
    """The driver's early check (before any trial starts) of what `train_targets` enforces."""
    if cfg.targets not in ("fused", "average"):
        return
    path = targets_path(cfg.run_dir)
    train = store.split("train", cfg.data.val_fraction, cfg.data.val_seed).table.filename
    refuse_fit_clips(load_targets(path), train, path, cfg.data.val_fraction)


def train_targets(cfg: StudentConfig, store: WaveformStore, filenames: np.ndarray) -> np.ndarray | None:
    """Teacher logits [N_train, C] in the order of `filenames`; every training clip must have one."""
    if cfg.targets == "none":
        return None
    if cfg.targets.startswith("teacher:"):  # one teacher's own logits (the study's "best single teacher" row)
        from asc_dist.logits import load_teachers

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
    if teacher is None:
        return cross_entropy_loss
    teacher_t = torch.from_numpy(teacher).to(device)

    def loss(logits, batch, labels, mix):
        total, ce, kd = kd_loss(logits, labels, teacher_t[torch.from_numpy(batch.index).to(device)], cfg.kd_lambda, cfg.temperature, cfg.kd_reduction, mix=mix)
        return total, {"ce": float(ce.detach()), "kd": float(kd.detach())}

    return loss


def make_trainer(cfg: StudentConfig, store: WaveformStore, model: torch.nn.Module, epochs: int, lr: float, amp: str | None = None) -> Trainer:
    """The student's trainer; `amp` overrides `cfg.amp` (QAT's fake-quantisers observe fp32 activations)."""
    d = cfg.data
    train, val = store.split("train", d.val_fraction, d.val_seed), store.split("val", d.val_fraction, d.val_seed)
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
    trainer.adir_tau = tau  # the resolved Auto-DIR threshold (None: Auto-DIR off), logged with the run
    return trainer


def evaluate_all(model, front, store: WaveformStore, cfg: StudentConfig, device) -> dict:
    """Reports on val and test; devices of the training split count as seen."""
    d = cfg.data
    logits, rows = score_splits(model, front, store, ("val", "test"), d.val_fraction, d.val_seed, device, amp=cfg.amp)
    seen = sorted(set(store.split("train", d.val_fraction, d.val_seed).table.device.tolist()))
    return split_reports(logits, rows.label, rows.device, rows.split, store.classes, seen=seen)


def train_student(cfg: StudentConfig, report=None, resume: dict | None = None, store: WaveformStore | None = None) -> dict:
    """Train (or resume) one student; returns its result row (also written to `out_dir/result.json`)."""
    from asc_dist.complexity import measure
    from asc_dist.prepare import prepare_store

    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    store = store or prepare_store(cfg.data, cfg.run_dir)
    torch.manual_seed(cfg.seed)
    model = build_student_model(cfg, len(store.classes))
    cx = measure(model)
    trainer = make_trainer(cfg, store, model, cfg.epochs, cfg.lr)
    resume_id = None
    if resume:
        trainer.load_state_dict(resume["trainer"])
        resume_id = resume.get("mlflow_run_id")
    uri = tracking.resolve_uri(cfg.run_dir, cfg.mlflow_uri)
    params = {**{k: v for k, v in cfg.to_dict().items() if k not in ("data",)}, "data": cfg.data.__dict__, "params": cx.params, "macs": cx.macs}
    with tracking.run(uri, cfg.experiment, cfg.run_name, params=params, tags={"asc_dist.step": "student", "preset": cfg.preset},
                      parent_run_id=cfg.parent_run_id, resume_run_id=resume_id, run_dir=cfg.run_dir) as mlrun:
        if trainer.adir_tau is not None:
            mlrun.log_metrics({"adir_tau": trainer.adir_tau})
        if resume_id is None:
            mlrun.log_json({**cfg.to_dict(), "complexity": cx.to_dict() if hasattr(cx, "to_dict") else str(cx)}, "config.json")

        def on_epoch(result) -> None:
            mlrun.log_metrics(result.metrics, step=result.epoch)
            # The last epoch is reported by the caller together with the test scores (the sweep's final
            # report): a scheduler deciding at the last epoch then always sees a finished, scored trial.
            if report is not None and result.epoch < result.epochs:
                report({**result.metrics, "epoch": result.epoch, "epochs": result.epochs, "student": cfg.run_name},
                       {"trainer": trainer.state_dict(), "mlflow_run_id": mlrun.run_id})

        trainer.fit(on_epoch)
        reports = evaluate_all(trainer.model, trainer.front_end, store, cfg, trainer.device)
        flat = log_reports(mlrun, reports, cfg.run_name)
        mlrun.log_metrics({"params": cx.params, "macs": cx.macs, "int8_kb": cx.int8_bytes / 1000})
        out = cfg.out_dir
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "model.pt") as tmp:
            torch.save({"model": trainer.model.state_dict(), "config": cfg.to_dict(), "classes": store.classes,
                        "sample_rate": store.sample_rate, "clip_samples": int(store.manifest["samples"])}, tmp)
        result = {
            "name": cfg.run_name, "model": cfg.model, "preset": cfg.preset, "norm": cfg.norm, "targets": cfg.targets,
            "kd_lambda": cfg.kd_lambda, "temperature": cfg.temperature, "params": cx.params, "macs": cx.macs,
            "int8_kb": cx.int8_bytes / 1000, "val_acc": flat.get("val_accuracy"), "test_acc": flat.get("test_accuracy"),
            "unseen_acc": flat.get("test_unseen_accuracy"), "seen_acc": flat.get("test_seen_accuracy"),
            "test_log_loss": flat.get("test_log_loss"), "test_per_device": reports["test"].per_device if "test" in reports else {},
            "checkpoint": str(out / "model.pt"), "mlflow_run_id": mlrun.run_id, "wall_s": time.perf_counter() - start,
            "clips_per_s": float(np.mean([h["clips_per_s"] for h in trainer.history])) if trainer.history else None,
            "data_wait_share": float(np.mean([h["data_wait_share"] for h in trainer.history])) if trainer.history else None,
        }
        if cfg.qat_epochs > 0:
            from asc_dist.qat import quantize_student

            result.update(quantize_student(cfg, store, trainer.model, mlrun))
        write_text_atomic(out / "result.json", json.dumps(result, indent=2, default=str))
    return result
