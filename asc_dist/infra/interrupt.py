"""Interrupts are never success: SIGINT and SIGTERM stop a step the same way, with one line and exit 130."""

from __future__ import annotations

EXIT_INTERRUPTED = 130
INTERRUPTED = ("interrupted: nothing was recorded as finished (unfinished MLflow runs are KILLED, epoch checkpoints are "
               "kept); to continue, run the same command again: {command}")


def this_command() -> str:
    """The command line that started this process, as a user would type it again."""
    import shlex
    import sys

    argv = list(getattr(sys, "orig_argv", sys.argv))
    if argv and argv[0] == sys.executable:
        argv[0] = "python"
    return shlex.join(argv)


def interrupt_on_sigterm() -> None:
    """SIGTERM as Ctrl-C: KeyboardInterrupt in the main thread, so locks, MLflow runs and temporary files are
    closed on the way out. Called by `run_main` and again after `ray.init`, which installs a handler of its own."""
    import signal
    import threading

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
