"""One exception type per layer. Messages name the file, what was expected, and the fix.

The CLIs (see `asc_dist.cli.run_main`) turn any `AscDistError` into one line on stderr and exit code 2.
"""


class AscDistError(Exception):
    """Base class: a problem with the user's input that they can fix."""


class ConfigError(AscDistError):
    """A bad option or config value (unknown model, lambda outside [0, 1], ...)."""


class DatasetError(AscDistError):
    """The dataset on disk does not match the TAU layout or has broken audio."""


class LogitsError(AscDistError):
    """Teacher logits or fused targets are missing, misaligned or not finite."""


class TrackingError(AscDistError):
    """MLflow tracking server unreachable or misconfigured."""


class ClusterError(AscDistError):
    """Ray cluster unreachable or without the resources asked for."""


class TrainingError(AscDistError):
    """A trial failed: its first cause, named, with what to do."""


def first_cause(error: BaseException) -> str:
    """The innermost cause of a Ray/Tune error as one line: `Type: first line of its message`."""
    seen = error
    while getattr(seen, "cause", None) is not None and seen.cause is not seen:
        seen = seen.cause
    while seen.__cause__ is not None:
        seen = seen.__cause__
    import re

    text = [line.strip() for line in str(seen).strip().splitlines() if line.strip()]
    # a wrapper (Ray Train's WorkerGroupError) carries the worker's traceback as text: its last "XError: ..." line
    raised = [line for line in text[1:] if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b:?", line)]
    if raised:
        return raised[-1][:300]
    return f"{type(seen).__name__}: {text[0][:300] if text else ''}"
