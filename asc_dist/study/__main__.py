"""`python -m asc_dist.study --run RUN [--seeds 3] [--epochs N]`: DS-FlexiNet's tables (arXiv 2412.20722), honestly, on your data.

Needs a run with teachers and fused targets (the pipeline or the teachers + fusion steps). Trains every row of
Tables IV, V and II (`asc_dist.study.plan`) for every seed with the same training code as the sweep
(`asc_dist.distill.student.train_student`), as Ray tasks on the local machine or a cluster, and writes RUN/study.md,
RUN/study.json and one figure per table. MLflow: experiment "study", one parent run per table, a child run per
trained student. Resumable: each finished student's result is kept in RUN/study/results/, and a rerun trains
only what is missing. On TAU22 use `--profile full` on GPUs (150 epochs; see README).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from asc_dist.cli import add_shared, data_config, parse_list, quiet_third_party, run_main, setup_logging
from asc_dist.data.prepare import DataConfig
from asc_dist.errors import ConfigError
from asc_dist.infra.cluster import stop_trials_on_interrupt
from asc_dist.infra.offline import say_untracked
from asc_dist.run.atomic import write_text_atomic
from asc_dist.run.layout import RunLayout
from asc_dist.run.lock import run_lock
from asc_dist.run.writable import require_writable
from asc_dist.study.plan import STUDY_PROFILES, TABLES, Row, best_single_teacher, general_of, rows, select

log = logging.getLogger("asc_dist.study")

PROGRESS_S = 60.0  # a progress line at least this often while students train


@dataclass
class StudyConfig:
    run_dir: str
    profile: str = "study"
    seeds: int | None = None  # number of seeds (0..n-1); default: the profile's
    epochs: int | None = None
    tables: tuple[str, ...] | None = None
    rows: tuple[str, ...] | None = None  # labels (or label prefixes) of the rows to train; default all
    preset: str | None = None  # the student preset of every row but Table II's (default: the profile's, sm2)
    data: DataConfig = DataConfig()
    mlflow_uri: str | None = None
    address: str | None = None
    experiment: str = "study"


def _qat_epochs(row: Row, profile) -> int:
    return profile.qat_epochs if dict(row.changes).get("qat") else 0


def _job_id(row: Row, seed: int, profile) -> str:
    """One trained student: the row's configuration, the seed and the training length (shared rows share ids)."""
    key = [row.key, seed, profile.epochs, _qat_epochs(row, profile)]
    if profile.overrides:  # appended only when set, so the ids (and resumes) of studies made before stay valid
        key.append(sorted(profile.overrides))
    return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:12]


def _student(cfg: StudyConfig, profile, row: Row, seed: int, uri: str, parent: str | None):
    from asc_dist.distill.config import StudentConfig

    changes = dict(row.changes)
    changes.pop("qat", None)
    qat = _qat_epochs(row, profile)
    fields = {**profile.recipe, **dict(profile.overrides), **changes}
    name = f"study-{_job_id(row, seed, profile)}"
    return StudentConfig(run_dir=cfg.run_dir, data=cfg.data, **fields, epochs=profile.epochs, qat_epochs=qat, seed=seed,
                         name=name, experiment=cfg.experiment, mlflow_uri=uri, parent_run_id=parent, threads=1,
                         device="cpu" if qat else "auto")  # fmt: skip


def _train_and_report(cfg, progress: str) -> dict:
    """One study student in a Ray worker; after each epoch its numbers go to `progress` for the driver's progress
    line (a worker's own log does not reach the driver)."""
    from asc_dist.distill.student import train_student

    def report(metrics: dict, _state: dict) -> None:
        Path(progress).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(progress, json.dumps({k: metrics.get(k) for k in ("epoch", "epochs", "val_acc", "clips_per_s")}))

    return train_student(cfg, report=report)


def _device_copies(general_dir: str, device_epochs: int, uri: str, experiment: str) -> dict:
    """A device-specific row's job in a Ray worker: the copies of its general student, fine-tuned per device; the
    row's numbers are the routed system's (`device_aware`), the general student's stay beside them."""
    from asc_dist.distill.config import StudentConfig
    from asc_dist.distill.devices import finetune_existing

    quiet_third_party()
    result = finetune_existing(general_dir, device_epochs, device_lr=StudentConfig.device_lr, qat_epochs=0, mlflow_uri=uri,
                               experiment=experiment, threads=1, device="cpu")
    general = {k: result.get(k) for k in ("val_acc", "test_acc", "seen_acc", "unseen_acc", "test_log_loss", "test_per_device")}
    return {**result, **result["device_aware"], "general": general}


def _progress_line(layout: RunLayout, pending: dict, jobs: dict, done: int, total: int, elapsed: float) -> str:
    parts, queued = [], 0
    for j in pending.values():
        path = layout.study_progress(j)
        if not path.is_file():  # queued, or in its first epoch
            queued += 1
            continue
        p = json.loads(path.read_text())
        row, seed = jobs[j]
        parts.append(f"{row.label} seed {seed} at epoch {p['epoch']}/{p['epochs']} (val {100 * (p.get('val_acc') or 0):.1f} %, "
                     f"{p.get('clips_per_s') or 0:.0f} clips/s)")  # fmt: skip
    return (f"study: {done}/{total} students trained in {elapsed / 60:.0f} min; " + "; ".join(parts)
            + f"{'; ' if parts else ''}{queued} queued or in their first epoch")


def run_study(cfg: StudyConfig) -> dict:
    import ray

    from asc_dist.data.prepare import prepare_store
    from asc_dist.infra import tracking
    from asc_dist.infra.cluster import connect
    from asc_dist.study import report

    quiet_third_party()
    cfg.data.check()
    run_dir = Path(cfg.run_dir).resolve()
    layout = RunLayout.of(run_dir)
    require_writable(run_dir, "the run folder", "pass --run to a folder you can write")
    cfg = replace(cfg, run_dir=str(run_dir))
    for needed, step in ((layout.teachers_manifest, "teachers"), (layout.targets, "fusion")):
        if not needed.is_file():
            raise ConfigError(f"{needed} is missing: the study needs a run with teachers and fused targets; run "
                              f"`python -m asc_dist.pipeline --run {cfg.run_dir}` (or the {step} step) first")
    if cfg.profile not in STUDY_PROFILES:
        raise ConfigError(f"--profile {cfg.profile!r} is unknown; choose one of {', '.join(STUDY_PROFILES)}")
    profile = STUDY_PROFILES[cfg.profile]
    if cfg.seeds is not None:
        if cfg.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {cfg.seeds}")
        profile = replace(profile, seeds=tuple(range(cfg.seeds)))
    if cfg.epochs is not None:
        if cfg.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {cfg.epochs}")
        profile = replace(profile, epochs=cfg.epochs)
    if cfg.tables:
        bad = set(cfg.tables) - set(TABLES)
        if bad:
            raise ConfigError(f"--tables {','.join(sorted(bad))} unknown; choose from {','.join(TABLES)}")
        profile = replace(profile, tables=tuple(cfg.tables))
    if cfg.preset is not None:
        from students.presets import student_presets

        known = student_presets(profile.recipe["model"])
        if cfg.preset not in known:
            raise ConfigError(f"--preset {cfg.preset!r} is not a {profile.recipe['model']} preset; choose one of {', '.join(known)}")
        profile = replace(profile, overrides=(("preset", cfg.preset),))
    uri = tracking.resolve_uri(run_dir, cfg.mlflow_uri)
    tracking.check_reachable(uri)
    store = prepare_store(cfg.data, run_dir)
    cfg = replace(cfg, data=replace(cfg.data, store=str(store.path)))
    best = best_single_teacher(run_dir)
    try:
        plan = select(rows(profile, best), list(cfg.rows) if cfg.rows else None)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    layout.study_results.mkdir(parents=True, exist_ok=True)
    state_path = layout.study_state
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    start, started = time.perf_counter(), time.time()
    with ExitStack() as stack:
        stack.enter_context(run_lock(run_dir))
        parents = {}
        for table in profile.tables:
            handle = stack.enter_context(tracking.run(uri, cfg.experiment, f"study-table-{table}", params={
                "table": table, "seeds": list(profile.seeds), "epochs": profile.epochs, "profile": cfg.profile, "best_teacher": best,
            }, tags={"asc_dist.step": "study"}, resume_run_id=state.get(table)))  # fmt: skip
            parents[table] = handle
            state[table] = handle.run_id
        write_text_atomic(state_path, json.dumps(state, indent=2))
        jobs: dict[str, tuple[Row, int]] = {}
        copies: dict[str, tuple[Row, int, str]] = {}  # device-specific jobs -> (row, seed, job of their general student)
        for row in plan:
            general = general_of(row)
            for seed in profile.seeds:
                if general is None:
                    jobs.setdefault(_job_id(row, seed, profile), (row, seed))
                else:  # its general student trains first (shared with the recipe's rows), then the copies
                    jobs.setdefault(_job_id(general, seed, profile), (general, seed))
                    copies[_job_id(row, seed, profile)] = (row, seed, _job_id(general, seed, profile))
        todo = {j: rs for j, rs in jobs.items() if not layout.study_job(j).is_file()}
        todo_copies = {j: rsg for j, rsg in copies.items() if not layout.study_job(j).is_file()}
        log.info("study: %d rows x %d seeds = %d students, %d to train (%d done before)", len(plan), len(profile.seeds),
                 len(jobs) + len(copies), len(todo) + len(todo_copies), len(jobs) + len(copies) - len(todo) - len(todo_copies))  # fmt: skip
        everything = {**jobs, **{j: (row, seed) for j, (row, seed, _) in copies.items()}}

        def drain(pending: dict) -> None:
            """Wait for `pending` (Ray ref -> job), keeping each result in RUN/study/results/ as it comes: after an
            interrupt a rerun trains the rest."""
            done, total = 0, len(pending)
            with stop_trials_on_interrupt(uri, cfg.experiment, run_dir):
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1, timeout=PROGRESS_S)
                    if not ready:
                        log.info(_progress_line(layout, pending, everything, done, total, time.perf_counter() - start))
                        continue
                    j = pending.pop(ready[0])
                    result = ray.get(ready[0])
                    write_text_atomic(layout.study_job(j), json.dumps({**result, "seed": everything[j][1]}, default=str))
                    done += 1
                    elapsed = time.perf_counter() - start
                    log.info("study: %d/%d students trained (%s, seed %d: test %.1f %%), ETA %.0f min", done, total, everything[j][0].label,
                             everything[j][1], 100 * (result.get("test_acc") or 0), elapsed / done * len(pending) / 60)  # fmt: skip

        if todo or todo_copies:
            connect(cfg.address)
        if todo:
            task = ray.remote(num_cpus=1)(_train_and_report)
            drain({task.remote(_student(cfg, profile, row, seed, uri, parents[row.table].run_id), str(layout.study_progress(j))): j
                   for j, (row, seed) in todo.items()})  # fmt: skip
        if todo_copies:
            task = ray.remote(num_cpus=1)(_device_copies)
            drain({task.remote(str(layout.student(f"study-{g}")), dict(row.changes)["device_epochs"], uri, cfg.experiment): j
                   for j, (row, seed, g) in todo_copies.items()})  # fmt: skip
        row_results = []
        for row in plan:
            ids = [_job_id(row, s, profile) for s in profile.seeds]
            res = [json.loads(layout.study_job(j).read_text()) for j in ids]
            row_results.append({"table": row.table, "label": row.label, "changes": dict(row.changes), "seeds": list(profile.seeds), "results": res})
        summary = report.summarise(row_results)
        comparisons = {
            "fused_vs_none": report.paired(summary, "fused teachers", "no KD"),
            "fused_vs_average": report.paired(summary, "fused teachers", "average of teachers"),
            "average_vs_none": report.paired(summary, "average of teachers", "no KD"),
            "fused_vs_single": report.paired(summary, "fused teachers", "best single teacher"),
            "rn_adir_vs_bn_dir_unseen": report.paired(summary, "RN + ADIR", "BN + DIR", "unseen_acc"),
            "device_vs_general": report.paired(summary, "device-specific", "general"),
            "device_vs_general_seen": report.paired(summary, "device-specific", "general", "seen_acc"),
        }
        verdicts = report.verdicts(summary, comparisons)
        header = (f"# Study ({cfg.profile} profile): {len(profile.seeds)} seeds ({', '.join(map(str, profile.seeds))}), "
                  f"{profile.epochs} epochs, QAT {profile.qat_epochs} epochs; best single teacher on val: {best}\n\n"
                  f"Every row is the paper's recipe (DS-FlexiNet {dict(profile.overrides).get('preset', profile.recipe['preset'])}, RN, Freq-MixStyle 0.4/0.3, Auto-DIR p 0.6 with tau from the "
                  f"training clips, roll, frequency masking, fused-teacher KD) with the one change its label names. Accuracy "
                  f"is mean ± standard deviation over seeds; every row that ran is shown.")  # fmt: skip
        text = report.markdown(summary, [c for c in comparisons.values() if c], verdicts, header)
        for table in profile.tables:
            fig = report.figure(summary, table)
            fig.savefig(RunLayout.of(run_dir).study_figure(table), dpi=110)
            parents[table].log_figure(fig, f"study_{table}.png")
            for r in summary:
                if r["table"] == table and r["stats"]["test_acc"]["mean"] is not None:
                    key = r["label"].split(" (")[0].replace(" ", "_").replace("+", "plus")
                    parents[table].log_metrics({f"{key}_test_acc": r["stats"]["test_acc"]["mean"]})
            parents[table].log_text(text, "study.md")
        payload = {"profile": cfg.profile, "seeds": list(profile.seeds), "epochs": profile.epochs, "best_teacher": best,
                   "rows": summary, "comparisons": comparisons, "verdicts": verdicts,
                   "wall_s": time.perf_counter() - start}  # fmt: skip
        write_text_atomic(RunLayout.of(run_dir).study_json, json.dumps(payload, indent=1, default=str))
        write_text_atomic(RunLayout.of(run_dir).study_md, text)
    say_untracked(run_dir, started, uri)
    print(text)
    return payload


def build_parser() -> argparse.ArgumentParser:
    d = StudyConfig
    p = argparse.ArgumentParser(prog="python -m asc_dist.study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default=d.profile, choices=sorted(STUDY_PROFILES), help="study: 2 CPU cores, 24 epochs (about 2.5 h on the synthetic default); full: TAU22 on GPUs")
    p.add_argument("--seeds", type=int, default=d.seeds, help="seeds per row (default: the profile's)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="student epochs (default: the profile's)")
    p.add_argument("--tables", default=None, help=f"comma-separated subset of {','.join(TABLES)} (KD: the distillation diagnosis)")
    p.add_argument("--rows", default=None, help="comma-separated row labels (or their beginnings) to train, e.g. 'no KD,fused'; default all")
    p.add_argument("--preset", default=None, help="student preset of every row but Table II's (default sm2; sm1 to fit a wide table in the budget)")
    add_shared(p, experiment=d.experiment)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    run_study(StudyConfig(run_dir=args.run, profile=args.profile, seeds=args.seeds, epochs=args.epochs,
                          tables=tuple(parse_list(args.tables, flag="--tables")) if args.tables else None, data=data_config(args),
                          rows=tuple(parse_list(args.rows, flag="--rows")) if args.rows else None, preset=args.preset,
                          mlflow_uri=args.mlflow_uri, address=args.address, experiment=args.experiment))  # fmt: skip
    return 0


if __name__ == "__main__":
    run_main(main)
