"""A run folder that travels: copied elsewhere with the original deleted, its registry's `models:/` predicts and
serves from the copy and nothing is written where it was made; pack and unpack carry it as one archive."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request

import numpy as np

from asc_dist.infra import tracking
from asc_dist.ship.mlflow_model import register_student
from tests.conftest import free_port, wait_for_http

NAME = "asc-dist-moved"



def _predict(run, clip, out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asc_dist.predict", "--model-file", f"models:/{NAME}/1", "--mlflow-uri",
                           f"sqlite:///{run / 'mlflow.db'}", str(clip), "--out", str(out)], capture_output=True, text=True, timeout=300)


def test_a_copied_run_predicts_and_serves_without_its_original(int8_student, synth_root, tmp_path):
    model_file, store, _ = int8_student
    original = tmp_path / "made-here" / "run"
    shutil.copytree(model_file.parent.parent.parent, original)  # the student's run folder: RUN/students/NAME/model_int8.pt
    shipped = original / model_file.relative_to(model_file.parent.parent.parent)
    uri = tracking.resolve_uri(original)
    with tracking.run(uri, "sweep", "int8-moved", run_dir=str(original)) as run:
        register_student(shipped, store.split("test").waves(np.arange(1))[0], run.run_id, uri, NAME, {})
    copy = tmp_path / "laptop" / "run"
    shutil.copytree(original, copy)
    shutil.rmtree(tmp_path / "made-here")
    clip = sorted((synth_root / "audio").glob("*.wav"))[0]

    done = _predict(copy, clip, tmp_path / "p.csv")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "re-rooted" in done.stderr and (copy / ".root").read_text().strip() == str(copy.resolve())

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "asc_dist.runs", "serve", str(copy), "--model-file", f"models:/{NAME}/1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "w"), start_new_session=True,
                              env={k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"})  # as from a fresh shell
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", server, tmp_path / "serve.log")
        body = json.dumps({"inputs": store.split("test").waves(np.arange(2)).tolist()}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(req, timeout=60).read())["predictions"]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    assert len(answer) == 2 and abs(sum(answer[0].values()) - 1) < 1e-4
    assert not (tmp_path / "made-here").exists()  # nothing was written where the run was made

    archive = tmp_path / "run.tar.gz"
    packed = subprocess.run([sys.executable, "-m", "asc_dist.runs", "pack", str(copy), "--out", str(archive)], capture_output=True, text=True, timeout=300)
    assert packed.returncode == 0, packed.stderr[-2000:]
    shutil.rmtree(tmp_path / "laptop")
    opened = subprocess.run([sys.executable, "-m", "asc_dist.runs", "unpack", str(archive), str(tmp_path / "colleague")],
                            capture_output=True, text=True, timeout=300)
    assert opened.returncode == 0 and f"models:/{NAME}/1" in opened.stdout, opened.stderr[-2000:]
    again = _predict(tmp_path / "colleague" / "run", clip, tmp_path / "q.csv")
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "q.csv").read_text() == (tmp_path / "p.csv").read_text()
    assert not (tmp_path / "laptop").exists()


def test_runs_refuses_what_is_not_a_run(tmp_path):
    done = subprocess.run([sys.executable, "-m", "asc_dist.runs", "open", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not a run folder" in done.stderr and "Traceback" not in done.stderr
    bad = tmp_path / "x.tar.gz"
    bad.write_bytes(b"not an archive")
    done = subprocess.run([sys.executable, "-m", "asc_dist.runs", "unpack", str(bad), str(tmp_path / "d")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "not a readable run archive" in done.stderr
