"""What runs inside one Ray Tune trial: train one teacher, checkpoint every epoch, score every clip, write logits.

A trial restarted after a failure (Tune's FailureConfig) resumes from its last checkpoint, including its
MLflow run. Logits are written once, atomically, after training: a crash can never leave a partial file
or duplicate rows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from asc_dist.data.store import WaveformStore
from asc_dist.data.table import group_folds
from asc_dist.infra import tracking
from asc_dist.nets.features import FRONT_ENDS, LogMel
from asc_dist.run.atomic import atomic_path
from asc_dist.run.checkpoint import TrialCheckpoint, epoch_reporter, node_ip, resume_from
from asc_dist.run.layout import RunLayout
from asc_dist.run.logits import write_teacher_logits
from asc_dist.teach.roster import TeacherConfig
from asc_dist.training.augment import AugmentConfig, build_augmentations
from asc_dist.training.context import context_parts, with_context
from asc_dist.training.evaluation import log_reports, score_splits, split_reports
from asc_dist.training.ir_bank import load_bank
from asc_dist.training.pace import Pace
from asc_dist.training.trainer import OptimConfig, Trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherRunContext:
    """Everything a trial needs besides its teacher config (crosses the Ray boundary as a dict)."""

    run_dir: str
    store: str
    val_fraction: float
    val_seed: int
    fingerprint: str
    mlflow_uri: str
    experiment: str
    dirs: str | None
    device: str = "auto"
    threads: int = 1
    fail_once: str | None = None  # test-only switch: this teacher's trial fails once after epoch 1
    cpus_per_worker: float = 1.0  # data-parallel workers (--workers-per-teacher > 1)
    progress_s: float = 30.0  # a progress line inside an epoch at least this often
    amp: str = "bf16"  # bf16 autocast of the model's forward on CUDA, or "off" (asc_dist.training.trainer.autocast)
    val_every: int = 0  # validate every N epochs and after the last; 0: auto (asc_dist.training.trainer.OptimConfig)


def augment_config(t: TeacherConfig, sample_rate: int) -> AugmentConfig:
    return AugmentConfig(
        dir_p=t.dir_p,
        roll_max_s=t.roll / sample_rate,
        mixup_alpha=t.mixup_alpha,
        freqm=t.freqm,
        timem=t.timem,
        fms_p=t.fms_p,
        fms_alpha=t.fms_alpha,
    )


def teacher_context_parts(t: TeacherConfig, store: WaveformStore) -> int:
    return context_parts(t.context_s, int(store.manifest["samples"]), store.sample_rate)


def build_model(t: TeacherConfig, n_classes: int) -> torch.nn.Module:
    from teachers.families import build_teacher

    extra = {}
    if t.family == "passt":
        extra = {"s_patchout_f": t.s_patchout_f, "s_patchout_t": t.s_patchout_t}
    if t.weights:
        log.info("[%s] starts from weights %s", t.name, t.weights)
    else:
        log.info("[%s] starts from random initialisation (no weights file given)", t.name)
    return build_teacher(t.family, t.size, n_classes=n_classes, weights=t.weights, **extra)


def _fail_once_if_asked(t: TeacherConfig, ctx: TeacherRunContext, epoch: int) -> None:
    if ctx.fail_once != t.name or epoch != 1:
        return
    marker = RunLayout.of(ctx.run_dir).failed_once_marker(t.name)
    if not marker.exists():
        marker.touch()
        raise RuntimeError(f"injected failure for teacher {t.name} after epoch 1 (test switch fail_once)")


def teacher_trainer(t: TeacherConfig, ctx: TeacherRunContext, store: WaveformStore, shard: tuple[int, int] | None = None, wrap=None) -> Trainer:
    """The teacher's model, front end, augmentations and optimiser; `shard=(rank, world)` keeps every
    world-th training clip (data-parallel workers), `wrap` wraps the model (e.g. DDP)."""
    torch.set_num_threads(max(1, ctx.threads))
    train, val = store.split("train", ctx.val_fraction, ctx.val_seed), store.split("val", ctx.val_fraction, ctx.val_seed)
    if t.folds > 1:  # an out-of-fold trial: trains on the training split less its held-out fold of whole locations
        keep = group_folds(train.table.identifier, t.folds) != t.fold
        train = replace(train, table=train.table.take(keep), rows=train.rows[keep])
    k = teacher_context_parts(t, store)
    train, val = with_context(train, k), with_context(val, k)
    if shard is not None:
        rank, world = shard
        if k > 1:
            train = train.shard(rank, world)
        else:
            train = replace(train, table=train.table.take(slice(rank, None, world)), rows=train.rows[rank::world])
    torch.manual_seed(t.seed)
    model = build_model(t, len(store.classes))
    front = LogMel(FRONT_ENDS[model.front_end])
    aug = augment_config(t, store.sample_rate)
    bank = load_bank(ctx.dirs, store.sample_rate, store.manifest.get("source")) if aug.needs_impulse_responses else None
    wave_aug, spec_aug = build_augmentations(aug, bank, store.sample_rate)
    if wrap is not None:  # NHWC (how the Trainer trains) before DDP lays out its gradient buckets
        model = wrap(model.to(memory_format=torch.channels_last))
    # data-parallel ranks never pace validation by their own timings: DDP's forward broadcasts buffers even in
    # eval, a collective that every rank must join on the same epochs
    trainer = Trainer(
        model, front, train, val,
        # every rank starts from the same weights (seeded above; DDP also broadcasts rank 0's) but draws its own
        # augmentations and batch order: seed + rank
        OptimConfig(epochs=t.epochs, lr=t.lr, batch_size=t.batch_size, weight_decay=t.weight_decay, seed=t.seed + (shard[0] if shard else 0),
                    amp=ctx.amp, val_every=ctx.val_every if shard is None else (ctx.val_every or 1)),
        wave_aug=wave_aug, spec_aug=spec_aug, device="auto" if ctx.device == "cuda" else "cpu", name=t.name,
    )
    trainer.pace = Pace(every_s=ctx.progress_s, remedy=(
        "a smaller teacher (--size tiny), a GPU (--gpus-per-teacher 0.25) or more machines (--address of a Ray cluster)"))
    return trainer


def open_mlflow_run(t: TeacherConfig, ctx: TeacherRunContext, params: int, resume_run_id: str | None = None):
    return tracking.run(
        ctx.mlflow_uri, ctx.experiment, t.name, params={**t.to_dict(), "params": params, "fingerprint": ctx.fingerprint},
        tags={"asc_dist.step": "teacher", "family": t.family}, resume_run_id=resume_run_id, run_dir=ctx.run_dir,
    )


def save_teacher_weights(t: TeacherConfig, ctx: TeacherRunContext, store: WaveformStore, model) -> Path:
    """RUN/teachers/NAME/model.pt: the trained weights with what rebuilds them, for a teacher run online on a
    student's augmented batches (`--targets online:NAME`, asc_dist/distill/online.py) or reused elsewhere."""
    path = RunLayout.of(ctx.run_dir).teacher_model(t.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = getattr(model, "module", model)  # a data-parallel teacher's DDP wrapper
    with atomic_path(path) as tmp:
        torch.save({"model": net.state_dict(), "teacher": t.to_dict(), "classes": list(store.classes),
                    "sample_rate": store.sample_rate, "fingerprint": ctx.fingerprint}, tmp)
    return path


# where a trial's time went (summary, teachers.json, MLflow): its epochs' training steps, then the rest by part
TIME_PARTS = ("train_s", "val_s", "report_s", "score_s", "finish_s", "setup_s")


def finish_teacher(t: TeacherConfig, ctx: TeacherRunContext, store: WaveformStore, model, front, device, mlrun, history: list[dict], start: float,
                   resumed_epochs: int = 0, val_logits=None) -> dict:
    """Score every clip (clean audio, eval mode; `val_logits`: the last validation's, reused), log reports and
    pictures, write the logits file. The time parts count this attempt's epochs only (`history[resumed_epochs:]`),
    as `wall_s` counts this attempt only."""
    k = teacher_context_parts(t, store)
    begun = time.perf_counter()
    logits, rows = score_splits(model, front, store, ("train", "val", "test"), ctx.val_fraction, ctx.val_seed, device, k, amp=ctx.amp,
                                known={"val": val_logits})
    score_s = time.perf_counter() - begun
    reports = split_reports(logits, rows.label, rows.device, rows.split, store.classes)
    flat = log_reports(mlrun, reports, t.name)
    is_train = rows.split == "train"
    train_acc = float((logits[is_train].argmax(1) == rows.label[is_train]).mean()) if is_train.any() else None
    if train_acc is not None:
        mlrun.log_metrics({"train_accuracy_clean": train_acc})
    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"
    ip = node_ip()
    params = sum(p.numel() for p in model.parameters())
    config = {**t.to_dict(), "config_hash": t.config_hash(), "params": params, "node_id": node, "node_ip": ip,
              "val_carve": [ctx.val_fraction, ctx.val_seed]}
    write_teacher_logits(ctx.run_dir, t.name, rows.filename, rows.split, rows.device, rows.label, logits, store.classes, config, ctx.fingerprint)
    save_teacher_weights(t, ctx, store, model)
    ended = time.perf_counter()
    wall = ended - start
    # where the trial's time went: the epochs' training steps (wall_s - train_s is the trial's overhead), then
    # the overhead's parts; setup_s (store, model, MLflow run) is what the others leave, epoch reports include checkpoints
    now = history[resumed_epochs:]
    parts = {"train_s": sum(h.get("epoch_s", 0.0) for h in now), "val_s": sum(h.get("val_s", 0.0) for h in now),
             "report_s": sum(h.get("report_s", 0.0) for h in now), "score_s": score_s, "finish_s": ended - begun - score_s}
    parts["setup_s"] = max(0.0, wall - sum(parts.values()))
    mlrun.log_metrics({"wall_s": wall, **parts})
    return {
        "teacher": t.name, "family": t.family, "params": params, "node_id": node, "node_ip": ip, "wall_s": wall, **parts,
        "started_at": time.time() - wall,  # Unix time the trial began (after its worker's imports)
        "context_s": t.context_s, "init": f"weights {Path(t.weights).name}" if t.weights else "scratch",
        "train_acc": train_acc, "val_acc": flat.get("val_accuracy"), "test_acc": flat.get("test_accuracy"),
        "unseen_acc": flat.get("test_unseen_accuracy"), "epochs_trained": len(history),
        "clips_per_s": float(np.mean([h["clips_per_s"] for h in history])) if history else None,
    }


def train_teacher(t: TeacherConfig, ctx: TeacherRunContext, report=None, resume: dict | None = None) -> dict:
    """Train, score and write one teacher. `report(metrics, state)` is called after every epoch; `resume` is
    the state of the last one after a restart."""
    start = time.perf_counter()
    store = WaveformStore(ctx.store)
    trainer = teacher_trainer(t, ctx, store)
    mlflow_run_id = None
    if resume:
        trainer.load_state_dict(resume["trainer"])
        mlflow_run_id = resume.get("mlflow_run_id")
    params = sum(p.numel() for p in trainer.model.parameters())
    with open_mlflow_run(t, ctx, params, mlflow_run_id) as mlrun:
        trainer.pace.on_report = mlrun.log_metrics

        def on_epoch(result) -> None:
            begun = time.perf_counter()
            mlrun.log_metrics(result.metrics, step=result.epoch)
            if report is not None:
                report({**result.metrics, "epoch": result.epoch, "epochs": result.epochs, "teacher": t.name},
                       {"trainer": trainer.state_dict(), "mlflow_run_id": mlrun.run_id})
            result.metrics["report_s"] = time.perf_counter() - begun  # the history's own dict: counted in the summary
            _fail_once_if_asked(t, ctx, result.epoch)

        resumed_epochs = trainer.epoch
        trainer.fit(on_epoch)
        return finish_teacher(t, ctx, store, trainer.model, trainer.front_end, trainer.device, mlrun, trainer.history, start,
                              resumed_epochs=resumed_epochs, val_logits=trainer.final_val_logits())


def teacher_checkpoint(t: TeacherConfig, ctx: TeacherRunContext) -> TrialCheckpoint:
    """The teacher's epoch checkpoint, keyed by what it learns from: config, data and validation carve."""
    return TrialCheckpoint.of(ctx.run_dir, "teachers", t.name, f"{t.config_hash()}-{ctx.fingerprint}-{ctx.val_fraction}-{ctx.val_seed}")


def tune_trainable(config: dict) -> None:
    """Ray Tune function trainable: one teacher per trial, a checkpoint per epoch at a stable path, so a
    restarted trial or a rerun of a killed driver continues from the last epoch."""
    from ray import tune

    t, ctx = TeacherConfig(**config["teacher"]), TeacherRunContext(**config["context"])
    checkpoint = teacher_checkpoint(t, ctx)
    summary = train_teacher(t, ctx, epoch_reporter(checkpoint), resume_from(checkpoint, t.name))
    tune.report({**summary, "finished": 1})


def context_dict(ctx: TeacherRunContext) -> dict:
    return asdict(ctx)
