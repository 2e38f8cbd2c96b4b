"""When the MLflow server goes away mid-run: training goes on, tracking is journaled in the run folder, replayed later.

A run handle (`asc_dist.infra.tracking.Run`) whose call fails with a connection or server error stops calling
MLflow for the rest of its life (no more waiting on a dead server) and appends each further call to
RUN/mlflow-offline/<run id>.jsonl, artifacts copied beside it. Logits, checkpoints and results are written as
always. `python -m asc_dist.tracking replay RUN` (asc_dist/infra/replay.py) sends the journals to the server once it is back (runs that
were never created on it are created then) and moves them to RUN/mlflow-offline/replayed/.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from asc_dist.run.layout import RunLayout

log = logging.getLogger(__name__)
REPLAY = "python -m asc_dist.tracking replay {run}"


def server_down_errors() -> tuple[type[BaseException], ...]:
    """What a call to an unreachable or failing tracking server raises (MLflow wraps exhausted retries)."""
    import requests
    from mlflow.exceptions import MlflowException

    return (MlflowException, requests.RequestException, OSError)


class Journal:
    """The tracking calls of one run that MLflow did not take, in order, one JSON object per line."""

    def __init__(self, folder: Path, run_id: str, start: dict):
        self.folder = folder
        self.path = folder / f"{run_id}.jsonl"
        self.files = folder / run_id
        folder.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.write({"op": "start", **start})

    def write(self, record: dict) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record, default=str) + "\n")

    def artifact(self, src: str | Path, artifact_path: str | None = None) -> None:
        src = Path(src)
        dest = self.files / (artifact_path or "") / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
        self.write({"op": "artifact", "file": str(dest.relative_to(self.folder)), "artifact_path": artifact_path})


def journal_dir(run_dir: str | Path | None) -> Path:
    if run_dir is None:
        import tempfile

        return Path(tempfile.gettempdir()) / "asc-dist-mlflow-offline"
    return RunLayout.of(run_dir).mlflow_offline


def untracked(run_dir: str | Path, since: float = 0.0) -> list[Path]:
    """Journals of this run folder not replayed yet, written since `since` (a time.time())."""
    folder = journal_dir(run_dir)
    return sorted(p for p in folder.glob("*.jsonl") if p.stat().st_mtime >= since) if folder.is_dir() else []


def say_untracked(run_dir: str | Path, since: float, uri: str) -> int:
    """One warning at the end of a step whose runs (in any process) went on without the server."""
    journals = untracked(run_dir, since)
    if journals:
        log.warning("MLflow at %s did not answer during this step: %d run(s) went on untracked and are journaled in %s; "
                    "everything else (logits, checkpoints, results) is written. Once the server is back: %s", uri, len(journals),
                    journal_dir(run_dir), REPLAY.format(run=run_dir))  # fmt: skip
    return len(journals)
