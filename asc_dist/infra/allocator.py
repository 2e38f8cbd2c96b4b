"""Keep freed tensor memory in the process instead of handing it back to the kernel after every step.

glibc's malloc serves a large block (above a threshold that starts at 128 KiB and follows the largest block
freed so far, at most 32 MiB) with its own `mmap` and unmaps it on free, and returns free memory at the top of
the heap to the kernel once it exceeds twice that threshold. A training step allocates and frees hundreds of
2-30 MB activations, so every step faults its memory back in page by page: measured for DS-FlexiNet sm2 at batch
64 on one core, 38,000 page faults (150 MB) a step and a quarter of the forward+backward time
(`ops/bench_students.py`, `allocator`). Fixing the threshold at its maximum and raising the trim threshold keeps
that memory mapped: the faults drop to about 250 a step. The cost is a resident size that stays at the
step's peak (for a student a few hundred MB) instead of shrinking between steps.

This is the fix PyTorch's CPU performance guide reaches with jemalloc or tcmalloc through LD_PRELOAD; glibc's
own `mallopt` does it from inside the process, with nothing to install. Elsewhere than glibc it does nothing.
`ASC_DIST_ALLOCATOR=default` leaves malloc as it is (for a side-by-side measurement).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc malloc.h
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's cap on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX); mallopt refuses more
TRIM_THRESHOLD = 1 * 2**30

_tuned: bool | None = None


def tune_allocator() -> bool:
    """Set the two thresholds once per process; True if they are set (now or before)."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if os.environ.get("ASC_DIST_ALLOCATOR", "tuned") == "default" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _tuned = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError) as exc:  # no usable libc: malloc stays as it is
        log.debug("mallopt unavailable: %s", exc)
    return _tuned
