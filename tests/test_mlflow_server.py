"""The MLflow tracking server of ops/: runs, nested runs, metrics and artifacts over HTTP, as a sweep logs them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import pytest

from asc_dist.errors import TrackingError
from tests.mlflow_server import server_module  # the fixtures mlflow_server, mlflow_server_dir come from conftest.py


def _exp_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_nested_runs_metrics_and_artifacts_over_http(mlflow_server, mlflow_server_dir, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    exp_id = client.create_experiment(_exp_name("server-test"))
    parent = client.create_run(exp_id, run_name="sweep-parent", tags={"asc_dist.step": "sweep"}).info.run_id
    child = client.create_run(exp_id, run_name="trial-sm1", tags={"mlflow.parentRunId": parent}).info.run_id
    for step, acc in enumerate((0.31, 0.42, 0.47)):
        client.log_metric(child, "val_acc", acc, step=step)
    report = tmp_path / "result.json"
    report.write_text('{"val_acc": 0.47}')
    client.log_artifact(child, str(report), "reports")
    client.set_terminated(child)
    client.set_terminated(parent)

    # read back through a fresh client over HTTP, as the sweep test and the UI do
    reader = MlflowClient(mlflow_server)
    found = reader.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert [r.info.run_id for r in found] == [child]
    assert found[0].info.run_name == "trial-sm1" and found[0].info.status == "FINISHED"
    assert found[0].data.metrics["val_acc"] == pytest.approx(0.47)
    assert [m.value for m in reader.get_metric_history(child, "val_acc")] == pytest.approx([0.31, 0.42, 0.47])
    assert [f.path for f in reader.list_artifacts(child, "reports")] == ["reports/result.json"]
    local = reader.download_artifacts(child, "reports/result.json", str(tmp_path / "down"))
    assert open(local).read() == '{"val_acc": 0.47}'

    # the server, not the client, wrote the file: into its artifact folder
    assert reader.get_experiment(exp_id).artifact_location == f"mlflow-artifacts:/{exp_id}"
    stored = mlflow_server_dir / "artifacts" / exp_id / child / "artifacts" / "reports" / "result.json"
    assert stored.read_text() == '{"val_acc": 0.47}'


def test_tracking_module_logs_nested_runs_to_the_server(mlflow_server, tmp_path):
    """asc_dist.infra.tracking (the one place that talks to MLflow) against the HTTP server, parent and child."""
    import mlflow
    from mlflow import MlflowClient

    from asc_dist.infra import tracking

    before = (os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri())
    tracking.check_reachable(mlflow_server)
    experiment = _exp_name("tracking-test")
    with tracking.run(mlflow_server, experiment, "sweep", params={"presets": "sm1"}) as parent:
        with tracking.run(mlflow_server, experiment, "trial", params={"kd_lambda": 0.1},
                          parent_run_id=parent.run_id) as child:
            child.log_metrics({"val_acc": 0.5}, step=1)
            child.log_json({"val_acc": 0.5}, "result.json")
    assert (os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()) == before  # no global state touched

    client = MlflowClient(mlflow_server)
    exp_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([exp_id], f"tags.mlflow.parentRunId = '{parent.run_id}'")
    assert [r.info.run_id for r in runs] == [child.run_id]
    assert runs[0].data.params == {"kd_lambda": "0.1"} and runs[0].data.metrics == {"val_acc": 0.5}
    assert [f.path for f in client.list_artifacts(child.run_id)] == ["result.json"]
    assert client.get_run(parent.run_id).info.status == "FINISHED"


def test_check_reachable_fails_fast_on_a_closed_port():
    from asc_dist.infra import tracking

    port = server_module().free_port()
    with pytest.raises(TrackingError, match="unreachable.*ops/mlflow_server.sh"):
        tracking.check_reachable(f"http://127.0.0.1:{port}", timeout_s=2)


def test_start_refuses_a_busy_port_without_launching(tmp_path):
    ops = server_module()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(TrackingError, match=f"port {port} .* already in use"):
            ops.start(tmp_path / "srv", port=port)
    assert not (tmp_path / "srv" / "server.log").exists()


def test_stop_ends_a_process_group_and_tolerates_a_dead_process():
    ops = server_module()
    # a parent that starts a child in its group and then waits, like `mlflow server` starting uvicorn
    code = ("import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print(c.pid, flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    child_pid = int(proc.stdout.readline())
    assert ops.group_alive(proc.pid)
    ops.stop(proc, timeout_s=5)
    proc.stdout.close()
    assert proc.returncode is not None
    assert not ops.group_alive(proc.pid), f"child {child_pid} of the stopped process still runs"
    ops.stop(proc)  # already stopped: nothing to do, no error
