"""Epoch checkpoints of a trial at a stable path in the run folder, shared by teacher and student trials.

RUN/checkpoints/<kind>/<name>.pt holds the trial's last epoch (weights, optimiser, scheduler, RNG, history,
MLflow run id) under a key naming what the trial learns (config, data, targets). The path carries no
timestamp and no Tune trial id, so whatever restarts the trial finds it: Tune's FailureConfig after a
trial crash, and the same command after the whole driver was killed (`kill -9`, a lost head node).
A file with another key (the config changed) is ignored and overwritten. Written temp-then-rename, so a
kill mid-write leaves the previous epoch. A trial that a scheduler (ASHA) stopped gets a `.stopped.json`
beside it, so a resumed sweep does not train it on.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from asc_dist.run.layout import RunLayout

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"  # inside a Ray Train checkpoint folder (data-parallel teachers)


def load_plain(path: str | Path) -> dict:
    """Tensors and plain data only (`weights_only=True`): run folders are shared over NFS on a cluster, and a
    pickle from there could run code. Everything a trainer saves is plain data."""
    import pickle

    from asc_dist.errors import ConfigError

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConfigError(f"refusing to load {path}: it holds more than tensors and plain data ({str(exc).splitlines()[0][:120]}); "
                          "it was not written by asc-dist: delete it") from None


def load_state(folder: str | Path) -> dict:
    return load_plain(Path(folder) / STATE_FILE)


@dataclass(frozen=True)
class TrialCheckpoint:
    path: Path
    key: str

    @classmethod
    def of(cls, run_dir: str | os.PathLike, kind: str, name: str, key: str) -> "TrialCheckpoint":
        return cls(RunLayout.of(run_dir).checkpoints(kind) / f"{name}.pt", key)

    @property
    def stopped_path(self) -> Path:
        return self.path.with_suffix(".stopped.json")

    def save(self, state: dict) -> None:
        from asc_dist.run.atomic import atomic_path

        with atomic_path(self.path) as tmp:
            torch.save({"key": self.key, **state}, tmp)

    def load(self) -> dict | None:
        """The last epoch's state if one was saved under this key, else None (a fresh start)."""
        if not self.path.is_file():
            return None
        try:
            state = load_plain(self.path)
        except (RuntimeError, EOFError, OSError) as exc:  # truncated or unreadable: start the trial again
            log.warning("checkpoint %s is unreadable (%s); the trial starts from epoch 1", self.path, str(exc).splitlines()[0][:120])
            return None
        if state.get("key") != self.key:
            log.info("checkpoint %s belongs to another config or dataset; the trial starts from epoch 1", self.path)
            return None
        return state

    def vet(self, what: str) -> None:
        """In the driver, before any trial starts: a torn checkpoint is named in the step's own log and removed (the
        trial starts from epoch 1); a foreign one (more than tensors and plain data) stops the step with one line.
        Inside a trial the first went unheard and the second failed three times, buried in Ray's tracebacks."""
        if not self.path.is_file():
            return
        try:
            load_plain(self.path)
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            log.warning("%s: its checkpoint %s is unreadable (%s); removed, %s starts from epoch 1", what, self.path,
                        str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__, what)  # fmt: skip
            self.path.unlink(missing_ok=True)

    def _mark(self, path: Path, field: str, values: dict) -> None:
        from asc_dist.run.atomic import write_text_atomic

        plain = {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool)) or v is None}
        write_text_atomic(path, json.dumps({"key": self.key, field: plain}))

    def _marked(self, path: Path, field: str) -> dict | None:
        if not path.is_file():
            return None
        saved = json.loads(path.read_text())
        return saved[field] if saved.get("key") == self.key else None

    def mark_stopped(self, metrics: dict) -> None:
        self._mark(self.stopped_path, "metrics", metrics)

    def stopped(self) -> dict | None:
        """The last metrics of a trial a scheduler stopped under this key, else None."""
        return self._marked(self.stopped_path, "metrics")

    @property
    def finished_path(self) -> Path:
        return self.path.with_suffix(".finished.json")

    def mark_finished(self, result: dict) -> None:
        """The trial's final report, so a rerun after an interrupt reports it again instead of training it again."""
        self._mark(self.finished_path, "result", result)

    def finished(self) -> dict | None:
        """The final report of a trial that finished under this key, else None."""
        return self._marked(self.finished_path, "result")

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
        self.stopped_path.unlink(missing_ok=True)


def node_ip() -> str:
    """This process's node address in a Ray cluster ("local" outside Ray)."""
    import ray

    return ray.util.get_node_ip_address() if ray.is_initialized() else "local"


def epoch_reporter(checkpoint: TrialCheckpoint):
    """`report(metrics, state)` for a Tune trial: state to the stable checkpoint first, then the metrics to
    Tune (a kill between the two loses nothing: the epoch is on disk, Tune only hears of it again)."""

    def report(metrics: dict, state: dict) -> None:
        from ray import tune

        checkpoint.save(state)
        tune.report({**metrics, "node_ip": node_ip()})

    return report


def resume_from(checkpoint: TrialCheckpoint, what: str) -> dict | None:
    state = checkpoint.load()
    if state is not None:
        log.info("[%s] resumed from checkpoint after epoch %d (%s)", what, int(state["trainer"]["epoch"]), checkpoint.path)
    return state
