"""Data-parallel training of one teacher inside its Tune trial (`--workers-per-teacher W`, W > 1).

The trial (a tiny CPU share) starts a Ray Train `TorchTrainer` of W workers (DDP: gloo on CPU, nccl on GPU);
each worker trains on every W-th training clip, rank 0 checkpoints and logs to MLflow, and Ray Train
restarts the worker group from the last checkpoint after a failure. The trial then scores every clip with
the final weights and writes the logits like a single-worker trial.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from asc_dist.data.store import WaveformStore
from asc_dist.infra import tracking
from asc_dist.run.checkpoint import STATE_FILE, load_state
from asc_dist.run.layout import RunLayout
from asc_dist.teach.roster import TeacherConfig
from asc_dist.teach.trial import TeacherRunContext, build_model, finish_teacher, open_mlflow_run, teacher_trainer

COORDINATOR_CPU = 0.01  # the trial itself only coordinates (zero is rejected, so a sliver)


def ddp_resources(workers: int, cpus: float, gpus: float) -> dict:
    """The trial's own share; its W workers ask Ray for `cpus` (and one GPU) each when they start."""
    return {"cpu": COORDINATOR_CPU}


def check_fits(workers: int, cpus: float, gpus: float, cluster: dict) -> None:
    """A worker group that can never be placed would wait forever: refuse it up front."""
    from asc_dist.errors import ClusterError

    need_cpu, have_cpu = workers * cpus + COORDINATOR_CPU, cluster.get("CPU", 0)
    if need_cpu > have_cpu or (gpus > 0 and workers > cluster.get("GPU", 0)):
        raise ClusterError(
            f"--workers-per-teacher {workers} needs {need_cpu:g} CPU{f' and {workers} GPU' if gpus > 0 else ''} for one teacher "
            f"(workers x --cpus-per-teacher + {COORDINATOR_CPU} for the trial), but the cluster has {have_cpu:g} CPU"
            f" and {cluster.get('GPU', 0):g} GPU; lower --cpus-per-teacher (e.g. {max(0.1, (have_cpu - COORDINATOR_CPU) / workers):.2f}) or the worker count"
        )


def restore_rank(trainer, state: dict, rank: int) -> None:
    """Resume one rank from rank 0's checkpoint (the only one saved). Weights, optimiser and epoch are shared,
    but the checkpoint's torch RNG state is rank 0's: restored on every rank, all ranks would draw the same
    augmentations again. Rank 0 keeps it (an exact resume); every other rank reseeds from its own seed
    (seed + rank, `asc_dist/teach/trial.py: teacher_trainer`) and the epoch, so the ranks stay distinct after a restart."""
    import numpy as np

    trainer.load_state_dict(state)
    if rank > 0:
        torch.manual_seed(int(np.random.SeedSequence([trainer.cfg.seed, trainer.epoch]).generate_state(1)[0]))


def _worker_loop(config: dict) -> None:
    import ray.train
    import ray.train.torch

    t = TeacherConfig(**config["teacher"])
    ctx = TeacherRunContext(**config["context"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    store = WaveformStore(ctx.store)
    trainer = teacher_trainer(t, ctx, store, shard=(rank, world), wrap=ray.train.torch.prepare_model)
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            restore_rank(trainer, load_state(d)["trainer"], rank)
    mlrun = tracking.Run.reopen(ctx.mlflow_uri, config["mlflow_run_id"], ctx.run_dir) if rank == 0 else None

    def on_epoch(result) -> None:
        metrics = {**result.metrics, "epoch": result.epoch, "epochs": result.epochs, "teacher": t.name}
        if rank == 0:
            mlrun.log_metrics(result.metrics, step=result.epoch)
            with tempfile.TemporaryDirectory() as tmp:
                torch.save({"trainer": trainer.state_dict()}, Path(tmp) / STATE_FILE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)

    trainer.fit(on_epoch)


def ddp_trainable(config: dict) -> None:
    from ray import tune
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    t = TeacherConfig(**config["teacher"])
    ctx = TeacherRunContext(**config["context"])
    workers = int(config["workers"])
    start = time.perf_counter()
    store = WaveformStore(ctx.store)
    model = build_model(t, len(store.classes))
    params = sum(p.numel() for p in model.parameters())
    use_gpu = ctx.device == "cuda"
    with open_mlflow_run(t, ctx, params) as mlrun:
        mlrun.set_tags({"workers": workers})
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={**config, "mlflow_run_id": mlrun.run_id},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": ctx.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}),
            run_config=RunConfig(
                name=f"ddp-{t.name}", storage_path=str(RunLayout.of(ctx.run_dir).ray_results / "ddp"),
                failure_config=FailureConfig(max_failures=2), callbacks=[TuneReportCallback()],
            ),
        )
        result = trainer.fit()
        with result.checkpoint.as_directory() as d:
            state = load_state(d)["trainer"]
        model.load_state_dict({k.removeprefix("module."): v for k, v in state["model"].items()})
        from asc_dist.nets.features import FRONT_ENDS, LogMel

        summary = finish_teacher(t, ctx, store, model, LogMel(FRONT_ENDS[model.front_end]), "cpu", mlrun, state["history"], start)
    tune.report({**summary, "workers": workers, "finished": 1})
