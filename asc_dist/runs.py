"""`python -m asc_dist.runs open|pack|unpack|serve`: run folders that travel and open where they land.

- `open RUN`: re-root a copied or moved run folder (MLflow's recorded artifact locations and registered model
  sources, the paths in its JSON and Markdown files: asc_dist/run/relocate.py) and print how to look at it.
  Every step does this by itself when it opens a run; `open` is for a folder you only want to read.
- `pack RUN [--out FILE]`: one .tar.gz a colleague can open (without the dataset, Ray's scratch and epoch
  checkpoints unless `--with-data`), written under a temp name and renamed.
- `unpack FILE DEST`: extract it (no path leaves DEST) and re-root it there.
- `serve RUN --model-file models:/NAME/VERSION [--port 5001]`: `mlflow models serve` on the run's own registry, in this
  environment (asc-dist and uvicorn from this interpreter's folder, `--env-manager local`), on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tarfile
from pathlib import Path

from asc_dist.cli import add_verbose, run_main, setup_logging
from asc_dist.errors import ConfigError
from asc_dist.run.atomic import atomic_path
from asc_dist.run.relocate import reroot

log = logging.getLogger("asc_dist.runs")
LEFT_OUT = ("data", "ray_results", "checkpoints")  # top-level folders pack skips unless --with-data


def _run_folder(path: str) -> Path:
    run = Path(path).resolve()
    if not (run / "mlflow.db").is_file():
        raise ConfigError(f"{path} is not a run folder (no mlflow.db); give RUN as made by `python -m asc_dist.pipeline --run RUN`")
    return run


def registered_versions(run: Path) -> list[str]:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    return [f"models:/{v.name}/{v.version}" for m in client.search_registered_models() for v in client.search_model_versions(f"name = '{m.name}'")]


def open_run(path: str) -> Path:
    run = _run_folder(path)
    old = reroot(run)
    print(f"run folder {run}" + (f" (moved from {old}: re-rooted)" if old else ""))
    print(f"MLflow store: sqlite:///{run / 'mlflow.db'}")
    for uri in registered_versions(run):
        print(f"registered: {uri}")
    if (run / "report.md").is_file():
        print(f"report: {run / 'report.md'}")
    return run


def pack(path: str, out: str | None, with_data: bool) -> Path:
    run = _run_folder(path)
    target = Path(out) if out else run.with_suffix(".tar.gz") if run.suffix else run.parent / f"{run.name}.tar.gz"
    if target.resolve().is_relative_to(run):
        raise ConfigError(f"--out {target} is inside the run folder it packs; write it elsewhere")

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if len(parts) > 1 and not with_data and parts[1] in LEFT_OUT:
            return None
        return None if parts[-1].endswith((".lock", ".tmp")) else info

    with atomic_path(target) as tmp, tarfile.open(tmp, "w:gz") as tar:
        tar.add(run, arcname=run.name, filter=keep)
    log.info("packed %s -> %s (%.1f MB)%s", run, target, target.stat().st_size / 1e6, "" if with_data else f"; left out: {', '.join(LEFT_OUT)}")
    return target


def unpack(archive: str, dest: str) -> Path:
    source, folder = Path(archive), Path(dest)
    if not source.is_file():
        raise ConfigError(f"{archive}: no such archive; give the .tar.gz written by `python -m asc_dist.runs pack`")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(source, "r:gz") as tar:
            tops = {Path(m.name).parts[0] for m in tar.getmembers()}
            if len(tops) != 1:
                raise ConfigError(f"{archive} holds {len(tops)} top-level entries; a packed run holds one folder")
            tar.extractall(folder, filter="data")  # no absolute paths, no '..', no links out of DEST
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ConfigError(f"{archive} is not a readable run archive ({exc})") from None
    return open_run(str(folder / tops.pop()))


def serve(path: str, model: str, port: int) -> int:
    """Replace this process with `mlflow models serve` on the run's registry (never returns on success)."""
    run = _run_folder(path)
    reroot(run)
    if not model.startswith(("models:/", "runs:/")):
        known = registered_versions(run)
        raise ConfigError(f"--model-file {model!r}: give a registered version, one of {', '.join(known) or '(none: run the sweep first)'}")
    bin_dir = str(Path(sys.executable).parent)  # uvicorn and mlflow of this environment, activated or not
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{run / 'mlflow.db'}", "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    print(f"serving {model} from {run} on http://127.0.0.1:{port}/invocations (POST {{\"inputs\": [[...samples...]]}})", flush=True)
    os.execvpe(cmd[0], cmd, env)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asc_dist.runs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    o = sub.add_parser("open", help="re-root a copied or moved run folder and say what is in it")
    o.add_argument("run")
    k = sub.add_parser("pack", help="one .tar.gz of a run folder")
    k.add_argument("run")
    k.add_argument("--out", default=None, help="the archive (default RUN.tar.gz beside the folder)")
    k.add_argument("--with-data", action="store_true", help=f"also pack {', '.join(LEFT_OUT)}")
    u = sub.add_parser("unpack", help="extract a packed run into DEST and re-root it")
    u.add_argument("archive")
    u.add_argument("dest")
    s = sub.add_parser("serve", help="mlflow models serve a registered version of the run, in this environment")
    s.add_argument("run")
    s.add_argument("--model-file", default="", help="the registered version to serve, models:/NAME/VERSION (`open` lists them)")
    s.add_argument("--port", type=int, default=5001)
    for q in (o, k, u, s):
        add_verbose(q)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.command == "open":
        open_run(args.run)
    elif args.command == "pack":
        print(pack(args.run, args.out, args.with_data))
    elif args.command == "unpack":
        unpack(args.archive, args.dest)
    else:
        return serve(args.run, args.model_file, args.port)
    return 0


if __name__ == "__main__":
    run_main(main)
