"""The one place that talks to MLflow.

Tracking URI: an explicit `--mlflow-uri`, else `MLFLOW_TRACKING_URI`, else a sqlite file in the run folder
(MLflow 3's plain file store refuses to work without an opt-in; sqlite is safe for concurrent trials).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from asc_dist.errors import TrackingError
from asc_dist.run.layout import RunLayout

log = logging.getLogger(__name__)
RUN_DIR_TAG = "asc_dist.run_dir"


def resolve_uri(run_dir: str | os.PathLike | None, explicit: str | None = None) -> str:
    if explicit:
        return explicit
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    base = Path(run_dir) if run_dir else Path.cwd()
    return f"sqlite:///{RunLayout.of(base).mlflow_db.resolve()}"


TRACKING_SCHEMES = ("http://", "https://", "sqlite:///", "file:", "databricks", "postgresql", "mysql", "mssql")


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail early (before any training) on a tracking URI MLflow cannot use, or an HTTP server that does not answer."""
    if not uri.startswith(TRACKING_SCHEMES):
        raise TrackingError(f"--mlflow-uri {uri!r} is not a tracking URI MLflow understands; give http://HOST:PORT of a "
                            "server, sqlite:///PATH/mlflow.db, or leave it out to log to RUN/mlflow.db")
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as resp:
            if resp.status != 200:
                raise TrackingError(f"MLflow server {uri} answered /health with HTTP {resp.status}")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({exc}); start one with ops/mlflow_server.sh "
            "or drop --mlflow-uri to log to a sqlite file in the run folder"
        ) from None


def configure(uri: str) -> None:
    """Create a sqlite file's folder. Every call site passes `uri` explicitly (trials get it in their config),
    so nothing global is set: a library user's MLFLOW_TRACKING_URI stays theirs."""
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def experiment_id(name: str, uri: str) -> str:
    import mlflow
    from mlflow.exceptions import MlflowException

    configure(uri)
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):  # keep artifacts beside the db, not in whatever folder we were started from
        location = RunLayout.of(Path(uri.removeprefix("sqlite:///")).parent).mlflow_artifacts.resolve().as_uri()
    try:
        # MLflow 3's UI opens an experiment without this tag in its GenAI view, where runs have no metric columns
        return client.create_experiment(name, artifact_location=location, tags={"mlflow.experimentKind": "custom_model_development"})
    except MlflowException:  # created concurrently by another trial
        return client.get_experiment_by_name(name).experiment_id


def _flat_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flat_params(value, f"{name}."))
        else:
            flat[name] = str(value)[:6000]
    return flat


@contextlib.contextmanager
def run(
    uri: str,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
    resume_run_id: str | None = None,
    run_dir: str | os.PathLike | None = None,
) -> Iterator["Run"]:
    """Start an MLflow run (nested under `parent_run_id` if given), or reopen `resume_run_id` after a
    restart; always end it (FINISHED; KILLED on an interrupt; FAILED on an exception). `run_dir` tags the run with its run
    folder, so a later step there can tell the runs a killed process left RUNNING (`close_abandoned`)."""
    import mlflow

    exp_id = experiment_id(experiment, uri)
    all_tags = dict(tags or {})
    if run_dir is not None:
        all_tags[RUN_DIR_TAG] = str(Path(run_dir).resolve())
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    client = mlflow.MlflowClient(uri)
    if resume_run_id:
        client.update_run(resume_run_id, status="RUNNING")
        run_id = resume_run_id
        if "asc_dist.abandoned" in client.get_run(run_id).data.tags:  # closed by close_abandoned; continued now
            client.delete_tag(run_id, "asc_dist.abandoned")
        client.set_tag(run_id, "asc_dist.resumed", "true")
    else:
        run_id = client.create_run(exp_id, run_name=run_name, tags=all_tags).info.run_id
    handle = Run(client, run_id)
    status = "FAILED"
    try:
        if params and not resume_run_id:
            handle.log_params(params)
        yield handle
        status = "FINISHED"
    except KeyboardInterrupt:  # SIGINT, and SIGTERM through asc_dist.cli.interrupt_on_sigterm
        status = "KILLED"
        raise
    finally:
        client.set_terminated(run_id, status=status)


def close_abandoned(uri: str, experiment: str, run_dir: str | os.PathLike) -> list[str]:
    """Mark KILLED the runs of this run folder still RUNNING in `experiment`: the caller holds the folder's
    run lock, so no live process writes them; they were left by a killed one. A trial that resumes one of
    them reopens it (RUNNING again, then FINISHED). Returns the names of the runs closed."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    folder = str(Path(run_dir).resolve())
    closed = []
    for r in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'", max_results=5000):
        if r.data.tags.get(RUN_DIR_TAG) == folder:
            client.set_tag(r.info.run_id, "asc_dist.abandoned", "true")
            client.set_terminated(r.info.run_id, status="KILLED")
            closed.append(r.info.run_name)
    if closed:
        log.info("marked %d MLflow run(s) left RUNNING by a killed earlier process KILLED: %s", len(closed), ", ".join(sorted(closed)))
    return closed


class Run:
    """A thin handle over MlflowClient: no global active-run state, safe inside Ray workers."""

    def __init__(self, client, run_id: str):
        self.client = client
        self.run_id = run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = _flat_params(params)
        items = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_figure(self, figure, name: str) -> None:
        """Log a matplotlib figure as a PNG artifact and close it."""
        import matplotlib.pyplot as plt

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            figure.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(figure)
            self.client.log_artifact(self.run_id, str(path))

    def log_file(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_json(self, obj: Any, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(obj, indent=2, default=str))
            self.client.log_artifact(self.run_id, str(path))

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)
