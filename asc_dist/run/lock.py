"""One writer per run folder: an exclusive `flock` on RUN/.lock, held while a step writes.

Two `teachers` started at once on one folder used to race in MLflow's schema migration and train into one
shared Tune folder. The lock is taken after a step's input checks (bad input still leaves nothing behind)
and before its first write; a second writer gets one `error:` line naming the holder's PID. The OS drops
the lock when the holder dies, so a crash or `kill -9` never leaves it stuck. Re-entrant within a process:
the pipeline holds it while its steps take it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from asc_dist.errors import ConfigError
from asc_dist.run.layout import RunLayout

LOCK_NAME = RunLayout.of("").lock.name
_held: dict[Path, list[int]] = {}  # folder -> [fd, depth]


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike) -> Iterator[Path]:
    folder = Path(run_dir).resolve()
    if folder in _held:
        _held[folder][1] += 1
        try:
            yield folder
        finally:
            _held[folder][1] -= 1
        return
    created = not folder.exists()
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigError(f"cannot write the run folder {folder} ({exc.strerror or exc}); pass --run to a folder you can "
                          "write (a read-only run can be copied elsewhere first)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(
            f"run folder {folder} is in use by another asc-dist process ({holder}); one writer per run folder: "
            "wait for it to finish, stop it, or pass another --run") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"PID {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
    _held[folder] = [fd, 1]
    failed = True
    try:
        yield folder
        failed = False
    finally:
        del _held[folder]
        if failed and created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
            path.unlink()  # a step that failed before writing anything leaves no new folder behind
            folder.rmdir()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
