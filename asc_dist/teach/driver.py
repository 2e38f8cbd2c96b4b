"""`python -m asc_dist.teachers --n 12`: train N teachers in parallel with Ray Tune; logits to Parquet.

One function trial per teacher, as many at once as the cluster's resources allow (fractional GPUs work).
Every trial checkpoints each epoch to RUN/checkpoints/teachers/; a failed trial restarts from its last
checkpoint (FailureConfig), and after the driver itself was killed the same command continues there.
A teacher whose logits already exist with the same config and data fingerprint is skipped; `--force`
retrains. `--workers-per-teacher W` trains each teacher data-parallel over W Ray Train workers.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from asc_dist.cli import add_deprecated, add_shared, data_config, quiet_third_party, setup_logging
from asc_dist.data.prepare import DataConfig, prepare_store
from asc_dist.errors import ConfigError, TrainingError, first_cause
from asc_dist.infra import tracking
from asc_dist.infra.cluster import stop_trials_on_interrupt
from asc_dist.infra.offline import say_untracked
from asc_dist.run.diskspace import DiskFullError, require_free
from asc_dist.run.layout import RunLayout
from asc_dist.run.lock import run_lock
from asc_dist.run.logits import read_teacher_meta, teacher_logits_path
from asc_dist.run.writable import require_writable
from asc_dist.teach.folds import combine_folds, fold_trials, with_folds
from asc_dist.teach.roster import TeacherConfig, load_roster, take
from asc_dist.teach.trial import TIME_PARTS, TeacherRunContext
from asc_dist.training.trainer import AMP_MODES, VAL_BUDGET, check_amp

log = logging.getLogger("asc_dist.teachers")
CHECKPOINT_ALLOWANCE = 32 * 2**20  # a small teacher's epoch checkpoint and MLflow artifacts (PaSST's are larger)
DISK_FULL = "No space left on device"


@dataclass
class TeachersConfig:
    run_dir: str
    data: DataConfig
    n: int | None = None
    roster: str | None = None
    epochs: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    size: str | None = None
    passt_weights: str | None = None
    weights: dict[str, str] | None = None  # family -> local checkpoint (--weights FAMILY=FILE)
    context_s: int | None = None  # override every teacher's context (seconds of its recording)
    cpus_per_teacher: float = 1.0
    gpus_per_teacher: float = 0.0
    workers_per_teacher: int = 1
    address: str | None = None
    experiment: str = "teachers"
    mlflow_uri: str | None = None
    max_failures: int = 2
    force: bool = False
    fail_once: str | None = None  # test-only: this teacher's trial fails once after its first checkpoint
    progress_s: float = 30.0  # a progress line inside each epoch at least this often
    amp: str = "bf16"  # bf16 autocast of each model's forward on a GPU, or "off" (fp32)
    folds: int = 0  # K > 1: out-of-fold targets, K trials per teacher (asc_dist/teach/folds.py)
    val_every: int = 0  # per-epoch validation every N epochs and after the last; 0: auto (OptimConfig.val_every)


def validate_teachers(teachers: list[TeacherConfig], dirs: str | None) -> list[TeacherConfig]:
    """Fail before any training on unknown families/sizes or missing weight files; turn DIR off without IRs."""
    from teachers.families import teacher_sizes

    for t in teachers:
        if t.size not in teacher_sizes(t.family):
            raise ConfigError(f"teacher {t.name}: family {t.family!r} has no size {t.size!r}; choose one of {', '.join(teacher_sizes(t.family))}")
        if t.weights and not Path(t.weights).is_file():
            raise ConfigError(f"teacher {t.name}: weights file {t.weights} does not exist; give a local checkpoint path, a named one (passt=audioset) or an https:// URL")
        if t.epochs < 1 or t.lr <= 0 or t.batch_size < 1:
            raise ConfigError(f"teacher {t.name}: epochs, lr and batch_size must be positive")
        if not isinstance(t.context_s, int) or t.context_s < 1:
            raise ConfigError(f"teacher {t.name}: context_s must be a whole number of seconds >= 1, got {t.context_s!r}")
    if dirs is None:
        uses = [t.name for t in teachers if t.dir_p > 0]
        if uses:
            log.info("DIR for %s uses generated device responses (no --dirs given; e.g. --dirs ../shared/data/micirp)", ", ".join(uses))
    elif not Path(dirs).is_dir():
        raise ConfigError(f"--dirs {dirs} is not a folder of impulse-response wav files")
    return teachers


def parse_weights(items: list[str] | None) -> dict[str, str]:
    """`--weights FAMILY=FILE|NAME|URL` (repeatable) -> {family: spec} (`asc_dist.teach.weights.resolve` fetches)."""
    from teachers.families import TEACHER_FAMILIES

    out = {}
    for item in items or []:
        family, sep, path = item.partition("=")
        if not sep or family not in TEACHER_FAMILIES or not path:
            raise ConfigError(f"--weights {item!r}: expected FAMILY=FILE with FAMILY one of {', '.join(TEACHER_FAMILIES)}")
        out[family] = path
    return out


def with_weights(roster: list[TeacherConfig], weights: dict[str, str]) -> list[TeacherConfig]:
    """Every teacher of a family named in `weights` starts from that local checkpoint."""
    return [replace(t, weights=weights[t.family]) if t.family in weights else t for t in roster]


def is_done(run_dir: Path, t: TeacherConfig, fingerprint: str, val_carve: tuple[float, int] = (0.15, 0)) -> bool:
    """Logits exist for this config, data and validation carve (another carve moves clips between train and
    val, so the teacher would have trained on the fusion's fit clips)."""
    path = teacher_logits_path(run_dir, t.name)
    if not path.is_file():
        return False
    try:
        meta = read_teacher_meta(path)
    except Exception:  # noqa: BLE001 - an unreadable file means: train again
        return False
    return (meta.fingerprint == fingerprint and meta.config.get("config_hash") == t.config_hash()
            and meta.config.get("val_carve") == [val_carve[0], val_carve[1]])


def run_teachers(cfg: TeachersConfig) -> list[dict]:
    """Train the teachers that are not done yet; return one summary row per teacher of the roster."""
    quiet_third_party()
    run_dir = Path(cfg.run_dir).resolve()
    roster = take(load_roster(cfg.roster), cfg.n, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, size=cfg.size,
                  context_s=cfg.context_s)
    from asc_dist.teach.weights import resolve

    asked = {**({"passt": cfg.passt_weights} if cfg.passt_weights else {}), **(cfg.weights or {})}
    roster = with_weights(roster, resolve(asked))  # named checkpoints and URLs: fetched now, only when asked
    if cfg.workers_per_teacher < 1:
        raise ConfigError(f"--workers-per-teacher must be >= 1, got {cfg.workers_per_teacher}")
    if cfg.folds == 1 or cfg.folds < 0:
        raise ConfigError(f"--folds must be 0 (off) or at least 2, got {cfg.folds}")
    if cfg.val_every < 0:
        raise ConfigError(f"--val-every must be >= 0 (0 = auto), got {cfg.val_every}")
    if cfg.folds:
        roster = with_folds(roster, cfg.folds)
    check_amp(cfg.amp)
    cfg.data.check()
    roster = validate_teachers(roster, cfg.data.dirs)
    require_writable(run_dir, "the run folder", "pass --run to a folder you can write")
    uri = tracking.resolve_uri(run_dir, cfg.mlflow_uri)
    tracking.check_reachable(uri)
    with run_lock(run_dir):
        return _train_missing(cfg, roster, run_dir, uri)


def _train_missing(cfg: TeachersConfig, roster: list[TeacherConfig], run_dir: Path, uri: str) -> list[dict]:
    started = time.time()
    store = prepare_store(cfg.data, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    carve = (cfg.data.val_fraction, cfg.data.val_seed)
    todo = [t for t in roster if cfg.force or not is_done(run_dir, t, store.fingerprint, carve)]
    skipped = [t.name for t in roster if t not in todo]
    if skipped:
        log.info("skipping %d teacher(s) with up-to-date logits: %s", len(skipped), ", ".join(skipped))
    results: dict[str, dict] = {}
    errors: dict[str, str | None] = {}
    if todo:
        clips = sum(store.manifest["splits"].values())
        require_free(run_dir, len(todo) * max(1, cfg.folds) * (2 * clips * len(store.classes) * 4 + CHECKPOINT_ALLOWANCE),
                     f"{len(todo)} teacher(s) (logits, epoch checkpoints, MLflow)", "free space there or pass --run to a disk with room")
        ctx = TeacherRunContext(
            run_dir=str(run_dir), store=str(store.path.resolve()), val_fraction=cfg.data.val_fraction,
            val_seed=cfg.data.val_seed, fingerprint=store.fingerprint, mlflow_uri=uri, experiment=cfg.experiment,
            dirs=str(Path(cfg.data.dirs).resolve()) if cfg.data.dirs else None,
            device="cuda" if cfg.gpus_per_teacher > 0 else "cpu", threads=max(1, int(cfg.cpus_per_teacher)),
            fail_once=cfg.fail_once, cpus_per_worker=cfg.cpus_per_teacher, progress_s=cfg.progress_s, amp=cfg.amp,
            val_every=cfg.val_every,
        )
        from asc_dist.teach.trial import teacher_checkpoint

        trials, trial_ctx, trial_dir = todo, ctx, run_dir
        if cfg.folds:  # K trials per teacher, their logits in RUN/folds/ until combined
            trial_dir = RunLayout.of(run_dir).folds_dir
            trial_ctx = replace(ctx, run_dir=str(trial_dir))
            trials = [ft for t in todo for ft in fold_trials(t) if cfg.force or not is_done(trial_dir, ft, store.fingerprint, carve)]
        for t in trials:
            if cfg.force:
                teacher_checkpoint(t, trial_ctx).clear()  # --force retrains from epoch 1
            teacher_checkpoint(t, trial_ctx).vet(f"teacher {t.name}")
        # MLflow's store (created once, before trials race to migrate it; runs a killed driver left RUNNING marked)
        # is readied in a thread while Ray starts: both are seconds of waiting on every call
        with ThreadPoolExecutor(1) as pool:
            store_ready = pool.submit(_ready_tracking, uri, cfg.experiment, run_dir)
            with stop_trials_on_interrupt(uri, cfg.experiment, run_dir):
                results, errors = _tune(trials, trial_ctx, cfg, trial_dir, store_ready) if trials else ({}, {})
        for t in trials:
            if t.name in results:
                teacher_checkpoint(t, trial_ctx).clear()  # the logits file is what marks a teacher done
        if cfg.folds:
            results = {t.name: combine_folds(run_dir, t, store, cfg.data.val_fraction, cfg.data.val_seed, store.fingerprint)
                       for t in todo if all(is_done(trial_dir, ft, store.fingerprint, carve) for ft in fold_trials(t))}
    rows = _manifest(run_dir, roster, results, store.fingerprint)
    say_untracked(run_dir, started, uri)
    print(format_summary(rows))
    failed = [t.name for t in todo if t.name not in results]
    if failed and any(DISK_FULL in (e or "") for e in errors.values()):
        raise DiskFullError(f"teacher(s) {', '.join(failed)} stopped: the disk under {run_dir} is full (No space left on device); "
                            "free space there or pass --run to a disk with room, then run the same command: finished teachers are kept")
    if failed:
        log_dir = RunLayout.of(RunLayout.of(run_dir).folds_dir if cfg.folds else run_dir).ray_results
        name, cause = next(((n, e) for n, e in errors.items() if e), (failed[0], "no error reported"))
        raise TrainingError(f"teacher(s) {', '.join(failed)} failed; {name}: {cause}. Fix the cause and run the same command: "
                            f"finished teachers are kept, the others continue from their last epoch (logs: {log_dir})")
    return rows


def _ready_tracking(uri: str, experiment: str, run_dir: Path) -> None:
    tracking.experiment_id(experiment, uri)
    tracking.close_abandoned(uri, experiment, run_dir)


def _tune(todo: list[TeacherConfig], ctx: TeacherRunContext, cfg: TeachersConfig, run_dir: Path, store_ready: Future) -> tuple[dict[str, dict], dict[str, str | None]]:
    """Run the trials once `store_ready` (the MLflow store) is; returns the finished teachers' summaries and each
    trial's error text (None if none)."""
    from ray import tune

    from asc_dist.infra.cluster import check_shared, connect
    from asc_dist.infra.progress import EpochProgress, NodeWatch
    from asc_dist.teach.trial import context_dict, tune_trainable

    cluster = connect(cfg.address)
    check_shared({"the packed store": (ctx.store, False), "the run folder": (ctx.run_dir, True),
                  **({"the impulse-response folder": (ctx.dirs, False)} if ctx.dirs else {})})
    if cfg.workers_per_teacher > 1:
        from asc_dist.teach.ddp import check_fits, ddp_resources, ddp_trainable

        check_fits(cfg.workers_per_teacher, cfg.cpus_per_teacher, cfg.gpus_per_teacher, cluster)
        trainable = tune.with_resources(ddp_trainable, ddp_resources(cfg.workers_per_teacher, cfg.cpus_per_teacher, cfg.gpus_per_teacher))
    else:
        trainable = tune.with_resources(tune_trainable, {"cpu": cfg.cpus_per_teacher, "gpu": cfg.gpus_per_teacher})
    param_space = {
        "teacher": tune.grid_search([t.to_dict() for t in todo]),
        "context": context_dict(ctx),
        "workers": cfg.workers_per_teacher,
    }
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=None),
        run_config=tune.RunConfig(
            name=f"teachers-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(RunLayout.of(run_dir).ray_results),
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
            callbacks=[EpochProgress("teacher"), NodeWatch("teacher")],
            verbose=0,
        ),
    )
    store_ready.result()
    grid = tuner.fit()
    results, errors = {}, {}
    for result in grid:
        metrics = result.metrics or {}
        errors[result.config["teacher"]["name"]] = first_cause(result.error) if result.error else None
        if result.error is None and metrics.get("finished"):
            results[metrics["teacher"]] = metrics
    return results, errors


def _manifest(run_dir: Path, roster: list[TeacherConfig], results: dict[str, dict], fingerprint: str) -> list[dict]:
    """Update RUN_DIR/teachers.json: every teacher with config, params, accuracies (kept across reruns)."""
    from asc_dist.run.atomic import write_text_atomic

    path = RunLayout.of(run_dir).teachers_manifest
    old = json.loads(path.read_text()) if path.is_file() else {}
    entries = old.get("teachers", {})
    keys = ("teacher", "family", "params", "context_s", "init", "train_acc", "val_acc", "test_acc", "unseen_acc", "wall_s",
            *TIME_PARTS, "started_at", "clips_per_s", "node_id", "node_ip", "epochs_trained", "folds")
    for t in roster:
        if t.name in results:
            entries[t.name] = {"config": t.to_dict(), **{k: results[t.name].get(k) for k in keys}}
    write_text_atomic(path, json.dumps({"fingerprint": fingerprint, "teachers": entries}, indent=2))
    return [entries[t.name] for t in roster if t.name in entries]


def format_summary(rows: list[dict]) -> str:
    def pct(x):
        return f"{100 * x:6.2f}" if isinstance(x, (int, float)) else "     -"

    lines = [f"{'teacher':<20} {'family':<12} {'ctx s':>5} {'params':>10} {'train':>7} {'val acc':>8} {'test acc':>8} {'unseen':>8} {'wall s':>8}  init"]
    for r in rows:
        wall = f"{r['wall_s']:8.1f}" if isinstance(r.get("wall_s"), (int, float)) else "       -"
        lines.append(f"{r['teacher']:<20} {r['family']:<12} {r.get('context_s') or 1:>5} {r['params']:>10,} {pct(r.get('train_acc')):>7} "
                     f"{pct(r['val_acc']):>8} {pct(r['test_acc']):>8} {pct(r['unseen_acc']):>8} {wall}  {r.get('init') or '-'}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    d = TeachersConfig
    p = argparse.ArgumentParser(prog="python -m asc_dist.teachers", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=d.n, help="take the first N teachers of the roster (default: all)")
    p.add_argument("--roster", default=d.roster, help="roster YAML (default: the built-in 12-teacher roster)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="override every teacher's epochs")
    p.add_argument("--lr", type=float, default=d.lr, help="override every teacher's learning rate")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="override every teacher's batch size")
    p.add_argument("--size", default=d.size, help="override every teacher's size (e.g. tiny)")
    p.add_argument("--passt-weights", default=d.passt_weights, help="PaSST checkpoint: a local file (AudioSet or fine-tuned), "
                   "'audioset' (hear21passt's own AudioSet file, downloaded once into torch's hub cache) or an https:// URL; "
                   "= --weights passt=...")
    p.add_argument("--weights", action="append", default=None, metavar="FAMILY=FILE",
                   help="checkpoint for every teacher of a family (repeatable): a local file (mobilenetv2=mnv2.pt), a named one "
                        "(passt=audioset, mobilenetv2=imagenet: the libraries' own files) or an https:// URL; only these download")
    p.add_argument("--context-s", type=int, default=d.context_s, help="override every teacher's context: seconds of its own recording (1 = the clip alone)")
    p.add_argument("--cpus-per-teacher", type=float, default=d.cpus_per_teacher)
    p.add_argument("--gpus-per-teacher", type=float, default=d.gpus_per_teacher, help="fractions allowed, e.g. 0.25")
    p.add_argument("--workers-per-teacher", type=int, default=d.workers_per_teacher, help="W > 1: data-parallel (DDP) training per teacher")
    p.add_argument("--max-failures", type=int, default=d.max_failures, help="retries per trial")
    p.add_argument("--progress-s", type=float, default=d.progress_s, help="a progress line (clips/s, ETAs) inside each epoch at least this often")
    p.add_argument("--amp", default=d.amp, choices=AMP_MODES, help="on a GPU: bf16 autocast of the model's forward, or off (fp32)")
    p.add_argument("--val-every", type=int, default=d.val_every,
                   help=f"validate every N epochs and after the last; 0 (default): as often as keeps validation within "
                        f"{VAL_BUDGET * 100:.0f} %% of training time (the trained teacher and its logits are the same either way)")
    p.add_argument("--folds", type=int, default=d.folds,
                   help="K >= 2: out-of-fold targets: each teacher trained K times without one fold of whole locations; a training "
                        "clip's logits come from the fold model that never saw it, val/test logits are the mean over folds")
    p.add_argument("--force", action="store_true", help="retrain teachers whose logits exist")
    p.add_argument("--fail-once", default=None, help=argparse.SUPPRESS)  # test-only failure injection
    add_deprecated(p, "--out", "--run", dest="run")
    add_shared(p, experiment=d.experiment)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    data = data_config(args)
    cfg = TeachersConfig(
        run_dir=args.run, data=data, n=args.n, roster=args.roster, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, size=args.size, passt_weights=args.passt_weights,
        weights=parse_weights(args.weights), context_s=args.context_s,
        cpus_per_teacher=args.cpus_per_teacher, gpus_per_teacher=args.gpus_per_teacher,
        workers_per_teacher=args.workers_per_teacher, address=args.address, experiment=args.experiment,
        mlflow_uri=args.mlflow_uri, max_failures=args.max_failures, force=args.force, fail_once=args.fail_once,
        progress_s=args.progress_s, amp=args.amp, folds=args.folds, val_every=args.val_every,
    )
    run_teachers(cfg)
    return 0

