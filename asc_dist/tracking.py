"""`python -m asc_dist.tracking replay --run RUN [--mlflow-uri URI]`: send to MLflow what a lost server did not take.

When the tracking server stops answering mid-run, training goes on and each run's tracking calls are journaled
in RUN/mlflow-offline/ (asc_dist/infra/offline.py); the step ends with a warning naming this command. Once the
server is back, replay sends every journal (runs the server never saw are created) and moves it to
RUN/mlflow-offline/replayed/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from asc_dist.cli import add_run, add_tracking, add_verbose, run_main, setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asc_dist.tracking", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("replay", help="send RUN/mlflow-offline/ to the tracking server")
    add_run(r)
    add_tracking(r)
    add_verbose(r)
    return p


def main(argv: list[str] | None = None) -> int:
    from asc_dist.infra.replay import replay
    from asc_dist.infra.tracking import resolve_uri

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    with contextlib.redirect_stdout(sys.stderr):  # MLflow prints "View run ..." links; stdout is the JSON summary
        ids = replay(args.run, resolve_uri(args.run, args.mlflow_uri))
    print(json.dumps({"replayed": len(ids), "mlflow_run_ids": ids}))
    return 0


if __name__ == "__main__":
    run_main(main)
