"""`python -m asc_dist.pipeline`: the whole system in one command (the README's first command).

data (synthetic if no --data) -> check and pack -> teachers (Ray) -> fusion -> sweep (Ray Tune + MLflow)
-> int8 export of the best student per preset -> RUN/report.md. Each step records the fingerprint of its
inputs in RUN/pipeline.json and is skipped while that fingerprint and its outputs stand, so an interrupted
pipeline resumes where it stopped and a finished one runs no step at all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from asc_dist.cli import DEFAULT_RUN, add_deprecated, add_shared, data_config, parse_list, quiet_third_party, setup_logging
from asc_dist.data.prepare import DataConfig
from asc_dist.distill.config import KD_LAMBDA, SWEEP_KD_LAMBDAS
from asc_dist.run.atomic import write_text_atomic
from asc_dist.run.layout import RunLayout
from asc_dist.run.lock import run_lock
from asc_dist.run.writable import require_writable
from asc_dist.teach.roster import DEFAULT_ROSTER, DEMO_ROSTER

log = logging.getLogger("asc_dist.pipeline")


@dataclass(frozen=True)
class Profile:
    roster: str
    n_teachers: int | None = None
    teacher_epochs: int | None = None
    clips_per_device: int | None = None
    presets: tuple[str, ...] = ("sm1", "sm2", "sm3", "sm4")
    kd_lambdas: tuple[float, ...] = SWEEP_KD_LAMBDAS
    temperatures: tuple[float, ...] = (2.0,)
    student_epochs: int = 30
    qat_epochs: int = 6
    scheduler: str = "asha"


PIPELINE_PROFILES = {
    # Two CPU cores, under 15 minutes: four tiny teachers, two presets x two lambdas.
    "demo": Profile(roster=str(DEMO_ROSTER), clips_per_device=120, presets=("sm1", "sm2"), kd_lambdas=(KD_LAMBDA, 0.5), student_epochs=8, qat_epochs=2),
    # The paper's setting: the 12-teacher roster and the sm1-sm4 x lambda sweep (GPU cluster).
    "full": Profile(roster=str(DEFAULT_ROSTER)),
}


@dataclass
class PipelineConfig:
    run_dir: str = DEFAULT_RUN
    profile: str = "demo"
    data: DataConfig = field(default_factory=DataConfig)
    address: str | None = None
    mlflow_uri: str | None = None
    overrides: dict = field(default_factory=dict)  # Profile fields replaced from the CLI


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class StepState:
    """RUN/pipeline.json: per step, the fingerprint of the inputs it last completed with."""

    def __init__(self, run_dir: Path):
        self.path = RunLayout.of(run_dir).pipeline_state
        self.done = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def fresh(self, step: str, key: str, *outputs: Path) -> bool:
        return self.done.get(step) == key and all(p.exists() for p in outputs)

    def mark(self, step: str, key: str) -> None:
        self.done[step] = key
        write_text_atomic(self.path, json.dumps(self.done, indent=2))


def run_pipeline(cfg: PipelineConfig) -> dict:
    from asc_dist.infra import tracking

    quiet_third_party()
    profile = replace(PIPELINE_PROFILES[cfg.profile], **cfg.overrides)
    cfg.data.check()
    run_dir = Path(cfg.run_dir).resolve()
    require_writable(run_dir, "the run folder", "pass --run to a folder you can write")
    uri = tracking.resolve_uri(run_dir, cfg.mlflow_uri)
    tracking.check_reachable(uri)
    if cfg.address:
        from asc_dist.infra.cluster import connect

        connect(cfg.address)
    data = cfg.data if cfg.data.root or profile.clips_per_device is None else replace(cfg.data, synth_clips_per_device=profile.clips_per_device)
    with run_lock(run_dir):  # one writer per run folder; the steps below take it again (re-entrant)
        return _run_steps(cfg, profile, run_dir, uri, data)


def _run_steps(cfg: PipelineConfig, profile: Profile, run_dir: Path, uri: str, data: DataConfig) -> dict:
    from asc_dist.data.prepare import prepare_store

    start, ran = time.perf_counter(), []
    store = prepare_store(data, run_dir)  # skips itself: synth once, pack by fingerprint
    data = replace(data, store=str(store.path))
    state, layout = StepState(run_dir), RunLayout.of(run_dir)

    teachers_key = _key(store.fingerprint, profile.roster, Path(profile.roster).read_text(), profile.n_teachers, profile.teacher_epochs)
    if not state.fresh("teachers", teachers_key, layout.teachers_manifest):
        from asc_dist.teach.driver import TeachersConfig, run_teachers

        run_teachers(TeachersConfig(run_dir=str(run_dir), data=data, n=profile.n_teachers, roster=profile.roster,
                                    epochs=profile.teacher_epochs, address=cfg.address, mlflow_uri=uri))
        state.mark("teachers", teachers_key)
        ran.append("teachers")

    fusion_key = _key(teachers_key, layout.teachers_manifest.read_text())
    if not state.fresh("fusion", fusion_key, layout.targets):
        from asc_dist.fuse.fusion import FusionConfig, run_fusion

        run_fusion(FusionConfig(run_dir=str(run_dir), mlflow_uri=uri))
        state.mark("fusion", fusion_key)
        ran.append("fusion")

    sweep_key = _key(fusion_key, profile)
    if not state.fresh("sweep", sweep_key, layout.sweep_results):
        from asc_dist.distill.sweep import SweepConfig, run_sweep

        run_sweep(SweepConfig(run_dir=str(run_dir), presets=list(profile.presets), kd_lambdas=list(profile.kd_lambdas),
                              temperatures=list(profile.temperatures), epochs=profile.student_epochs, qat_epochs=profile.qat_epochs,
                              scheduler=profile.scheduler, address=cfg.address, mlflow_uri=uri, data=data))
        state.mark("sweep", sweep_key)
        ran.append("sweep")

    report_key = _key(sweep_key, layout.sweep_results.read_text())
    if not state.fresh("report", report_key, layout.report):
        from asc_dist.pipeline.report import write_report

        write_report(run_dir, store, cfg.profile, time.perf_counter() - start)
        state.mark("report", report_key)
        ran.append("report")
    log.info("pipeline done in %.0f s; steps run: %s", time.perf_counter() - start, ", ".join(ran) or "none (all up to date)")
    return {"ran": ran, "report": str(layout.report), "wall_s": time.perf_counter() - start}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asc_dist.pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default=PipelineConfig.profile, choices=sorted(PIPELINE_PROFILES))
    g = p.add_argument_group("profile overrides")
    g.add_argument("--n", type=int, default=None, help="take the first N teachers of the profile's roster")
    g.add_argument("--teacher-epochs", type=int, default=None)
    g.add_argument("--clips-per-device", type=int, default=None, help="size of the synthetic dataset")
    g.add_argument("--presets", default=None, help="comma-separated student presets to sweep")
    g.add_argument("--kd-lambda", default=None, help="comma-separated KD lambdas to sweep (weight of the label loss)")
    g.add_argument("--student-epochs", type=int, default=None)
    g.add_argument("--qat-epochs", type=int, default=None)
    add_deprecated(p, "--n-teachers", "--n", dest="n", type=int)
    add_shared(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    overrides = {
        k: v for k, v in {
            "n_teachers": args.n, "teacher_epochs": args.teacher_epochs, "clips_per_device": args.clips_per_device,
            "presets": tuple(parse_list(args.presets, flag="--presets")) if args.presets else None,
            "kd_lambdas": tuple(parse_list(args.kd_lambda, float, "--kd-lambda")) if args.kd_lambda else None,
            "student_epochs": args.student_epochs, "qat_epochs": args.qat_epochs,
        }.items() if v is not None
    }
    cfg = PipelineConfig(run_dir=args.run, profile=args.profile, data=data_config(args),
                         address=args.address, mlflow_uri=args.mlflow_uri, overrides=overrides)
    result = run_pipeline(cfg)
    print(json.dumps(result))
    return 0

