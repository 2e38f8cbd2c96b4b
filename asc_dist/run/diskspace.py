"""Free space, checked before large writes: a full disk ends in one `error:` line, never in SIGBUS.

A memory-mapped write into a sparse file dies of SIGBUS when the disk fills (no message, exit 135); a
plain `write` raises ENOSPC, which `cli.run_main` turns into one line. Steps whose output size is known in
advance (the packed store) check it first and name the bytes needed and available.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from asc_dist.errors import AscDistError

MARGIN_BYTES = 64 * 2**20  # metadata, index and manifest beside the arrays, and room for the file system


class DiskFullError(AscDistError):
    """Not enough free space for a write (checked up front, or ENOSPC/EDQUOT on the way)."""


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def existing_parent(path: str | os.PathLike) -> Path:
    probe = Path(path).resolve()
    while not probe.exists():
        probe = probe.parent
    return probe


def require_free(path: str | os.PathLike, need_bytes: int, what: str, fix: str) -> None:
    """Refuse a write of about `need_bytes` under `path` when its file system has less free."""
    where = existing_parent(path)
    free = shutil.disk_usage(where).free
    if need_bytes + MARGIN_BYTES > free:
        raise DiskFullError(f"{what} needs {human(need_bytes + MARGIN_BYTES)} under {path}, but its disk has {human(free)} free; {fix}")


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def full_disk_means(message: str):
    """Inside: ENOSPC/EDQUOT becomes `DiskFullError(message)` (a step that knows what it was writing names it);
    any other OSError passes through. Put it outside `atomic_path`, so the temp is gone before the error."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFullError(message) from None


def disk_full_message(exc: OSError) -> str:
    target = exc.filename or "a file"
    free = ""
    if exc.filename:
        try:
            free = f" ({human(shutil.disk_usage(existing_parent(exc.filename)).free)} free now)"
        except OSError:
            pass
    return (f"no space left on the disk while writing {target}{free}; nothing half-written was kept: free space there, "
            "or point --out / --store / --run at a disk with room, and run the same command again")
