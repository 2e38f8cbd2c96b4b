"""The one-command pipeline end to end on the synthetic dataset; a second invocation runs no step."""

from __future__ import annotations

import json

import pytest

from asc_dist.data.prepare import DataConfig
from asc_dist.pipeline.driver import PipelineConfig, run_pipeline


def test_tiny_pipeline_end_to_end_then_nothing_to_do(ray_session, tmp_path, synth_root, synth_store):
    cfg = PipelineConfig(
        run_dir=str(tmp_path / "run"), profile="demo", data=DataConfig(root=str(synth_root)),
        overrides={"n_teachers": 2, "teacher_epochs": 1, "presets": ("sm1",), "kd_lambdas": (0.02,), "student_epochs": 1, "qat_epochs": 1},
    )
    first = run_pipeline(cfg)
    assert first["ran"] == ["teachers", "fusion", "sweep", "report"]
    run = tmp_path / "run"
    report = (run / "report.md").read_text()
    for heading in ("## Data", "## Teachers", "## Fusion", "## Sweep", "## Best student per preset"):
        assert heading in report
    assert "**fusion**" in report and "dsflexinet-sm1" in report
    assert (run / "fused" / "targets.parquet").is_file() and (run / "accuracy_vs_macs.png").is_file()
    trials = json.loads((run / "sweep" / "results.json").read_text())["trials"]
    assert trials[0]["int8_torchscript"]
    assert trials[0]["registered_model"] == "models:/asc-dist-dsflexinet-sm1/1"  # the preset's best, in the registry
    assert "python -m asc_dist.predict --model" in report
    # one size vocabulary: report columns and the registry's version tag say param_kb (the DCASE measure), int8_file_kb the file
    assert "| param_kb |" in report and "| int8_file_kb |" in report and "int8 state" not in report
    import mlflow

    tags = mlflow.MlflowClient(f"sqlite:///{run / 'mlflow.db'}").get_model_version("asc-dist-dsflexinet-sm1", "1").tags
    best = next(t for t in trials if t.get("best_of_preset"))
    assert float(tags["param_kb"]) == pytest.approx(best["param_kb"], abs=1e-3) and float(tags["int8_file_kb"]) > float(tags["param_kb"])
    assert float(tags["val_accuracy"]) == pytest.approx(best["val_acc"], abs=1e-4)  # tags carry the MLflow metric names
    # (.lock is the run lock's holder note, rewritten by every writer that takes it)
    stamps = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and "mlflow" not in p.name and p.name != ".lock"}
    second = run_pipeline(cfg)
    assert second["ran"] == []
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}  # nothing rewritten
