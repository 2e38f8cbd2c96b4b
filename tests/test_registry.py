"""The MLflow Model Registry round trip: register a shipped student, predict through `models:/`, serve it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asc_dist.ship.mlflow_model import register_student
from tests.conftest import REAL_SCENES, free_port, need, wait_for_http


@pytest.fixture(scope="module")
def registered(int8_student, tmp_path_factory):
    import mlflow

    model_file, store, result = int8_student
    uri = f"sqlite:///{tmp_path_factory.mktemp('registry') / 'mlflow.db'}"
    from asc_dist.infra import tracking

    with tracking.run(uri, "sweep", "int8-test") as run:
        example = store.split("test").waves(np.arange(1))[0]
        version = register_student(model_file, example, run.run_id, uri, "asc-dist-dsflexinet-sm1",
                                   {"test_accuracy": result["test_acc"], "macs": result["macs"], "param_kb": result["param_kb"]})
    client = mlflow.MlflowClient(uri)
    return uri, f"models:/asc-dist-dsflexinet-sm1/{version}", client.get_model_version("asc-dist-dsflexinet-sm1", str(version)), model_file


def test_version_carries_its_numbers_and_a_signature(registered):
    import os

    import mlflow

    uri, model_uri, version, _ = registered
    assert float(version.tags["test_accuracy"]) >= 0 and int(version.tags["macs"]) > 0 and version.tags["param_kb"]
    folder = mlflow.artifacts.download_artifacts(artifact_uri=version.source, tracking_uri=uri)
    info = mlflow.models.Model.load(folder)  # (not mlflow.set_tracking_uri: it sets the env var for the whole session)
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 32000)
    assert len(info.signature.outputs.input_names()) == 10
    assert "MLFLOW_TRACKING_URI" not in os.environ  # nothing leaked into later tests


def test_predict_through_the_registry_equals_the_file(registered, tmp_path):
    uri, model_uri, _, model_file = registered
    scenes = need(REAL_SCENES / "tut2018")
    outs = []
    for model in (model_uri, str(model_file)):
        out = tmp_path / f"{len(outs)}.csv"
        done = subprocess.run([sys.executable, "-m", "asc_dist.predict", "--model-file", model, "--mlflow-uri", uri, str(scenes), "--out", str(out)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        outs.append(out.read_text())
    assert outs[0] == outs[1]



def test_served_model_answers_with_probabilities(registered, tmp_path):
    import torch
    import torchaudio

    from asc_dist.ship.load import load_model

    uri, model_uri, _, model_file = registered
    audio, sr = sf.read(need(REAL_SCENES / "tut2018" / "park.wav"), dtype="float32", always_2d=True)
    waves = torchaudio.functional.resample(torch.from_numpy(audio.mean(1)), sr, 32000).numpy()[: 2 * 32000].reshape(2, 32000)
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "w"),
                              start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/ping", server, tmp_path / "serve.log")
        body = json.dumps({"inputs": waves.tolist()}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"})
        try:
            answer = json.loads(urllib.request.urlopen(req, timeout=60).read())["predictions"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(exc.read()[:2000]) from None
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    shipped = load_model(str(model_file))
    assert len(answer) == 2 and list(answer[0]) == shipped.classes
    served = np.array([[row[c] for c in shipped.classes] for row in answer])
    expected = torch.softmax(shipped.logits(torch.from_numpy(waves)), dim=1).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
