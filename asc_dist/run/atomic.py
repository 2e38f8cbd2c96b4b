"""Write-to-temp-then-rename helpers: an interrupted write never leaves a file that looks complete."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto `target`, on failure delete it.

    Works for files and folders alike (the caller creates whatever it wants at the yielded path). The temp
    name carries host and PID, so the next write of the same target removes what a killed writer left.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_temp_prefix(target)}{_owner()}.", suffix=".tmp", dir=target.parent))
    work = tmp / target.name
    try:
        yield work
        if target.is_dir() and not target.is_symlink():
            _swap_folder(work, target)
        else:
            os.replace(work, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_folder(new: Path, target: Path) -> None:
    """Put folder `new` in place of the existing folder `target`; the old one ends up at `new` (deleted with the temp).

    Linux's renameat2(RENAME_EXCHANGE) swaps the two in one step: readers never see `target` missing and two
    writers swapping at once cannot collide (a fixed `.old` name raised ENOTEMPTY about once in 300 swaps). Where
    the call is missing (other kernels, some network filesystems) the fallback moves the old folder to a name of
    its own and retries when another writer slipped its folder in between."""
    if _exchange(new, target):
        return
    while True:
        aside = new.parent / f"old-{time.time_ns()}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(target, aside)
        try:
            os.rename(new, target)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """renameat2(a, b, RENAME_EXCHANGE); False where unsupported."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def _temp_prefix(target: Path) -> str:
    return f".{target.name}."


def _owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(target: str | os.PathLike) -> list[Path]:
    """Delete temp siblings of `target` whose writer (on this host) is gone: a crash or a full disk must not
    leave a half-written store keeping the disk full. Temps of live writers and of other hosts stay."""
    target = Path(target)
    host, removed = socket.gethostname(), []
    if not target.parent.is_dir():
        return removed
    prefix = _temp_prefix(target)
    for tmp in target.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        owner = tmp.name[len(prefix):].split(".", 1)[0]
        owner_host, _, pid = owner.rpartition("-")
        if owner_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed
