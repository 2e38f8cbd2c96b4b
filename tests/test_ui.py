"""`python -m asc_dist.ui RUN` prints a URL that a real headless Chromium (Debian's `chromium`, fresh profile)
opens on the sweep's runs table in MLflow's model-training view, with the accuracy columns and the trials shown."""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

from asc_dist.infra import tracking
from tests.conftest import free_port, wait_for_http

CHROMIUM = shutil.which(os.environ.get("CHROMIUM", "chromium")) or shutil.which("chromium-browser")



def _sweep_run(run) -> None:
    """A run folder whose `sweep` experiment holds a parent and two scored trials, as the sweep logs them."""
    uri = tracking.resolve_uri(run)
    with tracking.run(uri, "sweep", "sweep-20261205-000000", run_dir=str(run)) as parent:
        for name, preset, lam, val in (("dsflexinet-sm1-l0.3-T2-s0", "sm1", 0.3, 0.61), ("dsflexinet-sm2-l0.3-T2-s0", "sm2", 0.3, 0.66)):
            with tracking.run(uri, "sweep", name, params={"preset": preset, "kd_lambda": lam, "temperature": 2.0},
                              parent_run_id=parent.run_id, run_dir=str(run)) as child:
                child.log_metrics({"val_accuracy": val, "test_accuracy": val - 0.2, "param_kb": 30.3, "macs": 8217626})


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here: apt-get install -y chromium (.ci/run installs it)")
def test_the_ui_url_opens_the_sweeps_runs_table_with_accuracy_columns(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _sweep_run(run)
    port = free_port()
    log = open(tmp_path / "ui.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "asc_dist.ui", str(run), "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", server, tmp_path / "ui.log")
        url = re.search(r"open (http://\S+)", (tmp_path / "ui.log").read_text()).group(1)
        assert "workflowType=machine_learning" in url and "/runs" in url
        dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                              "--window-size=1600,1000", "--virtual-time-budget=20000", "--dump-dom", url],
                             capture_output=True, text=True, timeout=180).stdout
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    text = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<style.*?</style>", " ", dom, flags=re.S))))
    assert "Model training" in text and "sweep" in text, text[:2000]
    for column in ("val_accuracy", "test_accuracy", "preset", "kd_lambda", "param_kb"):
        assert column in text, (column, text[:3000])
    assert "dsflexinet-sm1-l0.3-T2-s0" in text and "dsflexinet-sm2-l0.3-T2-s0" in text  # the trials, not one collapsed parent
    assert text.index("dsflexinet-sm2-l0.3-T2-s0") < text.index("dsflexinet-sm1-l0.3-T2-s0")  # best on val first


def test_ui_refuses_what_is_not_a_run(tmp_path):
    done = subprocess.run([sys.executable, "-m", "asc_dist.ui", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not a run folder" in done.stderr
