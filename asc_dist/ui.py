"""`python -m asc_dist.ui RUN [--port 5000]`: the MLflow UI of a run folder, opened on the sweep's runs table.

Starts `mlflow ui` on the run's own store (`sqlite:///RUN/mlflow.db`, its artifacts in RUN/mlartifacts), on
127.0.0.1, after re-rooting a copied or moved folder (asc_dist/run/relocate.py), and prints the URL to open.
MLflow 3 opens experiments in its GenAI view (traces, no runs table) unless the page is asked for the model-
training view: its web app reads the `workflowType` query parameter of the experiment route (values `genai` and
`machine_learning`; without it, the browser's last choice, GenAI on a fresh profile), so the printed URL carries
`workflowType=machine_learning` and lands on the runs table of the sweep (or of the first experiment there is).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from asc_dist.cli import add_verbose, run_main, setup_logging
from asc_dist.errors import ConfigError
from asc_dist.run.relocate import reroot

PREFERRED = ("sweep", "students", "study", "teachers", "fusion")  # the experiment the URL opens, first present
VIEW_KEY = "asc-dist"  # the saved view the URL names (`viewStateShareKey`)
# The runs table's columns (what report.md shows) and its order: best on val first.
COLUMNS = [("metrics", "val_accuracy"), ("metrics", "test_accuracy"), ("metrics", "test_unseen_accuracy"), ("metrics", "int8_test_accuracy"),
           ("params", "preset"), ("params", "kd_lambda"), ("params", "temperature"), ("metrics", "param_kb"), ("metrics", "macs")]


def save_view(client, experiment_id: str) -> None:
    """MLflow's shared-view mechanism (its web app loads the experiment tag `mlflow.sharedViewState.KEY` named by
    the URL's `viewStateShareKey`): accuracy, preset, lambda and size columns, sorted by val accuracy, parent
    runs expanded so the trials show."""
    import json
    import time

    parents = {r.data.tags.get("mlflow.parentRunId") for r in client.search_runs([experiment_id], max_results=5000)} - {None}
    state = {"selectedColumns": [f"{kind}.`{name}`" for kind, name in COLUMNS], "runsExpanded": {p: True for p in parents},
             "orderByKey": "metrics.`val_accuracy`", "orderByAsc": False, "runsHiddenMode": "SHOW_ALL"}
    now = int(time.time() * 1000)
    envelope = {"name": "asc-dist: accuracy, preset, lambda, size", "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    client.set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{VIEW_KEY}", json.dumps(envelope))


def landing_url(run: Path, port: int) -> str:
    """The URL of the runs table (model-training view) of the run's most useful experiment."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    experiments = {e.name: e.experiment_id for e in client.search_experiments()}
    name = next((n for n in PREFERRED if n in experiments), None)
    if name is None:
        raise ConfigError(f"{run / 'mlflow.db'} holds no asc-dist experiment yet; run a step on {run} first")
    save_view(client, experiments[name])
    return f"http://127.0.0.1:{port}/#/experiments/{experiments[name]}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asc_dist.ui", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="the run folder (RUN, holding mlflow.db)")
    p.add_argument("--port", type=int, default=5000)
    add_verbose(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    run = Path(args.run).resolve()
    if not (run / "mlflow.db").is_file():
        raise ConfigError(f"{args.run} is not a run folder (no mlflow.db); give RUN as made by `python -m asc_dist.pipeline --run RUN`")
    reroot(run)
    url = landing_url(run, args.port)
    print(f"MLflow UI of {run}: open {url}", flush=True)
    bin_dir = str(Path(sys.executable).parent)  # this environment's mlflow and its server, activated or not
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{run / 'mlflow.db'}",
           "--default-artifact-root", f"file://{run / 'mlartifacts'}", "--host", "127.0.0.1", "--port", str(args.port)]
    os.execvpe(cmd[0], cmd, env)
    return 0


if __name__ == "__main__":
    run_main(main)
