"""Fusion (eq. 4) on generated logits whose teacher quality is known by construction, and the CLI end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from asc_dist.errors import ConfigError, LogitsError
from asc_dist.fuse.crossfit import cross_fit, fusion_pays, location_of, select_teachers
from asc_dist.fuse.fit import average, class_balanced, fit_fusion, fuse
from asc_dist.fuse.fusion import FusionConfig, main, run_fusion
from asc_dist.run.logits import load_targets, write_teacher_logits

CLASSES = [f"scene{c}" for c in range(5)]
SEEN = ["a", "b", "c", "s1", "s2", "s3"]
ALL = SEEN + ["s4", "s5", "s6"]
SIGNALS = [3.0, 2.0, 1.0, 0.4]  # teacher k sees the label with strength SIGNALS[k]: t0 is best


def teacher_logits(signals, labels, rng) -> np.ndarray:
    """Teacher k: signal_k * one-hot(label) + unit Gaussian noise, so the Bayes-optimal w_k is signal_k."""
    onehot = np.eye(len(CLASSES), dtype=np.float32)[labels]
    noise = rng.standard_normal((len(signals), *onehot.shape)).astype(np.float32)
    return np.asarray(signals, np.float32)[:, None, None] * onehot + noise


def make_run(run_dir: Path, signals=SIGNALS, n: int = 900, splits=("train", "val", "test"), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), n)
    split = np.array(splits, dtype=object)[np.arange(n) % len(splits)]
    step = np.arange(n) // len(splits)  # every split gets every device
    devices = np.where(split == "test", np.array(ALL, dtype=object)[step % 9],
                       np.array(SEEN, dtype=object)[step % 6])
    names = np.array([f"audio/scene-x-{i}-0-{d}.wav" for i, d in enumerate(devices)], dtype=object)
    logits = teacher_logits(signals, labels, rng)
    for k in range(len(signals)):
        order = rng.permutation(n)  # each teacher in its own row order
        write_teacher_logits(run_dir, f"t{k}", names[order], split[order], devices[order], labels[order],
                             logits[k][order], CLASSES, {"signal": signals[k]}, "fp")
    return run_dir


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    """One sqlite store for the module: creating a store runs MLflow's migrations (seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def ce(z: np.ndarray, y: np.ndarray) -> float:
    z = z.astype(np.float64)
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    return float((lse - z[np.arange(len(y)), y]).mean())


def test_weights_rank_teachers_and_fusion_beats_average():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 5, 3000)
    logits = teacher_logits(SIGNALS, labels, rng)
    w, b, report = fit_fusion(logits, labels)
    assert list(np.argsort(-w)) == [0, 1, 2, 3]
    assert report.converged and report.grad_norm < 1e-4 and report.rows == 3000
    assert report.loss <= ce(average(logits), labels)
    assert abs(report.loss - ce(fuse(logits, w, b), labels)) < 1e-5
    np.testing.assert_allclose(w, SIGNALS, atol=0.25)  # Bayes-optimal weights for this generator


def test_known_weights_and_biases_are_recovered():
    rng = np.random.default_rng(2)
    true_w, true_b = np.array([1.5, 0.5, -0.3]), np.array([0.8, -0.4, 0.0, 0.3, -0.7])
    logits = rng.standard_normal((3, 20000, 5)).astype(np.float32)
    z = fuse(logits, true_w, true_b).astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = (p.cumsum(1) > rng.random((20000, 1))).argmax(1)
    w, b, report = fit_fusion(logits, labels, l2=1e-8)
    assert report.converged
    np.testing.assert_allclose(w, true_w, atol=0.06)
    # Softmax ignores a constant added to every class: compare centred biases.
    np.testing.assert_allclose(b - b.mean(), true_b - true_b.mean(), atol=0.06)


def test_greedy_selection_returns_the_best_teachers():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, 1500)
    signals = [0.4, 2.5, 1.0, 1.8, 0.2]
    steps = select_teachers(teacher_logits(signals, labels, rng), labels, [f"t{k}" for k in range(5)], 2)
    assert [s["teacher"] for s in steps] == ["t1", "t3"]
    assert steps[1]["val_loss"] < steps[0]["val_loss"]
    with pytest.raises(ConfigError, match="more teachers"):
        select_teachers(np.zeros((2, 3, 5), np.float32), np.zeros(3, int), ["a", "b"], 3)


def test_cli_writes_targets_report_and_mlflow_run(tmp_path, capsys, mlflow_uri):
    from mlflow import MlflowClient

    run_dir = make_run(tmp_path / "run")
    uri = mlflow_uri
    assert main(["--run", str(run_dir), "--mlflow-uri", uri, "--experiment", "fusion-test"]) == 0
    table = capsys.readouterr().out
    assert "fusion" in table and "average" in table and "unseen acc" in table

    report = json.loads((run_dir / "fused" / "fusion.json").read_text())
    assert report["teachers"] == ["t0", "t1", "t2", "t3"] and report["seen_devices"] == SEEN
    assert report["weights"]["t0"] > report["weights"]["t3"] and set(report["biases"]) == set(CLASSES)
    assert report["convergence"]["converged"]
    fusion, avg = report["results"]["fusion"], report["results"]["average"]
    assert fusion["val"]["loss"] <= avg["val"]["loss"]
    assert set(fusion["test"]["per_device"]) == set(ALL) and set(fusion["test"]["per_class"]) == set(CLASSES)
    assert fusion["test"]["per_device"]["s5"]["seen"] is False and fusion["test"]["unseen_acc"] is not None
    assert set(report["results"]["teachers"]) == {"t0", "t1", "t2", "t3"}
    assert report["results"]["teachers"]["t0"]["test"]["acc"] > report["results"]["teachers"]["t3"]["test"]["acc"]

    targets = load_targets(run_dir)
    assert targets.teachers == ["t0", "t1", "t2", "t3"] and targets.logits.shape == (900, 5)
    assert abs(ce(targets.logits[targets.splits == "val"], targets.labels[targets.splits == "val"])
               - fusion["val_in_sample"]["loss"]) < 1e-5
    # the reported val numbers are cross-fitted: out-of-sample like the teachers' and the average's
    assert fusion["val"]["cross_fitted"] and fusion["val"]["loss"] > fusion["val_in_sample"]["loss"]
    assert report["l2"] in (0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0) and report["l2_choice"] == "cross-fitted on val"
    assert len(report["crossfit"]["loss_by_l2"]) == 7
    assert sum(report["mix"].values()) == pytest.approx(1.0) and report["scale"] == pytest.approx(sum(report["weights"].values()))

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("fusion-test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["fusion.val_loss"] == pytest.approx(fusion["val"]["loss"])
    assert "weight.t0" in run.data.metrics and "fusion.test_acc.s4" in run.data.metrics
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"fusion.json", "weights.png"}


def test_select_flag_keeps_k_teachers(tmp_path, mlflow_uri):
    run_dir = make_run(tmp_path / "run", signals=[0.3, 2.5, 1.8, 0.5])
    report = run_fusion(FusionConfig(run_dir, select=2, mlflow_uri=mlflow_uri))
    assert [s["teacher"] for s in report["selection"]] == ["t1", "t2"]
    assert report["teachers"] == ["t1", "t2"] and list(report["weights"]) == ["t1", "t2"]
    assert load_targets(run_dir).teachers == ["t1", "t2"]


def test_bad_input_writes_nothing(tmp_path):
    no_val = make_run(tmp_path / "noval", splits=("train", "test"), n=60)
    with pytest.raises(LogitsError, match="no 'val' rows"):
        run_fusion(FusionConfig(no_val))
    with pytest.raises(ConfigError, match="--select"):
        run_fusion(FusionConfig(make_run(tmp_path / "few", n=60), select=9))
    with pytest.raises(LogitsError, match="no teacher logits"):
        run_fusion(FusionConfig(tmp_path / "absent"))
    for d in ("noval", "few"):
        assert not (tmp_path / d / "fused").exists() and not (tmp_path / d / "mlflow.db").exists()
    assert not (tmp_path / "absent").exists()


def test_logits_of_another_dataset_than_the_runs_are_refused(tmp_path):
    """Every logits file swapped for another dataset's agrees with itself; teachers.json says what the run trained on."""
    run_dir = make_run(tmp_path / "run", n=60)  # logits with data fingerprint "fp"
    (run_dir / "teachers.json").write_text(json.dumps({"fingerprint": "another", "teachers": {}}))
    with pytest.raises(LogitsError, match="another dataset"):
        run_fusion(FusionConfig(run_dir))
    assert not (run_dir / "fused").exists()


def test_cli_exit_2_on_misaligned_teachers(tmp_path):
    run_dir = make_run(tmp_path / "run", signals=[1.0, 1.0], n=60)
    rng = np.random.default_rng(0)
    write_teacher_logits(run_dir, "late", [f"audio/other-{i}.wav" for i in range(50)], ["val"] * 50, ["a"] * 50,
                         np.zeros(50, int), rng.standard_normal((50, 5)).astype(np.float32), CLASSES, {}, "fp")
    env = dict(os.environ, OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'm.db'}")
    proc = subprocess.run([sys.executable, "-m", "asc_dist.fusion", "--run", str(run_dir)],
                          capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: teachers cover different clip sets")
    assert "'late': 60 missing" in lines[0]
    assert not (run_dir / "fused").exists() and not (tmp_path / "m.db").exists()


def test_a_strong_penalty_falls_back_to_the_average():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 400)
    logits = np.stack([3 * np.eye(5)[labels] * s + rng.normal(0, 1, (400, 5)) for s in (1.0, 0.2, 0.5)]).astype(np.float32)
    w, b, _ = fit_fusion(logits, labels, l2=1e4)
    assert np.allclose(w, 1 / 3, atol=1e-3) and np.allclose(b, 0, atol=1e-3)
    w_free, _, _ = fit_fusion(logits, labels, l2=0.0)
    assert abs(w_free[0] - 1 / 3) > 0.1  # without the penalty the fit moves away from the average


def test_class_balanced_fit_cannot_learn_the_fit_splits_class_prior():
    """Val holds class 0 four times as often as the rest; the plain CE fit learns that prior into its biases,
    the class-balanced one does not (the test split, with another class mix, would pay for it)."""
    rng = np.random.default_rng(5)
    labels = np.where(rng.random(4000) < 0.5, 0, rng.integers(1, 5, 4000))
    logits = teacher_logits([1.0, 0.5], labels, rng)
    _, b_plain, _ = fit_fusion(logits, labels, 1e-4)
    _, b_balanced, _ = fit_fusion(logits, labels, 1e-4, row_weights=class_balanced(labels))
    assert b_plain[0] - b_plain[1:].mean() > 1.0  # log(4) ~ 1.39 learned from val's prior
    assert abs(b_balanced[0] - b_balanced[1:].mean()) < 0.15
    w_only, b_zero, _ = fit_fusion(logits, labels, 1e-4, biases=False)
    assert not b_zero.any() and w_only[0] > w_only[1]


def located_names(n: int, locations: int) -> np.ndarray:
    """TAU clip names spread over `locations` recording locations (city-location fields)."""
    return np.array([f"audio/scene-city-{i % locations}-{i}-0-a.wav" for i in range(n)], dtype=object)


def test_the_guard_keeps_the_average_unless_the_fusion_pays_on_held_out_locations():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 5, 3000)
    names = located_names(3000, 10)
    assert len(set(map(location_of, names))) == 10
    equal = teacher_logits([0.5, 0.5], labels, rng)  # Bayes-optimal weights are the signals: 1/T, the average itself
    cv = cross_fit(equal, labels, names, (1e-4,), biases=False)
    assert cv["by"] == "location" and cv["folds"] == 5
    assert fusion_pays(cv["per_fold"])["use"] == "average"
    skewed = teacher_logits([3.0, 0.0], labels, rng) * np.array([1.0, 4.0], dtype=np.float32)[:, None, None]  # t1 is loud noise
    cv = cross_fit(skewed, labels, names, (1e-4,))
    choice = fusion_pays(cv["per_fold"])
    assert choice["use"] == "fusion" and choice["gain"] > choice["spread"] > 0


def test_the_run_reports_every_variant_and_which_targets_it_wrote(tmp_path, mlflow_uri):
    run_dir = make_run(tmp_path / "run", signals=[0.5, 0.5])  # the average is already Bayes-optimal: nothing to gain
    report = run_fusion(FusionConfig(run_dir, mlflow_uri=mlflow_uri))
    assert set(report["results"]["variants"]) == {"weights only", "weights + biases", "weights + biases, balanced"}
    assert report["objective"] == {"biases": True, "class_balanced": True}
    assert report["targets"]["use"] in ("fusion", "average") and "spread" in report["targets"]["why"]
    targets = load_targets(run_dir / "fused" / "targets.parquet")
    if report["targets"]["use"] == "average":
        np.testing.assert_array_equal(targets.logits, load_targets(run_dir / "fused" / "targets.parquet", column="average").logits)


def test_target_quality_reports_softness_per_split(tmp_path, mlflow_uri):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ops"))
    from target_quality import quality

    run_dir = make_run(tmp_path / "run", signals=[3.0, 0.4])
    run_fusion(FusionConfig(run_dir, mlflow_uri=mlflow_uri))
    q = quality(run_dir, 2.0)
    assert set(q) == {"t0", "t1", "targets (fused column)", "average"}
    for name, by_split in q.items():
        assert set(by_split) == {"train", "val", "test"}
        for temps in by_split.values():
            assert temps["T=1"]["top_p"] >= temps["T=2"]["top_p"]  # a higher temperature can only soften
            assert 0.0 <= temps["T=1"]["acc"] <= 1.0
    assert q["t0"]["test"]["T=1"]["acc"] > q["t1"]["test"]["T=1"]["acc"]  # the stronger teacher is the better one
