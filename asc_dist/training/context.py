"""Context teachers: a teacher hears a 1-s clip together with the seconds around it in its own recording.

TAU names clips `scene-city-location-segment-part-device.wav`; clips that differ only in `part` are
consecutive seconds of one recording by one device. The recordings are reassembled from the clip table
(filenames only: no re-packing, windows index the packed store's rows).

What a clip's context is: a window of K parts (`context_s` seconds of 1-s clips) of its own recording,
centred on the clip and shifted to lie inside the recording. With K at least the recording's length (K = 10
on TAU22 and the synthetic default), the window is the whole recording and every clip of it gets the same
logits: the teacher's judgement of the 10-s scene, which is what the 10-s teachers of the vivo DCASE 2023 Task 1a technical report pass to
their 1-s students (72-77 % single teachers against 59 % for the student). Centring keeps a clip inside its
own window for any K, so a shorter context still describes the clip rather than its neighbours.

Missing parts (a recording with gaps, or shorter than K) still work: the parts present are tiled in order to
fill K seconds, so every window has one length and a batch is one tensor; such recordings are counted in
the log. Clips are grouped within one split only (the split's own table), so context never crosses the
train/val/test boundary. A filename that does not follow the pattern is a recording of its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import numpy as np

from asc_dist.data.store import SplitData
from asc_dist.data.table import ClipTable

log = logging.getLogger(__name__)


def recording_of(filename: str) -> tuple[str, int | None]:
    """(recording key, part) of a TAU clip name; (the name itself, None) when it has no part field."""
    stem = PurePosixPath(filename).stem
    fields = stem.split("-")
    if len(fields) >= 3 and fields[-2].isdigit():
        return "-".join(fields[:-2]) + "|" + fields[-1], int(fields[-2])
    return stem, None


def context_parts(context_s: float, clip_samples: int, sample_rate: int) -> int:
    """How many clips a context of `context_s` seconds spans (at least 1: the clip alone)."""
    return max(1, round(context_s * sample_rate / clip_samples))


@dataclass
class ContextIndex:
    """Windows of one split: `windows[w]` = K positions into the split's clips (in time order, tiled when
    the recording is short); `clip_window[i]` = the window that scores clip i."""

    windows: np.ndarray  # int64 [n_windows, K]
    clip_window: np.ndarray  # int64 [n_clips]
    stats: dict = field(default_factory=dict)


def build_windows(filenames: np.ndarray, k: int) -> ContextIndex:
    """Group the clips of one split into recordings and give every clip its centred K-part window."""
    groups: dict[str, list[tuple[int, int]]] = {}
    loose = 0
    for pos, name in enumerate(filenames):
        key, part = recording_of(str(name))
        if part is None:
            loose += 1
            part = 0
        groups.setdefault(key, []).append((part, pos))
    window_ids: dict[tuple[int, ...], int] = {}
    windows: list[tuple[int, ...]] = []
    clip_window = np.zeros(len(filenames), dtype=np.int64)
    short = gaps = 0
    for members in groups.values():
        members.sort()
        parts = [p for p, _ in members]
        positions = [pos for _, pos in members]
        n = len(positions)
        short += n < k
        gaps += parts[-1] - parts[0] + 1 != n
        for j, pos in enumerate(positions):
            if n <= k:
                window = tuple(positions[i % n] for i in range(k))
            else:
                start = min(max(j - k // 2, 0), n - k)
                window = tuple(positions[start : start + k])
            if window not in window_ids:
                window_ids[window] = len(windows)
                windows.append(window)
            clip_window[pos] = window_ids[window]
    stats = {"clips": len(filenames), "recordings": len(groups), "windows": len(windows), "parts": k,
             "short_recordings": int(short), "recordings_with_gaps": int(gaps), "unnamed_clips": loose}  # fmt: skip
    return ContextIndex(np.array(windows, dtype=np.int64).reshape(-1, k), clip_window, stats)


class ContextSplit:
    """A split seen through context windows; quacks like `SplitData` for the training loop and `predict`.

    One example per distinct window (so a 10-s teacher trains on each recording once per epoch, not ten
    times); `table` holds one row per window (label and device of its recording), `waves` the K clips of
    each window joined in time order, [B, K x samples].
    """

    def __init__(self, base: SplitData, k: int):
        self.base = base
        self.name = base.name
        self.index = build_windows(base.table.filename, k)
        first = self.index.windows[:, 0] if len(self.index.windows) else np.zeros(0, dtype=np.int64)
        self.table: ClipTable = base.table.take(first)
        st = self.index.stats
        if st["short_recordings"] or st["recordings_with_gaps"] or st["unnamed_clips"]:
            log.info("context %s: %d clips in %d recordings -> %d windows of %d s; %d recordings shorter than the "
                     "context (tiled), %d with missing parts, %d clips without a part number",
                     base.name, st["clips"], st["recordings"], st["windows"], k, st["short_recordings"],
                     st["recordings_with_gaps"], st["unnamed_clips"])  # fmt: skip

    def __len__(self) -> int:
        return len(self.index.windows)

    def waves(self, index: np.ndarray) -> np.ndarray:
        """float32 [len(index), K * samples]: each window's clips, read from the store, joined."""
        positions = self.index.windows[np.asarray(index)]
        flat = self.base.waves(positions.reshape(-1))
        return flat.reshape(len(positions), -1)

    def shard(self, rank: int, world: int) -> "ContextSplit":
        """Every world-th window (data-parallel workers)."""
        out = object.__new__(ContextSplit)
        out.base, out.name = self.base, self.name
        keep = np.arange(rank, len(self), world)
        out.index = ContextIndex(self.index.windows[keep], self.index.clip_window, self.index.stats)
        out.table = self.table.take(keep)
        return out


def with_context(data: SplitData, k: int) -> SplitData | ContextSplit:
    """`data` itself for a 1-s teacher, its context windows otherwise."""
    return data if k <= 1 else ContextSplit(data, k)
