"""Train one student with knowledge distillation from the fused (or averaged) teacher targets.

Reads the packed waveform store and `RUN_DIR/fused/targets.parquet` (joined by filename: every training clip
must have a target), trains with `asc_dist.training.kd.kd_loss` and the seed's augmentations, logs to MLflow and
writes the fp32 checkpoint to `RUN_DIR/students/<name>/model.pt`. The same function is the Ray Tune
trainable's body (`report` per epoch, resume from the last epoch's state).
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from asc_dist.data.store import WaveformStore
from asc_dist.distill.config import StudentConfig, build_student_model
from asc_dist.distill.recipe import evaluate_all, student_trainer
from asc_dist.infra import tracking
from asc_dist.run.atomic import atomic_path, write_text_atomic
from asc_dist.run.layout import STUDENT_CHECKPOINT, STUDENT_RESULT
from asc_dist.training.evaluation import log_reports


def train_student(cfg: StudentConfig, report=None, resume: dict | None = None, store: WaveformStore | None = None,
                  init_model: torch.nn.Module | None = None) -> dict:
    """Train (or resume) one student; returns its result row (also written to `out_dir/result.json`).

    `init_model`: start from these weights (a device copy's fine-tuning, `asc_dist.distill.devices`) instead of a
    fresh model."""
    from asc_dist.data.prepare import prepare_store
    from asc_dist.nets.complexity import measure

    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    store = store or prepare_store(cfg.data, cfg.run_dir)
    torch.manual_seed(cfg.seed)
    model = init_model if init_model is not None else build_student_model(cfg, len(store.classes))
    cx = measure(model)
    trainer = student_trainer(cfg, store, model, cfg.epochs, cfg.lr)
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
        # a device copy validates on its own device's clips only: its val logits are not the val split's
        val_logits = trainer.final_val_logits() if cfg.train_device is None else None
        reports = evaluate_all(trainer.model, trainer.front_end, store, cfg, trainer.device, val_logits)
        flat = log_reports(mlrun, reports, cfg.run_name)
        mlrun.log_metrics({"params": cx.params, "macs": cx.macs, "param_kb": cx.int8_bytes / 1000})
        out = cfg.out_dir
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / STUDENT_CHECKPOINT) as tmp:
            torch.save({"model": trainer.model.state_dict(), "config": cfg.to_dict(), "classes": store.classes,
                        "sample_rate": store.sample_rate, "clip_samples": int(store.manifest["samples"])}, tmp)
        result = {
            "name": cfg.run_name, "model": cfg.model, "preset": cfg.preset, "norm": cfg.norm, "targets": cfg.targets,
            "kd_lambda": cfg.kd_lambda, "temperature": cfg.temperature, "params": cx.params, "macs": cx.macs,
            "param_kb": cx.int8_bytes / 1000, "val_acc": flat.get("val_accuracy"), "test_acc": flat.get("test_accuracy"),
            "unseen_acc": flat.get("test_unseen_accuracy"), "seen_acc": flat.get("test_seen_accuracy"),
            "test_log_loss": flat.get("test_log_loss"), "test_per_device": reports["test"].per_device if "test" in reports else {},
            "test_device_counts": reports["test"].device_counts if "test" in reports else {},
            "checkpoint": str(out / STUDENT_CHECKPOINT), "mlflow_run_id": mlrun.run_id, "wall_s": time.perf_counter() - start,
            "clips_per_s": float(np.mean([h["clips_per_s"] for h in trainer.history])) if trainer.history else None,
            "data_wait_share": float(np.mean([h["data_wait_share"] for h in trainer.history])) if trainer.history else None,
        }
        if cfg.qat_epochs > 0:
            from asc_dist.distill.qat import quantize_student

            result.update(quantize_student(cfg, store, trainer.model, mlrun))
        write_text_atomic(out / STUDENT_RESULT, json.dumps(result, indent=2, default=str))
    return result
