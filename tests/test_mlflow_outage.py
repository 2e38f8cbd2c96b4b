"""MLflow may go away: training never depends on the tracking server being up (a real server on 127.0.0.1, killed
mid-run; real Ray; a fake server for answers that are not MLflow's).

Before: a server killed during epoch 1 of tiny teachers meant about 8 minutes of silence per MLflow call, trials
retried twice, and after 17.5 minutes no logits at all.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest

from tests.conftest import start_until, step_env
from tests.mlflow_server import server_module

ROSTER = "defaults: {size: tiny, epochs: 8, lr: 0.002, batch_size: 16}\nteachers:\n  - {name: cnn, family: cnn, seed: 1}\n"
BOUND_S = 300  # the teachers finish within this after the server is killed (it was over 17 minutes, with no logits)


def test_a_server_killed_mid_run_costs_no_work_and_is_replayed(tmp_path, synth_root):
    ops = server_module()
    server_dir = tmp_path / "server"
    url, proc = ops.start(server_dir)
    port = int(url.rsplit(":", 1)[1])
    roster = tmp_path / "roster.yaml"
    roster.write_text(ROSTER)
    run = tmp_path / "run"
    log = tmp_path / "teachers.log"
    cmd = [sys.executable, "-m", "asc_dist.teachers", "--run", str(run), "--data", str(synth_root), "--roster", str(roster),
           "--mlflow-uri", url]  # fmt: skip
    try:
        teachers = start_until(cmd, log, "epoch 1/8")
    finally:
        ops.stop(proc)  # the server goes away during the run
    killed = time.monotonic()
    rc = teachers.wait(timeout=BOUND_S)
    text = log.read_text()
    assert rc == 0, text[-3000:]
    assert time.monotonic() - killed < BOUND_S
    assert (run / "logits" / "teacher=cnn" / "part-0.parquet").is_file()  # the work is all there
    assert "went on untracked" in text and "python -m asc_dist.tracking replay" in text
    assert list((run / "mlflow-offline").glob("*.jsonl"))

    url, proc = ops.start(server_dir, port=port)  # the server is back, same store
    try:
        replay = subprocess.run([sys.executable, "-m", "asc_dist.tracking", "replay", "--run", str(run), "--mlflow-uri", url],
                                capture_output=True, text=True, timeout=300, env=step_env())  # fmt: skip
        assert replay.returncode == 0, replay.stderr[-3000:]
        assert json.loads(replay.stdout)["replayed"] >= 1
        assert not list((run / "mlflow-offline").glob("*.jsonl"))  # moved to replayed/
        client = mlflow.MlflowClient(url)
        (teacher,) = client.search_runs([client.get_experiment_by_name("teachers").experiment_id], "attributes.run_name = 'cnn'")
        assert teacher.info.status == "FINISHED" and "asc_dist.replayed" in teacher.data.tags
        assert len(client.get_metric_history(teacher.info.run_id, "train_loss")) == 8  # every epoch, before and after the kill
        assert "test/accuracy" in teacher.data.metrics or "test_accuracy" in teacher.data.metrics
    finally:
        ops.stop(proc)


class _Answers(http.server.BaseHTTPRequestHandler):
    """/health answers 200; the API answers what the test sets (a proxy's HTML page, a 400, a 500)."""

    status, body, kind = 500, b"{}", "application/json"

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path.startswith("/health"):
            status, body, kind = 200, b"OK", "text/plain"
        else:
            status, body, kind = self.status, self.body, self.kind
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("answer", [(400, b'{"error_code": "BAD_REQUEST"}', "application/json"),
                                    (500, b"Internal Server Error", "text/plain"),
                                    (200, b"<html><body>Sign in</body></html>", "text/html")])  # fmt: skip
def test_a_server_that_answers_errors_is_one_line_and_leaves_nothing(tmp_path, synth_root, answer):
    handler = type("Handler", (_Answers,), dict(zip(("status", "body", "kind"), answer)))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    run = tmp_path / "run"
    try:
        done = subprocess.run([sys.executable, "-m", "asc_dist.teachers", "--run", str(run), "--data", str(synth_root), "--n", "1",
                               "--mlflow-uri", f"http://127.0.0.1:{server.server_address[1]}"],
                              capture_output=True, text=True, timeout=180, env=step_env())  # fmt: skip
    finally:
        server.shutdown()
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert lines[-1].startswith("error:") and f"HTTP {answer[0]}" in lines[-1]
    assert not run.exists() or not any(p.name in (".lock", "ray_results", "logits") for p in Path(run).iterdir())
