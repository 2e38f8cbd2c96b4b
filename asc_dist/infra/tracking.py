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
from asc_dist.infra.offline import Journal, journal_dir, server_down_errors
from asc_dist.run.layout import RunLayout

log = logging.getLogger(__name__)
RUN_DIR_TAG = "asc_dist.run_dir"
# A lost server costs seconds per call, not minutes (MLflow's defaults: 120-s timeout, 7 retries with backoff 2);
# after the first failed call a run stops calling it at all (asc_dist/infra/offline.py). Set before any call reads them.
for _name, _value in (("MLFLOW_HTTP_REQUEST_TIMEOUT", "15"), ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"),
                      ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")):
    os.environ.setdefault(_name, _value)


def resolve_uri(run_dir: str | os.PathLike | None, explicit: str | None = None) -> str:
    if explicit:
        return explicit
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    base = Path(run_dir) if run_dir else Path.cwd()
    if run_dir:  # a run folder opened where it was not made: its recorded paths follow it (asc_dist/run/relocate.py)
        from asc_dist.run.relocate import reroot

        reroot(base)
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
    _check_api(uri, timeout_s)


def _check_api(uri: str, timeout_s: float) -> None:
    """A server may answer /health and still fail every API call (a proxy's HTML page, a 400 or 500): ask for the
    Default experiment, which every MLflow server has, and expect MLflow's JSON."""
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body, status, kind = resp.read(4096), resp.status, resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        body, status, kind = exc.read(4096), exc.code, exc.headers.get("Content-Type", "")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TrackingError(f"MLflow tracking server {uri} does not answer its API ({exc}); check the server's log") from None
    try:
        json.loads(body)
        is_json = "json" in kind
    except ValueError:
        is_json = False
    if status == 404 and is_json:  # RESOURCE_DOES_NOT_EXIST: an MLflow server without a Default experiment
        return
    if status != 200 or not is_json:
        what = f"HTTP {status}" + ("" if is_json else f" with {kind.split(';')[0] or 'no content type'}, not MLflow's JSON")
        raise TrackingError(f"{uri} answers /health but its MLflow API answered {what} ({url}); check that the URL points at "
                            "an MLflow tracking server (not a proxy or another service) and the server's log, or drop "
                            "--mlflow-uri to log to a sqlite file in the run folder")  # fmt: skip


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
    restart; always end it (FINISHED; KILLED on an interrupt; FAILED on an exception). `run_dir` tags the run with its
    run folder, so a later step there can tell the runs a killed process left RUNNING (`close_abandoned`), and holds
    the journal of the calls a lost server did not take (asc_dist/infra/offline.py): tracking never stops training."""
    import uuid

    import mlflow

    all_tags = dict(tags or {})
    if run_dir is not None:
        all_tags[RUN_DIR_TAG] = str(Path(run_dir).resolve())
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    client = mlflow.MlflowClient(uri)
    start = {"experiment": experiment, "run_name": run_name, "tags": all_tags, "uri": uri}
    try:
        if resume_run_id:
            client.update_run(resume_run_id, status="RUNNING")
            run_id = resume_run_id
            if "asc_dist.abandoned" in client.get_run(run_id).data.tags:  # closed by close_abandoned; continued now
                client.delete_tag(run_id, "asc_dist.abandoned")
            client.set_tag(run_id, "asc_dist.resumed", "true")
        else:
            run_id = client.create_run(experiment_id(experiment, uri), run_name=run_name, tags=all_tags).info.run_id
        handle = Run(client, run_id, journal_dir(run_dir), {**start, "online_id": run_id})
    except server_down_errors() as exc:
        handle = Run(client, resume_run_id or f"offline-{uuid.uuid4().hex[:16]}", journal_dir(run_dir),
                     {**start, "online_id": resume_run_id})  # fmt: skip
        handle.go_offline(exc)
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
        handle.end(status)


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
    """A thin handle over MlflowClient: no global active-run state, safe inside Ray workers. A call the tracking
    server does not take (unreachable, failing) switches the handle to its journal for good (asc_dist/infra/offline.py)."""

    _warned = False  # one warning per process

    def __init__(self, client, run_id: str, journal_folder: Path, start: dict):
        self.client = client
        self.run_id = run_id
        self._journal_folder, self._start = journal_folder, start
        self.journal: Journal | None = None

    @classmethod
    def reopen(cls, uri: str, run_id: str, run_dir: str | os.PathLike | None) -> "Run":
        """A handle on a run another process started (a data-parallel teacher's rank 0)."""
        import mlflow

        start = {"experiment": None, "run_name": run_id, "tags": {}, "uri": uri, "online_id": run_id}
        return cls(mlflow.MlflowClient(uri), run_id, journal_dir(run_dir), start)

    @property
    def offline(self) -> bool:
        return self.journal is not None

    def go_offline(self, exc: BaseException) -> None:
        self.journal = Journal(self._journal_folder, self.run_id, self._start)
        if not Run._warned:
            Run._warned = True
            log.warning("MLflow at %s stopped answering (%s); training goes on, tracking calls are journaled in %s",
                        self._start["uri"], str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__,
                        self._journal_folder)  # fmt: skip

    def _call(self, record: dict, call, files: tuple[Path, str | None] | None = None) -> None:
        if not self.offline:
            try:
                call()
                return
            except server_down_errors() as exc:
                self.go_offline(exc)
        if files is not None:
            self.journal.artifact(*files)
        else:
            self.journal.write(record)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = _flat_params(params)

        def send() -> None:
            items = [Param(k, v) for k, v in flat.items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i : i + 100])

        self._call({"op": "params", "params": flat}, send)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = {k: float(v) for k, v in metrics.items() if v is not None}
        if values:
            items = [Metric(k, v, now, step or 0) for k, v in values.items()]
            self._call({"op": "metrics", "metrics": values, "step": step or 0, "time_ms": now},
                       lambda: self.client.log_batch(self.run_id, metrics=items))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        plain = {k: str(v) for k, v in tags.items()}

        def send() -> None:
            for k, v in plain.items():
                self.client.set_tag(self.run_id, k, v)

        self._call({"op": "tags", "tags": plain}, send)

    def log_file(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._call({}, lambda: self.client.log_artifact(self.run_id, str(path), artifact_path), files=(Path(path), artifact_path))

    def log_figure(self, figure, name: str) -> None:
        """Log a matplotlib figure as a PNG artifact and close it."""
        import matplotlib.pyplot as plt

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            figure.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(figure)
            self.log_file(path)

    def log_json(self, obj: Any, name: str) -> None:
        self.log_text(json.dumps(obj, indent=2, default=str), name)

    def log_text(self, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            self.log_file(path, str(Path(name).parent) if Path(name).parent != Path(".") else None)

    def end(self, status: str) -> None:
        import time

        self._call({"op": "end", "status": status, "time_ms": int(time.time() * 1000)},
                   lambda: self.client.set_terminated(self.run_id, status=status))
