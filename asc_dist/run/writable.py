"""Write access, checked before the work: a read-only run folder or output path is one line, not a traceback
after an hour of fitting or predicting."""

from __future__ import annotations

import os
from pathlib import Path

from asc_dist.errors import ConfigError


def require_writable(folder: str | os.PathLike, what: str, fix: str) -> None:
    """Create and remove a probe file in `folder` (or, where it does not exist yet, in its nearest existing
    parent, which must let us create it); a failure is a ConfigError naming the path, the OS's reason and `fix`."""
    folder = Path(folder).absolute()
    probe_in = folder
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    if probe_in.exists() and not probe_in.is_dir():
        raise ConfigError(f"cannot write {what} {folder}: {probe_in} is a file, not a folder; {fix}")
    probe = probe_in / f".asc-dist-write-test-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write {what} {folder} ({exc.strerror or exc} in {probe_in}); {fix}") from None
