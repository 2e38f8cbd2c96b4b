"""Student training end to end on real data: KD from Parquet targets, MLflow, QAT, int8 TorchScript; bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import make_targets


@pytest.fixture(scope="module")
def student_run(int8_student):
    model_file, _, result = int8_student
    return model_file.parents[2], result  # RUN/students/NAME/model_int8.pt


def test_student_trains_with_kd_and_exports_int8(student_run):
    run, result = student_run
    assert result["params"] > 10_000 and result["macs"] > 1e6
    assert 0.0 <= result["test_acc"] <= 1.0 and 0.0 <= result["int8_test_acc"] <= 1.0
    assert set(result["int8_test_per_device"]) >= {"a", "s4", "s6"}
    saved = json.loads((Path(result["checkpoint"]).parent / "result.json").read_text())
    assert saved["name"] == result["name"]
    assert result["int8_file_kb"] > result["param_kb"]  # the exported file: weights, scales, container and front-end constants
    assert result["param_kb"] == pytest.approx(result["params"] / 1000)  # DCASE count: one byte per parameter, kB of 1000 B


def test_int8_torchscript_predicts_in_a_fresh_process(student_run):
    _, result = student_run
    code = (
        "import sys, torch; m = torch.jit.load(sys.argv[1]); m.eval();"
        "x = torch.randn(3, 32000) * 0.1; y = m(x);"
        "assert y.shape == (3, 10), y.shape; assert torch.isfinite(y).all(); print('ok', y.argmax(1).tolist())"
    )
    proc = subprocess.run([sys.executable, "-c", code, result["int8_torchscript"]], capture_output=True, text=True, timeout=120, cwd="/")
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), proc.stderr[-2000:]


def test_student_run_logged_to_mlflow(student_run):
    import mlflow

    run, result = student_run
    client = mlflow.MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    r = client.get_run(result["mlflow_run_id"])
    assert r.info.status == "FINISHED"
    assert r.data.params["preset"] == "sm1" and "kd_lambda" in r.data.params
    assert {"test_accuracy", "int8_test_accuracy", "macs", "int8_file_kb"} <= set(r.data.metrics)
    # one size vocabulary: the DCASE measure is `param_kb` in the result, in MLflow and in the complexity CLI
    cli = subprocess.run([sys.executable, "-m", "asc_dist.complexity", f"dsflexinet:{result['preset']}", "--json"], capture_output=True,
                         text=True, timeout=120)
    assert r.data.metrics["param_kb"] == pytest.approx(result["param_kb"]) == pytest.approx(json.loads(cli.stdout)["param_kb"])
    arts = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"confusion_matrix.png", "per_device_accuracy.png", "model_int8.pt", "config.json"} <= arts


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asc_dist.students", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", ["model", "preset", "lambda", "missing_targets", "empty_irs"])
def test_bad_input_one_line_exit_2(case, tmp_path, synth_root, synth_store):
    run = tmp_path / "run"
    args = ["--run", str(run), "--data", str(synth_root), "--epochs", "1"]
    if case == "model":
        args += ["--model", "resnet9000"]
        expect = "resnet9000"
    elif case == "preset":
        args += ["--preset", "sm9"]
        expect = "sm9"
    elif case == "lambda":
        args += ["--kd-lambda", "1.5"]
        expect = "outside [0, 1]"
    elif case == "missing_targets":
        make_targets(run, synth_store, drop=5)
        expect = "training clips have no target"
    else:
        empty = tmp_path / "irs"
        empty.mkdir()
        (empty / "broken.wav").write_bytes(b"not audio")
        args += ["--adir", "323,0.6", "--dirs", str(empty), "--targets", "none"]
        expect = str(empty)
    proc = _cli(*args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and expect in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (run / "students").exists()
