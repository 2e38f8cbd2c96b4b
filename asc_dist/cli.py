"""Shared CLI plumbing: one convention for every step's flags, and one line with exit 2 for user errors.

The convention (`python -m asc_dist` lists the steps):
- `--run RUN` names the run folder in every step that reads or writes one (default `runs/demo`); the
  teachers step still takes its old `--out` for one release and says it is deprecated.
- Flags for the same thing come from the shared groups below, with one name, help and default everywhere:
  run (`--run`), data (`--data`, `--store`, `--dirs`, `--val-fraction`), tracking (`--mlflow-uri`,
  `--experiment`), cluster (`--address`), and `-v/--verbose`. `tests/test_cli.py` compares them.
- One meaning per flag name: `--model` is a student family (dsflexinet, serfr, sp4sc); a file is
  `--model-file`; `--dir-p` is a probability, `--dirs` a folder of impulse responses; `--out` is the file or
  folder a command writes (predict's CSV, export's .onnx, pack's store).
- Lists are comma-separated and parsed by `parse_list`; in `tune` and `pipeline` a list flag is a sweep.
- Each default lives in its config dataclass (StudentConfig, SweepConfig, DataConfig, ...); parsers read it there.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from asc_dist.errors import AscDistError, ConfigError
from asc_dist.infra.interrupt import EXIT_INTERRUPTED, INTERRUPTED, interrupt_on_sigterm, this_command

EXIT_USER_ERROR = 2
DEFAULT_RUN = "runs/demo"
T = TypeVar("T")


def parse_list(text: str | None, kind: Callable[[str], T] = str, flag: str = "") -> list[T] | None:
    """`a,b,c` -> [kind(a), kind(b), kind(c)] (blanks dropped); None stays None (the config's default)."""
    if text is None:
        return None
    try:
        return [kind(item.strip()) for item in str(text).split(",") if item.strip()]
    except ValueError:
        raise ConfigError(f"{flag or 'a list flag'} takes comma-separated {getattr(kind, '__name__', 'value')}s, got {text!r}") from None


class _Deprecated(argparse.Action):
    """An old flag name kept for one release: stores into the new one and says so once."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated(p: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs) -> None:
    p.add_argument(old, dest=dest, action=_Deprecated, new=new, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)


def add_run(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run")
    g.add_argument("--run", default=DEFAULT_RUN, help=f"run folder: logits, targets, students, MLflow db, reports (default {DEFAULT_RUN})")


def add_data(p: argparse.ArgumentParser, *, store_only: bool = False) -> None:
    from asc_dist.data.prepare import DataConfig

    g = p.add_argument_group("data")
    if not store_only:
        g.add_argument("--data", default=DataConfig.root, help="TAU-layout dataset folder (default: the embedded synthetic dataset in RUN/data)")
    g.add_argument("--store", default=DataConfig.store, help="packed waveform store folder (default DATA/packed/sr32000; give one for a read-only dataset)")
    if not store_only:
        add_dirs(g)
        g.add_argument("--val-fraction", type=float, default=DataConfig.val_fraction,
                       help=f"validation carve from fold1_train by recording location, the same for teachers, fusion and students (default {DataConfig.val_fraction})")


def add_dirs(g) -> None:
    g.add_argument("--dirs", default=None, help="folder of device impulse responses (*.wav, e.g. MicIRP) for DIR; default: generated responses")


def add_tracking(p: argparse.ArgumentParser, experiment: str | None = None) -> None:
    g = p.add_argument_group("tracking")
    g.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite RUN/mlflow.db)")
    if experiment is not None:
        g.add_argument("--experiment", default=experiment, help=f"MLflow experiment (default {experiment})")


def add_cluster(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster")
    g.add_argument("--address", default=None, help="Ray cluster address (e.g. auto); default: start Ray on this machine")


def add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def add_shared(p: argparse.ArgumentParser, *, data: bool = True, experiment: str | None = None, cluster: bool = True) -> None:
    """The shared groups a step with a run folder takes, in one order: run, data, tracking, cluster, -v."""
    add_run(p)
    if data:
        add_data(p)
    add_tracking(p, experiment)
    if cluster:
        add_cluster(p)
    add_verbose(p)


def data_config(args: argparse.Namespace):
    """The DataConfig the data group's flags name (its other fields at the dataclass's defaults)."""
    from asc_dist.data.prepare import DataConfig

    return DataConfig(root=args.data, store=args.store, dirs=args.dirs, val_fraction=args.val_fraction)


def parse_requiring(parser: argparse.ArgumentParser, argv: list[str] | None, *flags: str) -> argparse.Namespace:
    """Parse, then insist on flags that have a deprecated alias (argparse's `required` would refuse the alias)."""
    args = parser.parse_args(argv)
    missing = [f for f in flags if getattr(args, f.lstrip("-").replace("-", "_")) is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    return args


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def quiet_third_party() -> None:
    """Silence Ray/Tune/MLflow chatter that buries our own progress lines."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Ctrl-C must stop the step, not just Tune's loop: Tune's own SIGINT handler ends the loop quietly and returns
    # the unfinished trials as if complete (tests/test_interrupt.py); without it the interrupt reaches our code.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    for name in ("mlflow", "alembic", "ray", "ray.tune", "ray.train", "filelock", "matplotlib", "onnx_ir", "onnxscript", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a CLI entry point: user errors and a full disk become `error: <message>` and exit 2; SIGINT and
    SIGTERM one line and exit 130."""
    interrupt_on_sigterm()
    try:
        code = main(argv)
    except AscDistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except OSError as exc:
        from asc_dist.run.diskspace import disk_full_message, is_disk_full

        if is_disk_full(exc):
            print(f"error: {disk_full_message(exc)}", file=sys.stderr)
        else:  # read-only folder, permission denied, missing parent, too many open files: the OS's words and the path
            logging.getLogger("asc_dist").debug("the OS error's traceback", exc_info=True)
            where = f": {exc.filename}" if exc.filename else ""
            print(f"error: {exc.strerror or exc}{where}; check that the path exists and that you may write there "
                  "(rerun with -v for the traceback)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print(INTERRUPTED.format(command=this_command()), file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code or 0)
