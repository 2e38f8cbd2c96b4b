"""The sweep under real Ray Tune (ASHA) tracked by a real `mlflow server`; bad input fails before training."""

from __future__ import annotations

import subprocess
import sys

import pytest

from asc_dist.data.prepare import DataConfig
from asc_dist.distill.sweep import SweepConfig, run_sweep
from tests.conftest import make_targets


@pytest.fixture(scope="module")
def sweep(ray_session, mlflow_server, tmp_path_factory, synth_root, synth_store):
    run = tmp_path_factory.mktemp("sweep") / "run"
    make_targets(run, synth_store)
    cfg = SweepConfig(run_dir=str(run), presets=["sm1", "sm2"], kd_lambdas=[0.02, 0.5], epochs=2, qat_epochs=1,
                      scheduler="asha", cpus_per_trial=1, mlflow_uri=mlflow_server, experiment="sweep-test",
                      data=DataConfig(root=str(synth_root)), base={"batch_size": 32})
    return run, cfg, run_sweep(cfg)


def test_parent_run_has_one_child_per_trial_with_metrics_and_artifacts(sweep, mlflow_server):
    import mlflow

    run, cfg, rows = sweep
    client = mlflow.MlflowClient(mlflow_server)  # over HTTP
    exp = client.get_experiment_by_name("sweep-test")
    parents = client.search_runs([exp.experiment_id], "tags.`asc_dist.step` = 'sweep'")
    assert len(parents) == 1
    parent = parents[0]
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`asc_dist.step` = 'student'")
    assert sorted(c.info.run_name for c in children) == sorted(r["name"] for r in rows) and len(children) == 4
    for child in children:
        assert "val_acc" in child.data.metrics and "train_loss" in child.data.metrics
        assert any(k.startswith("val_acc_device_") for k in child.data.metrics)  # per-device accuracy every epoch
        assert "config.json" in {a.path for a in client.list_artifacts(child.info.run_id)}
        assert child.info.status in ("FINISHED", "KILLED")
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert finished and all("test_accuracy" in c.data.metrics for c in finished)
    assert {"results.md", "accuracy_vs_macs.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    int8_runs = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`asc_dist.step` = 'qat'")
    assert {r.data.tags["preset"] for r in int8_runs} == {r["preset"] for r in rows if r.get("best_of_preset")}
    assert int8_runs and all("int8_test_accuracy" in r.data.metrics for r in int8_runs)


def test_results_table_and_plot_written(sweep):
    run, cfg, rows = sweep
    assert (run / "sweep" / "results.md").read_text().count("| dsflexinet-") == 4
    assert (run / "sweep" / "accuracy_vs_macs.png").stat().st_size > 1000
    best = [r for r in rows if r.get("best_of_preset")]
    assert best and all(r["int8_torchscript"] and r["int8_test_acc"] is not None for r in best)


def test_rerun_of_an_unchanged_sweep_runs_nothing(sweep):
    run, cfg, rows = sweep
    assert run_sweep(cfg) == rows


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--presets", "sm1,sm7"], "sm7"),
        (["--kd-lambda", "0.02,1.2"], "outside [0, 1]"),
        (["--mlflow-uri", "http://127.0.0.1:9"], "unreachable"),
        (["--address", "127.0.0.1:9"], "no Ray cluster answers"),
    ],
)
def test_bad_input_one_line_exit_2_before_training(args, expect, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "asc_dist.tune", "--run", str(run), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and expect in errors[0], proc.stderr[-2000:]
    assert not run.exists()
