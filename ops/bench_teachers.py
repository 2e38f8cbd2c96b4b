"""Benchmark teacher training: two teachers at once under Ray against one after the other, and the training
throughput of every teacher family; prints one JSON object on stdout (progress on stderr).

(a) Concurrency. `ray.init(num_cpus=2)` once (not timed), then after one untimed warm-up call (the
process's first Tune call pays one-time costs), the same two teachers (one family and size, seeds 1 and 2, so their
work is equal) go through the project's own `run_teachers`: once together, one trial
per CPU (`cpus_per_teacher=1`, which also sets torch to one thread inside each trial), and once one after the
other (two `run_teachers` calls with one teacher each, same per-trial resources). Each call's wall time
includes everything a user waits for: Tune start-up, trial start, training, scoring every clip, writing logits,
MLflow. The overhead reported is call wall time minus the longest trial's own wall time (what Tune, trial
start and the driver add), and per trial the time outside training epochs (store opening, scoring, logits,
MLflow). Goal: speedup >= 1.8 on two cores.

(b) Throughput. Each family and size trains for one short epoch with `asc_dist.training.trainer.Trainer` directly (no Ray,
no augmentation, one torch thread unless `--threads`), after a one-batch warm-up: clips/s and the share of the
step spent waiting for data. PaSST's full size (86 M parameters, AudioSet weights) is a GPU model and is left
out; its tiny size is measured.

(c) Context teachers (`--context-profile`): the demo roster's whole-recording CP-ResNet step on 4-s and 10-s
windows part by part (`ops/step_profile.py`), with `--baseline-src OLD_CHECKOUT` beside that checkout's.

(d) Fixed costs (`--trial-overhead`): the demo roster (`asc_dist/teach/rosters/demo.yaml`) through the real
command, `python -m asc_dist.teachers`, in a fresh process: each trial's wall time against its training epochs
(`train_s`, the steps of every epoch) and the rest by part (`outside_parts_s`: setup = store, model, optimiser and
MLflow run, mostly first imports in a fresh worker; validation; epoch reports with checkpoints; scoring every clip;
reports, logits and weights), the command's start-up (process start to the first trial's start) and finish, and the
start-up's pieces, each timed alone in a fresh process: imports, Ray start, the MLflow store (new and existing).

    OMP_NUM_THREADS=1 python ops/bench_teachers.py [--family cpresnet] [--size tiny] [--epochs 8] [--quick]
        [--context-profile [--baseline-src OLD_CHECKOUT]] [--trial-overhead [--roster ROSTER]]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import yaml  # noqa: E402

from asc_dist.data.prepare import DataConfig, prepare_store  # noqa: E402
from asc_dist.data.store import SplitData, WaveformStore  # noqa: E402
from asc_dist.nets.features import FRONT_ENDS, LogMel  # noqa: E402
from asc_dist.teach.driver import TeachersConfig, run_teachers  # noqa: E402
from asc_dist.teach.trial import TIME_PARTS  # noqa: E402
from asc_dist.training.trainer import OptimConfig, Trainer  # noqa: E402
from teachers.families import build_teacher  # noqa: E402

log = logging.getLogger("bench_teachers")
REPO = Path(__file__).resolve().parents[1]

# (family, size) measured in part (b); PaSST's full size needs a GPU and AudioSet weights to make sense.
THROUGHPUT_MODELS = (
    ("passt", "tiny"), ("cpresnet", "default"), ("mobilenetv2", "default"), ("bcresnet", "default"), ("cnn", "default"),
    ("cpresnet", "tiny"), ("mobilenetv2", "tiny"), ("bcresnet", "tiny"), ("cnn", "tiny"),
)  # fmt: skip


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """`run_teachers` prints its summary table; keep stdout for this bench's JSON alone (fd-level, for Ray too)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def write_roster(path: Path, names: list[str], family: str, size: str, epochs: int, batch_size: int) -> str:
    """A roster of `names`; bench-t<k> has seed k whichever roster it is in, so both modes train the same teachers."""
    teachers = [{"name": n, "family": family, "seed": int(n.rsplit("t", 1)[1])} for n in names]
    doc = {"defaults": {"size": size, "epochs": epochs, "lr": 0.001, "batch_size": batch_size}, "teachers": teachers}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def timed_run(cfg: TeachersConfig) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    with stdout_to_stderr():
        rows = run_teachers(cfg)
    return time.perf_counter() - start, rows


def trial_summary(row: dict, train_clips: int) -> dict:
    """A trial's wall time, split into training epochs and the rest: model build (imports), validation each
    epoch, scoring every clip, reports, logits and MLflow."""
    train_s = row.get("train_s") or row["epochs_trained"] * train_clips / row["clips_per_s"]
    return {"teacher": row["teacher"], "wall_s": round(row["wall_s"], 2), "train_s": round(train_s, 2),
            "outside_training_s": round(row["wall_s"] - train_s, 2), "clips_per_s": round(row["clips_per_s"], 1),
            "outside_parts_s": {k: round(row[k], 2) for k in OUTSIDE_PARTS if row.get(k) is not None}}


def concurrency(tmp: Path, data: DataConfig, store: WaveformStore, a: argparse.Namespace) -> dict:
    import ray

    from asc_dist.infra.cluster import connect

    start = time.perf_counter()
    connect(None, num_cpus=2, num_gpus=1 if a.device == "cuda" else 0)
    ray_start_s = time.perf_counter() - start
    gpus = 0.5 if a.device == "cuda" else 0.0
    names = ["bench-t1", "bench-t2"]
    common = dict(data=data, epochs=a.epochs, cpus_per_teacher=1.0, gpus_per_teacher=gpus, experiment="bench", max_failures=0)
    train_clips = len(store.split("train", data.val_fraction, data.val_seed))
    try:
        # untimed: the process's first Tune call pays one-time imports and actor start-up that would otherwise fall on
        # whichever mode runs first (seconds, against trials of ~15 s)
        warm = time.perf_counter()
        roster = write_roster(tmp / "warmup.yaml", ["bench-t9"], a.family, a.size, 1, a.batch_size)
        timed_run(TeachersConfig(run_dir=str(tmp / "warmup"), roster=roster, **{**common, "epochs": 1}))
        warmup_s = time.perf_counter() - warm
        load = {"concurrent_start": round(os.getloadavg()[0], 2)}
        roster = write_roster(tmp / "both.yaml", names, a.family, a.size, a.epochs, a.batch_size)
        conc_s, conc_rows = timed_run(TeachersConfig(run_dir=str(tmp / "concurrent"), roster=roster, **common))
        seq_s, seq_rows = [], []
        load["sequential_start"] = round(os.getloadavg()[0], 2)
        for name in names:
            roster = write_roster(tmp / f"{name}.yaml", [name], a.family, a.size, a.epochs, a.batch_size)
            wall, rows = timed_run(TeachersConfig(run_dir=str(tmp / "sequential"), roster=roster, **common))
            seq_s.append(wall)
            seq_rows += rows
    finally:
        ray.shutdown()
    conc_trials = [trial_summary(r, train_clips) for r in conc_rows]
    seq_trials = [trial_summary(r, train_clips) for r in seq_rows]
    seq_overheads = [wall - t["wall_s"] for wall, t in zip(seq_s, seq_trials)]
    return {
        "family": a.family, "size": a.size, "epochs": a.epochs, "batch_size": a.batch_size, "train_clips": train_clips,
        "cpus_per_teacher": 1, "torch_threads_per_trial": 1, "ray_start_s_excluded": round(ray_start_s, 2),
        "warmup_call_s_excluded": round(warmup_s, 2),
        "concurrent_wall_s": round(conc_s, 2), "sequential_wall_s": round(sum(seq_s), 2),
        "sequential_call_wall_s": [round(s, 2) for s in seq_s],
        "speedup": round(sum(seq_s) / conc_s, 3),
        "speedup_trials_only": round(sum(t["wall_s"] for t in seq_trials) / max(t["wall_s"] for t in conc_trials), 3),
        "concurrent_trials": conc_trials, "sequential_trials": seq_trials,
        "overhead_per_call_s": {
            "concurrent": round(conc_s - max(t["wall_s"] for t in conc_trials), 2),
            "sequential": [round(o, 2) for o in seq_overheads],
        },
        "trial_slowdown_when_concurrent": round(
            sum(t["train_s"] for t in conc_trials) / sum(t["train_s"] for t in seq_trials), 3),
        "load_average": load, "goal_speedup": 1.8,
    }


def subset(data: SplitData, n: int) -> SplitData:
    n = min(n, len(data))
    return replace(data, table=data.table.take(slice(0, n)), rows=data.rows[:n])


def throughput(store: WaveformStore, models: list[tuple[str, str]], clips: int, batch_size: int, device: str) -> list[dict]:
    train = store.split("train")
    out = []
    for family, size in models:
        torch.manual_seed(0)
        model = build_teacher(family, size, n_classes=len(store.classes))
        front = LogMel(FRONT_ENDS[model.front_end])
        Trainer(model, front, subset(train, batch_size), None, OptimConfig(epochs=1, batch_size=batch_size), device=device).train_epoch()
        trainer = Trainer(model, front, subset(train, clips), None, OptimConfig(epochs=1, batch_size=batch_size), device=device)
        m = trainer.train_epoch()
        row = {"family": family, "size": size, "params": sum(p.numel() for p in model.parameters()),
               "clips": int(m["clips_per_s"] * m["epoch_s"] + 0.5), "clips_per_s": round(m["clips_per_s"], 1),
               "data_wait_share": round(m["data_wait_share"], 4), "epoch_s": round(m["epoch_s"], 2)}
        log.info("%s", row)
        out.append(row)
    return out


def context_profiles(tmp: Path, data: DataConfig, a: argparse.Namespace) -> dict:
    """The context CP-ResNet's training step on 4-s and 10-s windows, this checkout beside `--baseline-src`."""
    from step_profile import profile_sources

    out = {}
    for seconds in (4, 10):
        args = ["--run", str(tmp), "--store", str(data.store), "--data", str(data.root), "--teacher", "cpresnet:default",
                "--context-s", str(seconds), "--batch-size", "8", "--steps", str(a.context_steps)]
        out[f"{seconds}s"] = profile_sources(a.baseline_src, args, a.context_rounds)
    out["goal_speedup_whole_step"] = 1.5
    return out


STARTUP_PARTS = """
import json, sys, tempfile, time
t0 = time.perf_counter()
import torch
t1 = time.perf_counter()
import ray.tune
t2 = time.perf_counter()
import mlflow
from asc_dist.teach import driver, trial
t3 = time.perf_counter()
from asc_dist.infra import tracking
from asc_dist.infra.cluster import connect
db = tempfile.mkdtemp() + "/mlflow.db"
s = time.perf_counter(); tracking.experiment_id("bench", f"sqlite:///{db}"); new_store = time.perf_counter() - s
s = time.perf_counter(); connect(None, num_cpus=2); ray_s = time.perf_counter() - s
ray.shutdown()
print(json.dumps({"import_torch_s": t1 - t0, "import_ray_tune_s": t2 - t1, "import_mlflow_and_project_s": t3 - t2,
                  "mlflow_new_store_s": new_store, "ray_start_s": ray_s, "db": db}))
"""

EXISTING_STORE = """
import json, sys, time
import mlflow
from asc_dist.infra import tracking
s = time.perf_counter(); tracking.experiment_id("bench", f"sqlite:///{sys.argv[1]}"); print(json.dumps({"mlflow_existing_store_s": time.perf_counter() - s}))
"""


def fresh_process(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


OUTSIDE_PARTS = tuple(k for k in TIME_PARTS if k != "train_s")  # a trial's time outside its training epochs


def trial_overhead(tmp: Path, data: DataConfig, a: argparse.Namespace) -> dict:
    """(d): the demo roster through `python -m asc_dist.teachers` in a fresh process; per trial the share of its
    wall time outside training epochs, the command's start-up and finish, and the start-up's pieces."""
    parts = fresh_process(STARTUP_PARTS)
    parts.update(fresh_process(EXISTING_STORE, parts.pop("db")))
    run = tmp / "overhead"
    cmd = [sys.executable, "-m", "asc_dist.teachers", "--roster", a.roster, "--run", str(run), "--data", str(data.root),
           "--store", str(data.store), *(["--epochs", "1", "--size", "tiny"] if a.quick else [])]
    begun = time.time()
    subprocess.run(cmd, cwd=REPO, check=True, stdout=sys.stderr)
    ended = time.time()
    rows = json.loads((run / "teachers.json").read_text())["teachers"].values()
    trials = [{"teacher": r["teacher"], "wall_s": round(r["wall_s"], 2), "train_s": round(r["train_s"], 2),
               "outside_training_s": round(r["wall_s"] - r["train_s"], 2), "outside_share": round(1 - r["train_s"] / r["wall_s"], 3),
               "outside_parts_s": {k: round(r[k], 2) for k in OUTSIDE_PARTS}, "epochs": r["epochs_trained"]} for r in rows]
    first_start = min(r["started_at"] for r in rows)
    last_end = max(r["started_at"] + r["wall_s"] for r in rows)
    return {"roster": str(Path(a.roster).relative_to(REPO)) if Path(a.roster).is_relative_to(REPO) else a.roster,
            "command_wall_s": round(ended - begun, 2), "trials": trials,
            "startup_to_first_trial_s": round(first_start - begun, 2), "after_last_trial_s": round(ended - last_end, 2),
            "startup_parts_s": {k: round(v, 2) for k, v in parts.items()},
            "goal_outside_share": 0.2}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="TAU-layout dataset (default: generate the synthetic one in a temp dir)")
    p.add_argument("--clips-per-device", type=int, default=100, help="synthetic train clips per seen device")
    p.add_argument("--family", default="cpresnet", help="teacher family of the concurrency test")
    p.add_argument("--size", default="tiny", help="teacher size of the concurrency test")
    p.add_argument("--epochs", type=int, default=8, help="epochs per teacher in the concurrency test")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--models", default=None,
                   help="family:size list for throughput (default: passt:tiny and every other family's default and tiny)")
    p.add_argument("--throughput-clips", type=int, default=128, help="clips in each throughput epoch")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the throughput part")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda: half a GPU per teacher in part a)")
    p.add_argument("--context-profile", action="store_true", help="(c): the context teacher's step, part by part")
    p.add_argument("--baseline-src", default=None, help="(c): an older checkout (git worktree) profiled beside this one")
    p.add_argument("--context-steps", type=int, default=6, help="(c): timed steps per round")
    p.add_argument("--context-rounds", type=int, default=3, help="(c): rounds, alternating with the baseline")
    p.add_argument("--trial-overhead", action="store_true", help="(d): the demo roster's fixed costs, through the real command")
    p.add_argument("--roster", default=str(REPO / "asc_dist" / "teach" / "rosters" / "demo.yaml"), help="(d): the roster it runs")
    p.add_argument("--skip-concurrency", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--quick", action="store_true", help="smallest settings (smoke test)")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    models = [tuple(m.split(":")) for m in a.models.split(",")] if a.models else list(THROUGHPUT_MODELS)
    if a.quick:
        a.clips_per_device, a.epochs, a.throughput_clips, a.context_steps, a.context_rounds = 4, 1, 8, 1, 1
        models = models if a.models else [("cpresnet", "tiny"), ("passt", "tiny")]
    torch.set_num_threads(a.threads)
    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench_teachers_"))
    try:
        # no --data: prepare_store generates the synthetic dataset into tmp/data first
        data = DataConfig(root=a.data, store=str(tmp / "store"), synth_clips_per_device=a.clips_per_device)
        store = prepare_store(data, tmp)
        if a.data is None:  # later calls read the generated dataset (root=None would generate it again per run folder)
            data = replace(data, root=str(tmp / "data"))
        result = {"clips": len(store.table()), "cpus": os.cpu_count(), "device": a.device}
        if not a.skip_throughput:
            result["throughput"] = throughput(store, models, a.throughput_clips, a.batch_size, a.device)
            result["throughput_torch_threads"] = torch.get_num_threads()
        if a.context_profile:
            result["context_teacher_profile"] = context_profiles(tmp, data, a)
        if a.trial_overhead:
            result["trial_overhead"] = trial_overhead(tmp, data, a)
        if not a.skip_concurrency:
            result["concurrency"] = concurrency(tmp, data, store, a)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_average_start_end"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
