"""Progress inside an epoch, and the early warning for a plan that cannot finish."""

from __future__ import annotations

import logging

from asc_dist.teach.roster import TeacherConfig
from asc_dist.teach.trial import TeacherRunContext, teacher_trainer
from asc_dist.training.pace import Pace


def _trainer(store):
    t = TeacherConfig(name="slow", family="cnn", size="tiny", epochs=2, batch_size=8)
    ctx = TeacherRunContext(run_dir="", store=str(store.path), val_fraction=0.15, val_seed=0, fingerprint=store.fingerprint,
                            mlflow_uri="", experiment="", dirs=None, progress_s=0.0)  # fmt: skip
    return teacher_trainer(t, ctx, store)


def test_progress_lines_inside_an_epoch_and_as_metrics(synth_store, caplog):
    trainer = _trainer(synth_store)
    reports = []
    trainer.pace.on_report = reports.append
    with caplog.at_level(logging.INFO, logger="asc_dist.infra.progress"):
        trainer.train_epoch()
    lines = [r.getMessage() for r in caplog.records if "epoch 1/2:" in r.getMessage()]
    assert len(lines) >= 3 and "clips/s" in lines[0] and "epoch ETA" in lines[0] and "run ETA" in lines[0]
    assert reports and {"progress_clips_per_s", "progress_epoch_eta_s", "progress_run_eta_s"} <= set(reports[0])
    assert reports[-1]["progress_run_eta_s"] > reports[-1]["progress_epoch_eta_s"]  # one more epoch to go


def test_over_budget_plan_is_warned_with_the_remedy(synth_store, caplog):
    trainer = _trainer(synth_store)
    trainer.pace = Pace(every_s=1e9, warn_s=0.01, remedy=trainer.pace.remedy)
    with caplog.at_level(logging.WARNING, logger="asc_dist.infra.progress"):
        trainer.train_epoch()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "over the" in warning and "--size tiny" in warning and "--gpus-per-teacher" in warning and "--address" in warning
