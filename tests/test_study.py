"""The study under real Ray and MLflow: every row x seed trained once, stats and paired differences, resumable."""

from __future__ import annotations

import json
from dataclasses import replace

import mlflow
import numpy as np
import pytest

from asc_dist.data.prepare import DataConfig
from asc_dist.errors import ConfigError
from asc_dist.run.logits import write_teacher_logits
from asc_dist.study.__main__ import StudyConfig, run_study
from asc_dist.study.report import paired, summarise
from tests.conftest import make_targets


def _teacher(run, store, name, noise, val_acc):
    table = store.table()
    rng = np.random.default_rng(1)
    logits = 3.0 * np.eye(len(store.classes), dtype=np.float32)[table.label] + rng.normal(0, noise, (len(table), len(store.classes))).astype(np.float32)
    write_teacher_logits(run, name, table.filename, table.split, table.device, table.label, logits, store.classes,
                         {"config_hash": name}, store.fingerprint)  # fmt: skip
    return {"teacher": name, "family": "cnn", "val_acc": val_acc}


@pytest.fixture(scope="module")
def study(ray_session, tmp_path_factory, synth_root, synth_store):
    run = tmp_path_factory.mktemp("study") / "run"
    make_targets(run, synth_store)
    teachers = {"good": _teacher(run, synth_store, "good", 1.0, 0.8), "weak": _teacher(run, synth_store, "weak", 3.0, 0.4)}
    (run / "teachers.json").write_text(json.dumps({"fingerprint": synth_store.fingerprint, "teachers": teachers}))
    cfg = StudyConfig(run_dir=str(run), seeds=2, epochs=1, tables=("IV",), data=DataConfig(root=str(synth_root)))
    return run, cfg, run_study(cfg)


def test_every_row_and_seed_is_reported(study):
    run, _, payload = study
    rows = payload["rows"]
    assert [r["label"] for r in rows] == ["no KD", "best single teacher (good)", "average of teachers", "fused teachers"]
    assert payload["best_teacher"] == "good"  # chosen on val accuracy
    for r in rows:
        assert r["seeds"] == [0, 1] and len(r["per_seed"]) == 2 and r["stats"]["test_acc"]["n"] == 2
        assert r["stats"]["test_acc"]["std"] is not None and set(r["per_device"]) >= {"a", "s4"}
    comp = payload["comparisons"]["fused_vs_none"]
    assert len(comp["diffs"]) == 2 and comp["mean"] == pytest.approx(np.mean(comp["diffs"]))
    text = (run / "study.md").read_text()
    assert "Table IV" in text and "Paired differences" in text and "Fused KD vs no KD" in text
    assert (run / "study_IV.png").stat().st_size > 1000
    assert json.loads((run / "study.json").read_text())["verdicts"] == payload["verdicts"]


def test_mlflow_has_a_parent_per_table_and_a_child_per_student(study):
    run, _, _ = study
    client = mlflow.MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    exp = client.get_experiment_by_name("study")
    (parent,) = client.search_runs([exp.experiment_id], "attributes.run_name = 'study-table-IV'")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 8 and all(c.info.status == "FINISHED" for c in children)
    assert "study_IV.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_rerun_trains_nothing(study):
    run, cfg, payload = study
    before = {p: p.stat().st_mtime_ns for p in (run / "study" / "results").iterdir()}
    again = run_study(cfg)
    assert {p: p.stat().st_mtime_ns for p in (run / "study" / "results").iterdir()} == before
    assert [r["stats"] for r in again["rows"]] == [r["stats"] for r in payload["rows"]]


def test_paired_difference_is_seed_by_seed():
    rows = summarise([{"table": "IV", "label": "fused teachers", "seeds": [0, 1], "results": [{"seed": 0, "test_acc": 0.5}, {"seed": 1, "test_acc": 0.7}]},
                      {"table": "IV", "label": "no KD", "seeds": [0, 1], "results": [{"seed": 0, "test_acc": 0.4}, {"seed": 1, "test_acc": 0.5}]}])
    diff = paired(rows, "fused teachers", "no KD")
    assert diff["diffs"] == pytest.approx([0.1, 0.2]) and diff["mean"] == pytest.approx(0.15)


def test_a_run_without_targets_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="teachers and fused targets"):
        run_study(StudyConfig(run_dir=str(tmp_path)))


def test_rows_and_preset_pick_and_key_the_students(study):
    """`--tables KD --rows ... --preset sm1` trains only the named rows, as sm1, under ids of their own."""
    run, cfg, _ = study
    before = set((run / "study" / "results").iterdir())
    payload = run_study(replace(cfg, tables=("KD",), rows=("no KD", "fused T1"), preset="sm1", seeds=1))
    assert [r["label"] for r in payload["rows"]] == ["no KD", "fused T1"]
    new = set((run / "study" / "results").iterdir()) - before
    assert len(new) == 2  # the sm1 no-KD student is not the sm2 one of Table IV
    results = [json.loads(p.read_text()) for p in new]
    assert {r["preset"] for r in results} == {"sm1"} and sorted(r["temperature"] for r in results) == [1.0, 2.0]
    assert "Table KD" in (run / "study.md").read_text()
    with pytest.raises(ConfigError, match="matches no row"):
        run_study(replace(cfg, rows=("bogus",)))
    with pytest.raises(ConfigError, match="not a dsflexinet preset"):
        run_study(replace(cfg, preset="sm9"))


def test_the_progress_line_names_each_training_student(tmp_path):
    """Students of 24 epochs take a quarter of an hour each on two cores: the driver says where each one is."""
    from asc_dist.run.layout import RunLayout
    from asc_dist.study.__main__ import _progress_line
    from asc_dist.study.plan import Row

    layout = RunLayout.of(tmp_path)
    layout.study_progress("a").parent.mkdir(parents=True)
    layout.study_progress("a").write_text(json.dumps({"epoch": 14, "epochs": 24, "val_acc": 0.7, "clips_per_s": 88.0}))
    jobs = {"a": (Row("IV", "no KD"), 2), "b": (Row("IV", "fused teachers"), 1)}
    line = _progress_line(layout, {"ref-a": "a", "ref-b": "b"}, jobs, 3, 5, 600.0)
    assert line == "study: 3/5 students trained in 10 min; no KD seed 2 at epoch 14/24 (val 70.0 %, 88 clips/s); 1 queued or in their first epoch"


def test_table_d_fine_tunes_the_general_students_per_device(study):
    """Table D reuses the recipe's general students (trained for Table IV) and adds their device copies; unseen
    devices are scored by the general student, so the two rows agree there seed by seed."""
    run, cfg, table_iv = study
    payload = run_study(replace(cfg, tables=("D",)))
    general, device = payload["rows"]
    assert (general["label"], device["label"]) == ("general", "device-specific")
    fused = next(r for r in table_iv["rows"] if r["label"] == "fused teachers")
    assert [s["test_acc"] for s in general["per_seed"]] == [s["test_acc"] for s in fused["per_seed"]]  # the same students
    for g, d in zip(general["per_seed"], device["per_seed"]):
        assert d["unseen_acc"] == pytest.approx(g["unseen_acc"]) and d["test_acc"] is not None
    assert payload["comparisons"]["device_vs_general_seen"]["n"] == 2
    assert any("Device-specific vs general" in v for v in payload["verdicts"])
    assert "Table D" in (run / "study.md").read_text()
    copies = sorted(p for p in (run / "students").glob("study-*/devices/*") if p.is_dir())
    assert {p.name for p in copies} == {"a", "b", "c", "s1", "s2", "s3"} and len(copies) == 2 * 6  # two seeds
