"""Epoch checkpoints of a Ray Tune trial: one `state.pt` per checkpoint, shared by teacher and student trials.

`report_epoch` hands the state to Tune (which persists it before returning); `resume_state` gives a restarted
trial the last one back, or None on a fresh start. The state is loaded at once, so Tune may prune the
checkpoint folder afterwards.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

STATE_FILE = "state.pt"


def load_state(folder: str | Path) -> dict:
    """Tensors and plain data only (`weights_only=True`): run folders are shared over NFS on a cluster, and a
    pickle from there could run code. Everything a trainer saves (weights, optimiser and scheduler state,
    RNG, history, the MLflow run id) is plain data."""
    return load_plain(Path(folder) / STATE_FILE)


def load_plain(path: str | Path) -> dict:
    import pickle

    from asc_dist.errors import ConfigError

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConfigError(f"refusing to load {path}: it holds more than tensors and plain data ({str(exc).splitlines()[0][:120]}); "
                          "it was not written by asc-dist: delete it") from None


def report_epoch(metrics: dict, state: dict) -> None:
    from ray import tune

    with tempfile.TemporaryDirectory() as tmp:
        torch.save(state, Path(tmp) / STATE_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def resume_state() -> dict | None:
    from ray import tune

    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as folder:
        return load_state(folder)
