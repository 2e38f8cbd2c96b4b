"""Teachers trained in parallel under real Ray: logits coverage, skip on rerun, retry from checkpoint, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from asc_dist.data.prepare import DataConfig
from asc_dist.run.logits import load_teachers, read_teacher_meta, teacher_logits_path
from asc_dist.teach.driver import TeachersConfig, run_teachers

ROSTER = """
defaults: {size: tiny, epochs: 2, lr: 0.002, batch_size: 16, roll: 2000}
teachers:
  - {name: cpr, family: cpresnet, seed: 1, fms_p: 0.8}
  - {name: cnn6, family: cnn, seed: 1, freqm: 8, mixup_alpha: 0.3}
  - {name: bcres, family: bcresnet, seed: 1, timem: 4}
"""


@pytest.fixture(scope="module")
def roster(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("roster") / "roster.yaml"
    path.write_text(ROSTER)
    return path


@pytest.fixture(scope="module")
def trained(ray_session, synth_root, synth_store, roster, tmp_path_factory):
    run = tmp_path_factory.mktemp("teachers") / "run"
    cfg = TeachersConfig(run_dir=str(run), data=DataConfig(root=str(synth_root)), roster=str(roster), cpus_per_teacher=0.5, fail_once="cnn6")
    rows = run_teachers(cfg)
    return run, cfg, rows, synth_store


def test_three_families_cover_every_clip_once(trained):
    run, _, rows, store = trained
    assert [r["teacher"] for r in rows] == ["cpr", "cnn6", "bcres"]
    table = store.table()
    for name in ("cpr", "cnn6", "bcres"):
        data = pq.read_table(teacher_logits_path(run, name)).to_pydict()
        assert sorted(data["filename"]) == sorted(table.filename.tolist())  # every clip, exactly once
        assert len(set(data["filename"])) == len(data["filename"])
        logits = np.array(data["logits"])
        assert logits.shape == (len(table), len(store.classes)) and np.isfinite(logits).all()
        meta = read_teacher_meta(teacher_logits_path(run, name))
        assert meta.fingerprint == store.fingerprint and meta.classes == store.classes
        assert set(data["split"]) == {"train", "val", "test"}
    aligned = load_teachers(run)
    assert aligned.logits.shape[:2] == (3, len(table))
    manifest = json.loads((run / "teachers.json").read_text())
    assert set(manifest["teachers"]) == {"cpr", "cnn6", "bcres"}
    assert all(0.0 <= r["test_acc"] <= 1.0 and r["params"] > 0 for r in rows)


def test_failed_trial_resumes_from_checkpoint(trained):
    run, _, rows, _ = trained
    assert (run / ".failed-once-cnn6").exists()  # the failure really happened
    cnn = next(r for r in rows if r["teacher"] == "cnn6")
    assert cnn["epochs_trained"] == 2  # resumed: history holds epoch 1 from the checkpoint plus epoch 2
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    exp = client.get_experiment_by_name("teachers")
    runs = client.search_runs([exp.experiment_id], "attributes.run_name = 'cnn6'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # one MLflow run, reopened after the restart
    epochs = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train_loss")]
    assert sorted(epochs) == [1, 2]
    # the trial's time parts count this attempt's epoch only, as its wall_s counts this attempt only
    epoch_s = {m.step: m.value for m in client.get_metric_history(runs[0].info.run_id, "epoch_s")}
    manifest = json.loads((run / "teachers.json").read_text())["teachers"]["cnn6"]
    assert manifest["train_s"] == pytest.approx(epoch_s[2], rel=1e-6) and manifest["train_s"] < manifest["wall_s"]
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"confusion_matrix.png", "per_device_accuracy.png", "test_report.json"} <= artifacts


def test_rerun_trains_nothing(trained):
    run, cfg, _, _ = trained
    before = {n: teacher_logits_path(run, n).stat().st_mtime_ns for n in ("cpr", "cnn6", "bcres")}
    rows = run_teachers(cfg)
    assert len(rows) == 3
    assert before == {n: teacher_logits_path(run, n).stat().st_mtime_ns for n in ("cpr", "cnn6", "bcres")}


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asc_dist.teachers", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.parametrize(
    "case",
    ["unknown_family", "missing_weights", "bad_data", "unwritable_out"],
)
def test_bad_input_one_line_exit_2_nothing_written(case, tmp_path, synth_root, roster):
    out = tmp_path / "run"
    args = ["--data", str(synth_root), "--run", str(out), "--roster", str(roster)]
    if case == "unknown_family":
        bad = tmp_path / "bad.yaml"
        bad.write_text("teachers:\n  - {name: x, family: transformerxl}\n")
        args[-1] = str(bad)
        expect = "unknown teacher family 'transformerxl'"
    elif case == "missing_weights":
        args += ["--passt-weights", str(tmp_path / "nope.pt"), "--n", "1"]
        bad = tmp_path / "p.yaml"
        bad.write_text("teachers:\n  - {name: p, family: passt, size: tiny}\n")
        args[args.index("--roster") + 1] = str(bad)
        expect = "nope.pt does not exist"
    elif case == "bad_data":
        args[1] = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "real-scenes" / "tau2022_mobile_dev")
        if not Path(args[1]).exists():
            pytest.skip("../shared/data is absent")
        expect = "fails the dataset check"
    else:
        blocker = tmp_path / "file"
        blocker.write_text("x")
        out = blocker / "run"
        args[3] = str(out)
        expect = "is a file, not a folder; pass --run"
    proc = _cli(*args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [l for l in proc.stderr.strip().splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and expect in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not out.exists()


CLUSTER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import ray
    from ray.cluster_utils import Cluster
    from asc_dist.data.prepare import DataConfig
    from asc_dist.teach.driver import TeachersConfig, run_teachers

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        cfg = TeachersConfig(run_dir=sys.argv[1], data=DataConfig(root=sys.argv[2]), roster=sys.argv[3],
                             n=2, epochs=1, cpus_per_teacher=1, address=cluster.address)
        rows = run_teachers(cfg)
        print("NODES", len([n for n in ray.nodes() if n["Alive"]]), json.dumps(sorted({r["node_id"] for r in rows})))
    finally:
        ray.shutdown()
        cluster.shutdown()
    """
)


def test_teachers_run_on_both_nodes_of_a_two_node_cluster(tmp_path, synth_root, synth_store, roster):
    script = tmp_path / "cluster.py"
    script.write_text(CLUSTER_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "run"), str(synth_root), str(roster)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("NODES"))
    _, alive, nodes = line.split(" ", 2)
    assert int(alive) == 2 and len(json.loads(nodes)) == 2, line  # one teacher per node: each node has one CPU


def test_data_parallel_teacher_trains_over_two_workers(ray_session, tmp_path, synth_root, synth_store, roster):
    """--workers-per-teacher 2: a Ray Train TorchTrainer (DDP, gloo) inside the teacher's Tune trial."""
    run = tmp_path / "run"
    cfg = TeachersConfig(run_dir=str(run), data=DataConfig(root=str(synth_root)), roster=str(roster), n=1, epochs=1,
                         workers_per_teacher=2, cpus_per_teacher=0.99)
    rows = run_teachers(cfg)
    assert [r["teacher"] for r in rows] == ["cpr"] and rows[0]["epochs_trained"] == 1
    data = pq.read_table(teacher_logits_path(run, "cpr")).to_pydict()
    assert sorted(data["filename"]) == sorted(synth_store.table().filename.tolist())
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    (mlrun,) = client.search_runs([client.get_experiment_by_name("teachers").experiment_id])
    assert mlrun.data.tags["workers"] == "2" and "train_loss" in mlrun.data.metrics


def test_data_parallel_group_that_cannot_fit_is_refused(ray_session, tmp_path, synth_root, roster):
    from asc_dist.errors import ClusterError

    cfg = TeachersConfig(run_dir=str(tmp_path / "run"), data=DataConfig(root=str(synth_root)), roster=str(roster), n=1,
                         workers_per_teacher=2, cpus_per_teacher=1.0)
    with pytest.raises(ClusterError, match="lower --cpus-per-teacher"):
        run_teachers(cfg)


def test_ddp_ranks_stay_distinct_after_a_restart(synth_store, roster):
    """A restart loads rank 0's checkpoint on every rank: rank 0 resumes its RNG exactly, the others reseed."""
    import torch

    from asc_dist.teach.ddp import restore_rank
    from asc_dist.teach.roster import load_roster
    from asc_dist.teach.trial import TeacherRunContext, teacher_trainer

    t = load_roster(str(roster))[0]
    ctx = TeacherRunContext(run_dir="/tmp", store=str(synth_store.path), val_fraction=0.15, val_seed=0, fingerprint="x",
                            mlflow_uri="sqlite:///:memory:", experiment="x", dirs=None)
    rank0 = teacher_trainer(t, ctx, synth_store, shard=(0, 2))
    rank0.epoch = 1
    state = rank0.state_dict()
    draws = []
    for rank in (0, 1):
        trainer = teacher_trainer(t, ctx, synth_store, shard=(rank, 2))
        restore_rank(trainer, state, rank)
        draws.append(torch.rand(4))
    torch.set_rng_state(state["rng"])
    assert torch.equal(draws[0], torch.rand(4))  # rank 0: exactly where it stopped
    assert not torch.equal(draws[0], draws[1])  # rank 1: its own stream, not rank 0's


def test_out_of_fold_targets_come_from_the_fold_that_did_not_train_on_the_clip(ray_session, synth_root, synth_store, tmp_path):
    """`--folds 2`: two trials per teacher, each without one fold of whole locations; a training clip's logits are
    those of the fold model that never saw it, val and test logits the mean over the two."""
    from asc_dist.data.table import group_folds
    from asc_dist.run.layout import RunLayout

    roster = tmp_path / "one.yaml"
    roster.write_text("defaults: {size: tiny, epochs: 1, lr: 0.002, batch_size: 16}\nteachers:\n  - {name: cpr, family: cpresnet, seed: 1}\n")
    run = tmp_path / "run"
    cfg = TeachersConfig(run_dir=str(run), data=DataConfig(root=str(synth_root)), roster=str(roster), cpus_per_teacher=1, folds=2)
    rows = run_teachers(cfg)
    assert [r["teacher"] for r in rows] == ["cpr"] and rows[0]["folds"] == 2
    oof = load_teachers(run, ["cpr"])
    parts = load_teachers(RunLayout.of(run).folds_dir, ["cpr.fold0", "cpr.fold1"])
    assert sorted(oof.filenames.tolist()) == sorted(synth_store.table().filename.tolist())  # complete: every clip once
    np.testing.assert_array_equal(oof.filenames, parts.filenames)
    train = synth_store.split("train", 0.15, 0).table
    fold_of = dict(zip(train.filename.tolist(), group_folds(train.identifier, 2).tolist()))
    is_train = oof.splits == "train"
    held = np.array([fold_of[f] for f in oof.filenames[is_train]])
    assert set(held.tolist()) == {0, 1}
    np.testing.assert_array_equal(oof.logits[0][is_train], parts.logits[held, np.flatnonzero(is_train)])
    assert not np.array_equal(parts.logits[0][is_train], parts.logits[1][is_train])  # two different models
    np.testing.assert_allclose(oof.logits[0][~is_train], parts.logits[:, ~is_train].mean(axis=0), rtol=1e-6)
    meta = read_teacher_meta(teacher_logits_path(run, "cpr"))
    assert meta.config["out_of_fold"] and meta.config["folds"] == 2
    before = teacher_logits_path(run, "cpr").stat().st_mtime_ns
    run_teachers(cfg)  # a rerun finds the teacher done and trains nothing
    assert teacher_logits_path(run, "cpr").stat().st_mtime_ns == before


def test_saved_weights_score_like_the_logits_and_teach_online(trained):
    """RUN/teachers/NAME/model.pt rebuilds the teacher: on clean clips it gives the stored logits, and a student
    trained with `--targets online:NAME` learns from it batch by batch (the KD term is logged)."""
    import torch

    from asc_dist.distill.config import StudentConfig, build_student_model
    from asc_dist.distill.online import load_online_teacher
    from asc_dist.distill.recipe import student_trainer
    from asc_dist.errors import ConfigError

    run, cfg, _, store = trained
    score = load_online_teacher(str(run), "cpr", store.classes, store.sample_rate, torch.device("cpu"))
    val = store.split("val", cfg.data.val_fraction, cfg.data.val_seed)
    index = np.arange(min(8, len(val)))
    online = score(torch.from_numpy(val.waves(index))).numpy()
    stored = load_teachers(run, ["cpr"])
    lookup = {f: i for i, f in enumerate(stored.filenames)}
    expected = stored.logits[0][[lookup[f] for f in val.table.filename[index]]]
    np.testing.assert_allclose(online, expected, rtol=1e-3, atol=1e-3)
    student = StudentConfig(run_dir=str(run), data=cfg.data, preset="sm1", targets="online:cpr", epochs=1, batch_size=32, device="cpu")
    trainer = student_trainer(student, store, build_student_model(student, len(store.classes)), 1, student.lr)
    trainer.fit()
    assert trainer.history[-1]["train_kd"] > 0 and np.isfinite(trainer.history[-1]["train_loss"])
    with pytest.raises(ConfigError, match="needs the teacher's weights"):
        load_online_teacher(str(run), "nobody", store.classes, store.sample_rate, torch.device("cpu"))
    with pytest.raises(ConfigError, match="--mixup 0"):
        StudentConfig(run_dir=str(run), data=cfg.data, targets="online:cpr", mixup_alpha=0.3).validate()
