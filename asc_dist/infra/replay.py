"""Replay: send the journals of calls a lost tracking server did not take (asc_dist/infra/offline.py) once it is back."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from asc_dist.errors import TrackingError
from asc_dist.infra.offline import REPLAY, journal_dir, server_down_errors, untracked
from asc_dist.infra.tracking import check_reachable, experiment_id

log = logging.getLogger(__name__)


def _records(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a journal whose writer was killed mid-line
            log.warning("%s: skipping a torn line", path)
    return out


def replay(run_dir: str | Path, uri: str) -> list[str]:
    """Send every journal of `run_dir` to the tracking server at `uri`; returns the MLflow run ids written."""
    import mlflow
    from mlflow.entities import Metric, Param

    check_reachable(uri)
    folder = journal_dir(run_dir)
    journals = untracked(run_dir)
    if not journals:
        log.info("nothing to replay in %s", folder)
        return []
    client = mlflow.MlflowClient(uri)
    loaded = {p: _records(p) for p in journals}
    offline_ids = {p.stem for p in journals}
    # runs whose parent was itself created offline go after that parent
    order = sorted(journals, key=lambda p: loaded[p][0].get("tags", {}).get("mlflow.parentRunId") in offline_ids)
    ids: dict[str, str] = {}
    done = []
    for path in order:
        records = loaded[path]
        start = records[0]
        run_id = start.get("online_id")
        try:
            if not run_id:
                tags = dict(start.get("tags") or {})
                parent = tags.get("mlflow.parentRunId")
                if parent in ids:
                    tags["mlflow.parentRunId"] = ids[parent]
                run_id = client.create_run(experiment_id(start["experiment"], uri), run_name=start["run_name"], tags=tags).info.run_id
            ids[path.stem] = run_id
            for r in records[1:]:
                op = r["op"]
                if op == "params":
                    items = [Param(k, v) for k, v in r["params"].items()]
                    for i in range(0, len(items), 100):
                        client.log_batch(run_id, params=items[i : i + 100])
                elif op == "metrics":
                    client.log_batch(run_id, metrics=[Metric(k, float(v), r["time_ms"], r["step"]) for k, v in r["metrics"].items()])
                elif op == "tags":
                    for k, v in r["tags"].items():
                        client.set_tag(run_id, k, v)
                elif op == "artifact":
                    client.log_artifact(run_id, str(folder / r["file"]), r["artifact_path"])
                elif op == "end":
                    client.set_terminated(run_id, status=r["status"], end_time=r.get("time_ms"))
            client.set_tag(run_id, "asc_dist.replayed", time.strftime("%Y-%m-%d %H:%M:%S"))
        except server_down_errors() as exc:
            raise TrackingError(f"replaying {path} to {uri} failed ({str(exc).splitlines()[0][:160]}); nothing of it is lost: "
                                f"run `{REPLAY.format(run=run_dir)}` again once the server answers") from None  # fmt: skip
        replayed = folder / "replayed"
        replayed.mkdir(exist_ok=True)
        path.rename(replayed / path.name)
        if (folder / path.stem).is_dir():
            (folder / path.stem).rename(replayed / path.stem)
        done.append(run_id)
        log.info("replayed %s (%d calls) into MLflow run %s", path.name, len(records) - 1, run_id)
    return done
