"""A trial that runs all its epochs is always scored, whatever ASHA decides; the report survives missing fields."""

from __future__ import annotations

from pathlib import Path

from asc_dist.data.prepare import DataConfig
from asc_dist.distill.config import StudentConfig
from asc_dist.distill.student import train_student
from asc_dist.distill.sweep import asha
from asc_dist.pipeline.report import _int8_section


def test_last_epoch_is_reported_only_with_the_scores(tmp_path, synth_root, synth_store):
    reports = []
    cfg = StudentConfig(run_dir=str(tmp_path / "run"), data=DataConfig(root=str(synth_root), store=str(synth_store.path)),
                        targets="none", epochs=3, batch_size=32, device="cpu", threads=1)  # fmt: skip
    result = train_student(cfg, report=lambda metrics, state: reports.append(metrics["epoch"]), store=synth_store)
    # epochs 1 and 2 report as they end; epoch 3 is the sweep's final report, made after scoring, so the
    # report ASHA sees at iteration 3 (its max_t) is a finished trial with test scores and result.json
    assert reports == [1, 2]
    assert result["test_acc"] is not None and (Path(cfg.out_dir) / "result.json").is_file()


def test_asha_stops_at_the_final_report_not_after_it():
    for epochs in (2, 6, 8, 30):
        scheduler = asha(epochs)
        milestones = [rung[0] for bracket in scheduler._brackets for rung in bracket._rungs]
        assert scheduler._max_t == epochs and max(milestones) <= epochs  # iteration `epochs` is the scored one


def test_report_never_crashes_on_missing_fields():
    rows = [{"name": "dsflexinet-sm2", "best_of_preset": True, "params": None, "macs": None, "test_acc": None,
             "unseen_acc": None, "int8_file_kb": None, "fp32_latency_ms": None}]  # fmt: skip
    (line,) = [x for x in _int8_section(rows) if x.startswith("| dsflexinet-sm2")]
    assert line.count(" - ") >= 8


def test_students_refuse_the_fusions_fit_clips(tmp_path, synth_root, synth_store):
    import subprocess
    import sys

    import numpy as np
    import pytest

    from asc_dist.errors import ConfigError
    from asc_dist.run.logits import write_targets

    run = tmp_path / "run"
    # targets written with a wider carve (0.5): the fusion fitted on clips that are training clips at 0.15
    wide = synth_store.table(0.5, 0)
    write_targets(run, wide.filename, wide.split, wide.device, wide.label,
                  np.eye(len(synth_store.classes), dtype=np.float32)[wide.label], np.eye(len(synth_store.classes), dtype=np.float32)[wide.label],
                  synth_store.classes, ["t"], synth_store.fingerprint)  # fmt: skip
    cfg = StudentConfig(run_dir=str(run), data=DataConfig(root=str(synth_root), store=str(synth_store.path), val_fraction=0.15),
                        epochs=1, device="cpu")  # fmt: skip
    with pytest.raises(ConfigError, match="fusion was fitted on"):
        train_student(cfg, store=synth_store)
    # the sweep's CLI takes the same option and refuses before any trial starts
    res = subprocess.run([sys.executable, "-m", "asc_dist.tune", "--run", str(run), "--data", str(synth_root), "--store",
                          str(synth_store.path), "--val-fraction", "0.15", "--presets", "sm1", "--kd-lambda", "0.5", "--epochs", "1"],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert res.returncode == 2 and "fusion was fitted on" in res.stderr and "Traceback" not in res.stderr
    assert not (run / "ray_results").exists()
