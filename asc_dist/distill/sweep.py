"""`python -m asc_dist.tune`: Ray Tune sweep over student presets x KD lambda (x temperature), in MLflow.

Every trial is one `asc_dist.distill.student.train_student` run, nested in MLflow under one parent run for the
sweep; ASHA stops weak trials early on validation accuracy; a failed trial resumes from its last epoch
checkpoint. At the end: a results table, an accuracy-vs-MACs plot on the parent run, and the best trial of
each preset QAT-finetuned and exported to int8 TorchScript.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from asc_dist.cli import add_shared, data_config, parse_list, quiet_third_party, setup_logging
from asc_dist.data.prepare import DataConfig
from asc_dist.distill.config import SWEEP_KD_LAMBDAS, TARGET_KINDS, StudentConfig
from asc_dist.distill.recipe import check_targets
from asc_dist.errors import ConfigError, TrainingError, first_cause
from asc_dist.infra import tracking
from asc_dist.infra.cluster import stop_trials_on_interrupt
from asc_dist.infra.offline import say_untracked
from asc_dist.run.atomic import write_text_atomic
from asc_dist.run.checkpoint import TrialCheckpoint, epoch_reporter, node_ip, resume_from
from asc_dist.run.layout import STUDENT_RESULT, RunLayout
from asc_dist.run.lock import run_lock
from asc_dist.run.writable import require_writable
from asc_dist.training.kd import validate_kd

log = logging.getLogger("asc_dist.tune")


@dataclass
class SweepConfig:
    run_dir: str
    presets: list[str] = field(default_factory=lambda: ["sm1", "sm2", "sm3", "sm4"])
    kd_lambdas: list[float] = field(default_factory=lambda: list(SWEEP_KD_LAMBDAS))
    temperatures: list[float] = field(default_factory=lambda: [2.0])
    model: str = "dsflexinet"
    targets: str = "fused"
    epochs: int = 24  # sm2 students plateau on val by epoch 14-20 on real audio (docs/kd_diagnosis.md)
    qat_epochs: int = 2
    device_epochs: int = 0  # > 0: the best student of each preset gets device copies (asc_dist.distill.devices), registered with it
    num_samples: int = 1
    scheduler: str = "asha"
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: str | None = None
    mlflow_uri: str | None = None
    experiment: str = "sweep"
    data: DataConfig = field(default_factory=DataConfig)
    base: dict = field(default_factory=dict)  # further StudentConfig fields shared by every trial

    def validate(self) -> None:
        from students.presets import student_presets

        valid = student_presets(self.model)
        bad = [p for p in self.presets if p not in valid]
        if bad or not self.presets:
            raise ConfigError(f"unknown preset(s) {bad or '(none given)'} for {self.model}; choose from {', '.join(valid)}")
        if not self.kd_lambdas or not self.temperatures:
            raise ConfigError("give at least one --kd-lambda and one --temperature")
        for lam in self.kd_lambdas:
            for t in self.temperatures:
                validate_kd(lam, t, "cpjku")
        if self.scheduler not in ("asha", "fifo"):
            raise ConfigError(f"--scheduler {self.scheduler!r} is unknown; choose asha or fifo")
        if self.epochs < 1 or self.num_samples < 1:
            raise ConfigError("--epochs and --num-samples must be >= 1")
        self.data.check()

    def fingerprint(self, targets_fp: str) -> str:
        d = asdict(self)
        for k in ("address", "mlflow_uri", "max_concurrent", "cpus_per_trial", "gpus_per_trial", "run_dir"):
            d.pop(k)
        return hashlib.sha256(json.dumps([d, targets_fp], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _student(sweep: SweepConfig, trial: dict, parent_run_id: str | None, uri: str) -> StudentConfig:
    name = f"{sweep.model}-{trial['preset']}-l{trial['kd_lambda']:g}-T{trial['temperature']:g}-s{trial['sample']}"
    return StudentConfig(
        run_dir=sweep.run_dir, data=sweep.data, model=sweep.model, preset=trial["preset"], targets=sweep.targets,
        kd_lambda=trial["kd_lambda"], temperature=trial["temperature"], epochs=sweep.epochs, seed=trial["sample"],
        qat_epochs=0, name=name, experiment=sweep.experiment, mlflow_uri=uri, parent_run_id=parent_run_id,
        device="cuda" if sweep.gpus_per_trial > 0 else "cpu", threads=max(1, int(sweep.cpus_per_trial)), **sweep.base,
    )


def trial_checkpoint(sweep: SweepConfig, trial: dict, fingerprint: str) -> TrialCheckpoint:
    """A trial's epoch checkpoint, keyed by the sweep's fingerprint (its config and the targets it learns from)."""
    return TrialCheckpoint.of(sweep.run_dir, "sweep", _student(sweep, trial, None, "").run_name, fingerprint)


def sweep_trainable(config: dict) -> None:
    """One student training per trial; reports val_acc every epoch (ASHA's signal), its state to a stable
    checkpoint. A trial ASHA stopped before the driver was killed reports its last epoch again and ends."""
    from ray import tune

    from asc_dist.data.store import WaveformStore
    from asc_dist.distill.student import train_student

    sweep = SweepConfig(**{**config["sweep"], "data": DataConfig(**config["sweep"]["data"])})
    cfg = _student(sweep, config["trial"], config["parent_run_id"], config["mlflow_uri"])
    checkpoint = trial_checkpoint(sweep, config["trial"], config["fingerprint"])
    earlier = checkpoint.stopped() or checkpoint.finished()
    if earlier is not None:  # decided before an interrupt: stopped by the scheduler, or trained to the end
        tune.report(earlier)
        return
    store = WaveformStore(sweep.data.store)
    result = train_student(cfg, report=epoch_reporter(checkpoint), resume=resume_from(checkpoint, cfg.run_name), store=store)
    final = {**{k: v for k, v in result.items() if not isinstance(v, dict)}, "epoch": sweep.epochs, "finished": 1, "node_ip": node_ip()}
    checkpoint.mark_finished(final)
    tune.report(final)


def mark_stopped_trials(sweep: SweepConfig, fingerprint: str):
    """A Tune callback that remembers the trials a scheduler stopped, so a resumed sweep does not train them on."""
    from ray import tune

    class MarkStopped(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            result = trial.last_result or {}
            if "epoch" in result and not result.get("finished"):
                trial_checkpoint(sweep, trial.config["trial"], fingerprint).mark_stopped(result)

    return MarkStopped()


def run_sweep(sweep: SweepConfig) -> list[dict]:
    from asc_dist.data.prepare import prepare_store
    from asc_dist.infra.cluster import check_shared, connect
    from asc_dist.run.logits import load_targets, targets_path

    quiet_third_party()
    sweep.validate()
    sweep = replace(sweep, run_dir=str(Path(sweep.run_dir).resolve()))  # trials run in other working folders
    require_writable(sweep.run_dir, "the run folder", "pass --run to a folder you can write")
    started = time.time()
    uri = tracking.resolve_uri(sweep.run_dir, sweep.mlflow_uri)
    tracking.check_reachable(uri)
    if sweep.address:
        connect(sweep.address)  # fail fast on an unreachable cluster, before any work
    if sweep.targets != "none" and not targets_path(sweep.run_dir).is_file():
        raise ConfigError(f"{targets_path(sweep.run_dir)} is missing; run the teachers and `python -m asc_dist.fusion --run {sweep.run_dir}` first, or pass --targets none")
    store = prepare_store(sweep.data, sweep.run_dir)
    sweep = replace(sweep, data=replace(sweep.data, store=str(store.path.resolve())))
    check_targets(StudentConfig(run_dir=sweep.run_dir, data=sweep.data, targets=sweep.targets), store)
    targets_fp = load_targets(targets_path(sweep.run_dir)).fingerprint if sweep.targets != "none" else store.fingerprint
    fp = sweep.fingerprint(targets_fp)
    results_file = RunLayout.of(sweep.run_dir).sweep_results
    if results_file.is_file() and json.loads(results_file.read_text()).get("fingerprint") == fp:
        log.info("sweep results in %s are up to date; nothing to run", results_file)
        return json.loads(results_file.read_text())["trials"]
    connect(sweep.address)
    check_shared({"the packed store": (sweep.data.store, False), "the run folder": (sweep.run_dir, True)})
    with run_lock(sweep.run_dir):
        tracking.close_abandoned(uri, sweep.experiment, sweep.run_dir)
        parent_file = RunLayout.of(sweep.run_dir).sweep_parent
        earlier = json.loads(parent_file.read_text()) if parent_file.is_file() else {}
        resume_id = earlier.get("parent_run_id") if earlier.get("fingerprint") == fp else None
        with tracking.run(uri, sweep.experiment, f"sweep-{time.strftime('%Y%m%d-%H%M%S')}", params=_sweep_params(sweep),
                          tags={"asc_dist.step": "sweep"}, resume_run_id=resume_id, run_dir=sweep.run_dir) as parent:
            if resume_id:
                log.info("resuming the sweep of MLflow run %s: trials continue from their last epoch", resume_id)
            write_text_atomic(parent_file, json.dumps({"fingerprint": fp, "parent_run_id": parent.run_id}))
            with stop_trials_on_interrupt(uri, sweep.experiment, sweep.run_dir):
                rows = _tune(sweep, parent.run_id, uri, fp)
            _quantize_best(sweep, rows, store, parent.run_id, uri)
            from asc_dist.distill.sweep_report import log_sweep_report

            log_sweep_report(parent, rows, RunLayout.of(sweep.run_dir))
    write_text_atomic(results_file, json.dumps({"fingerprint": fp, "parent_run_id": parent.run_id, "trials": rows}, indent=2, default=str))
    say_untracked(sweep.run_dir, started, uri)
    return rows


def _sweep_params(sweep: SweepConfig) -> dict:
    return {"presets": ",".join(sweep.presets), "kd_lambdas": ",".join(map(str, sweep.kd_lambdas)),
            "temperatures": ",".join(map(str, sweep.temperatures)), "model": sweep.model, "targets": sweep.targets,
            "epochs": sweep.epochs, "scheduler": sweep.scheduler, "num_samples": sweep.num_samples}


def asha(epochs: int):
    """ASHA over a trial's epochs (not Tune's iteration count, which restarts at 1 when a killed sweep resumes
    a trial at epoch k): epochs 1..E-1 report val accuracy, the E-th report is the finished trial
    (val and test scores, result.json written; `distill.train_student` holds back its last epoch's report).
    So max_t = E and whatever ASHA decides at a rung on the last epoch, a trial that ran all its epochs is
    scored. grace: every trial sees at least half its epochs before ASHA may stop it."""
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=max(1, epochs // 2), reduction_factor=2)


def _tune(sweep: SweepConfig, parent_run_id: str, uri: str, fingerprint: str) -> list[dict]:
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    from asc_dist.infra.progress import EpochProgress, NodeWatch

    trials = [{"preset": p, "kd_lambda": lam, "temperature": t, "sample": s}
              for p in sweep.presets for lam in sweep.kd_lambdas for t in sweep.temperatures for s in range(sweep.num_samples)]
    for trial in trials:
        trial_checkpoint(sweep, trial, fingerprint).vet(f"trial {_student(sweep, trial, None, '').run_name}")
    scheduler = asha(sweep.epochs) if sweep.scheduler == "asha" else FIFOScheduler()
    sweep_dict = {**asdict(sweep), "data": asdict(sweep.data)}
    tuner = tune.Tuner(
        tune.with_resources(sweep_trainable, {"cpu": sweep.cpus_per_trial, "gpu": sweep.gpus_per_trial}),
        param_space={"trial": tune.grid_search(trials), "sweep": sweep_dict, "parent_run_id": parent_run_id, "mlflow_uri": uri,
                     "fingerprint": fingerprint},
        tune_config=tune.TuneConfig(metric="val_acc", mode="max", scheduler=scheduler, max_concurrent_trials=sweep.max_concurrent),
        run_config=tune.RunConfig(
            name=f"sweep-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(RunLayout.of(sweep.run_dir).ray_results.resolve()),
            failure_config=tune.FailureConfig(max_failures=2),
            callbacks=[EpochProgress("student"), NodeWatch("student"), mark_stopped_trials(sweep, fingerprint)], verbose=0,
        ),
    )
    grid = tuner.fit()
    rows = []
    for result in grid:
        trial = result.config["trial"]
        m = result.metrics or {}
        cfg = _student(sweep, trial, parent_run_id, uri)
        epoch_ckpt = trial_checkpoint(sweep, trial, fingerprint)
        if m.get("finished"):
            epoch_ckpt.path.unlink(missing_ok=True)  # its model.pt is what counts now (the .finished.json stays)
        saved = cfg.out_dir / STUDENT_RESULT
        full = json.loads(saved.read_text()) if m.get("finished") and saved.is_file() else {}
        rows.append({
            "name": cfg.run_name, "preset": trial["preset"], "kd_lambda": trial["kd_lambda"], "temperature": trial["temperature"],
            "sample": trial["sample"], "epochs_run": m.get("epoch"), "stopped_early": not m.get("finished"),
            "val_acc": full.get("val_acc", m.get("val_acc")), "test_acc": full.get("test_acc"), "unseen_acc": full.get("unseen_acc"),
            "params": full.get("params"), "macs": full.get("macs"), "param_kb": full.get("param_kb"),
            "error": str(result.error)[:300] if result.error else None, "checkpoint": full.get("checkpoint"),
            "epoch_checkpoint": str(epoch_ckpt.path) if epoch_ckpt.path.is_file() else None,
            "mlflow_run_id": full.get("mlflow_run_id"), "node_ip": m.get("node_ip"),
        })
    _close_stopped_runs(rows, parent_run_id, uri, sweep.experiment)
    failed = [(r["name"], result.error) for r, result in zip(rows, grid) if result.error is not None]
    if failed:
        name, error = failed[0]
        raise TrainingError(f"{len(failed)} of {len(rows)} sweep trials failed; {name}: {first_cause(error)}. Nothing was "
                            "quantised, registered or written as the sweep's result; fix the cause and run the same command "
                            "again (finished trials are kept, the others continue from their last epoch)")
    return rows


def _close_stopped_runs(rows: list[dict], parent_run_id: str, uri: str, experiment: str) -> None:
    """Trials that ASHA stopped never reach their own end (their run is left RUNNING, or FAILED by the stop
    signal): mark their MLflow runs KILLED and tag them, so only real failures read FAILED."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    children = client.search_runs([tracking.experiment_id(experiment, uri)], f"tags.mlflow.parentRunId = '{parent_run_id}'")
    stopped = {r["name"] for r in rows if r["stopped_early"] and not r["error"]}
    for child in children:
        if child.info.run_name in stopped and child.info.status in ("RUNNING", "FAILED"):
            client.set_tag(child.info.run_id, "asc_dist.stopped_early", "true")
            client.set_terminated(child.info.run_id, status="KILLED")


def _quantize_best(sweep: SweepConfig, rows: list[dict], store, parent_run_id: str, uri: str) -> None:
    """QAT-finetune and export the best trial of every preset (by validation accuracy): a finished one if any,
    else (every trial of the preset stopped by ASHA) the best stopped one, from its last epoch checkpoint."""
    from asc_dist.distill.config import build_student_model
    from asc_dist.distill.qat import quantize_student
    from asc_dist.run.checkpoint import load_plain

    if sweep.qat_epochs < 1:
        return
    for preset in sweep.presets:
        candidates = [r for r in rows if r["preset"] == preset and (r["checkpoint"] or r["epoch_checkpoint"])]
        finished = [r for r in candidates if r["checkpoint"]]
        if not candidates:
            log.warning("preset %s: no trial left a checkpoint, nothing to quantise", preset)
            continue
        best = max(finished or candidates, key=lambda r: r["val_acc"] or 0.0)
        cfg = replace(_student(sweep, best, parent_run_id, uri), qat_epochs=sweep.qat_epochs, device="cpu")
        model = build_student_model(cfg, len(store.classes))
        if best["checkpoint"]:
            state = load_plain(best["checkpoint"])["model"]
        else:
            state = load_plain(best["epoch_checkpoint"])["trainer"]["model"]
            log.warning("preset %s: every trial was stopped early; quantising %s from its epoch-%s checkpoint", preset, best["name"], best["epochs_run"])
        model.load_state_dict(state)
        with tracking.run(uri, sweep.experiment, f"int8-{cfg.run_name}", params={"source": cfg.run_name, "qat_epochs": sweep.qat_epochs},
                          tags={"asc_dist.step": "qat", "preset": preset}, parent_run_id=parent_run_id, run_dir=sweep.run_dir) as mlrun:
            best.update(quantize_student(cfg, store, model, mlrun))
            devices = _device_copies(sweep, best, cfg, store, uri)
            best["registered_model"] = _register(best, cfg, store, mlrun.run_id, uri, devices)
        best["best_of_preset"] = True


def _device_copies(sweep: SweepConfig, best: dict, cfg, store, uri: str) -> dict:
    """With --device-epochs: the best student's device copies (int8 too); device -> its int8 file."""
    if sweep.device_epochs < 1:
        return {}
    if not best.get("checkpoint"):
        log.warning("preset %s: the best trial left no final checkpoint; no device copies", cfg.preset)
        return {}
    from asc_dist.distill.config import StudentConfig
    from asc_dist.distill.devices import finetune_existing
    from asc_dist.run.layout import STUDENT_INT8, device_folders

    result = finetune_existing(cfg.out_dir, sweep.device_epochs, StudentConfig.device_lr, qat_epochs=sweep.qat_epochs, store=store,
                               mlflow_uri=uri, experiment=sweep.experiment, device="cpu")
    best.update({k: result[k] for k in ("devices", "device_aware")})
    return {dev: folder / STUDENT_INT8 for dev, folder in device_folders(cfg.out_dir).items() if (folder / STUDENT_INT8).is_file()}


def _register(best: dict, cfg, store, run_id: str, uri: str, devices: dict | None = None) -> str:
    """The preset's best student (and its device copies) in the MLflow Model Registry; returns its models:/ URI."""
    from asc_dist.ship.mlflow_model import register_student, registered_name

    name = registered_name(cfg.model, cfg.preset)
    # tag names are the MLflow metric names of the same numbers (fractions), so a version reads like its runs
    keys = {"name": "name", "kd_lambda": "kd_lambda", "temperature": "temperature", "val_acc": "val_accuracy", "test_acc": "test_accuracy",
            "unseen_acc": "test_unseen_accuracy", "int8_val_acc": "int8_val_accuracy", "int8_test_acc": "int8_test_accuracy",
            "params": "params", "macs": "macs", "param_kb": "param_kb", "int8_file_kb": "int8_file_kb"}
    example = store.split("test", cfg.data.val_fraction, cfg.data.val_seed).waves(np.arange(1))[0]
    tags = {tag: round(v, 4) if isinstance(v, float) else v for tag, v in ((tag, best.get(k)) for k, tag in keys.items())}
    version = register_student(best["int8_torchscript"], example, run_id, uri, name, tags, devices)
    return f"models:/{name}/{version}"


def build_parser() -> argparse.ArgumentParser:
    d = SweepConfig(run_dir="")

    def listed(values) -> str:
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)

    p = argparse.ArgumentParser(prog="python -m asc_dist.tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=d.model, help="student family: dsflexinet | serfr | sp4sc")
    p.add_argument("--presets", default=listed(d.presets), help="comma-separated presets to sweep")
    p.add_argument("--kd-lambda", default=listed(d.kd_lambdas), help="comma-separated KD lambdas to sweep (weight of the label loss)")
    p.add_argument("--temperature", default=listed(d.temperatures), help="comma-separated KD temperatures to sweep")
    p.add_argument("--targets", default=d.targets, choices=TARGET_KINDS)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--qat-epochs", type=int, default=d.qat_epochs, help="QAT epochs for the best trial of each preset (0 = skip)")
    p.add_argument("--device-epochs", type=int, default=d.device_epochs, help="fine-tune device copies of each preset's best student "
                   "for this many epochs, registered in the same model version (0 = off)")
    p.add_argument("--num-samples", type=int, default=d.num_samples, help="seeds per grid point")
    p.add_argument("--scheduler", default=d.scheduler, help="asha | fifo")
    p.add_argument("--max-concurrent", type=int, default=d.max_concurrent)
    p.add_argument("--cpus-per-trial", type=float, default=d.cpus_per_trial)
    p.add_argument("--gpus-per-trial", type=float, default=d.gpus_per_trial)
    add_shared(p, experiment=d.experiment)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    sweep = SweepConfig(
        run_dir=args.run, presets=parse_list(args.presets, flag="--presets"), kd_lambdas=parse_list(args.kd_lambda, float, "--kd-lambda"),
        temperatures=parse_list(args.temperature, float, "--temperature"), model=args.model, targets=args.targets, epochs=args.epochs,
        qat_epochs=args.qat_epochs, device_epochs=args.device_epochs, num_samples=args.num_samples, scheduler=args.scheduler, max_concurrent=args.max_concurrent,
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial, address=args.address,
        mlflow_uri=args.mlflow_uri, experiment=args.experiment, data=data_config(args),
    )
    rows = run_sweep(sweep)
    from asc_dist.distill.sweep_report import format_results

    print(format_results(rows))
    return 0

