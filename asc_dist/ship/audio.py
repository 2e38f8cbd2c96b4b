"""Any audio file -> mono windows of the model's clip length at the model's sample rate.

Windows: consecutive, non-overlapping, `clip_samples` long. A partial last window is taken as the file's
last `clip_samples` (it overlaps the window before it: real audio, no padding); a file shorter than one
window is zero-padded at the end to one window, and its row says so (`padded`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif")


@dataclass(frozen=True)
class Windows:
    name: str  # the filename column: relative to the folder it was found in, else as given
    waves: np.ndarray  # float32 [n_windows, clip_samples]
    starts_s: np.ndarray  # start of each window in the file, seconds
    padded: bool
    seconds: float = 0.0  # the file's length


def find_audio(items: list[str]) -> list[tuple[Path, str]]:
    """(path, name) for each file given and each audio file under each folder given (recursive, sorted)."""
    found = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES):
                found.append((f, f.relative_to(path).as_posix()))
        else:
            found.append((path, item))
    return found


def read_mono(path: Path, sample_rate: int) -> np.ndarray:
    """The file as float32 mono (channels averaged) at `sample_rate`; raises on anything unreadable, and on a
    file that holds less audio than its header declares (an interrupted copy: libsndfile reads what is there)."""
    if not path.exists():
        raise FileNotFoundError("no such file")
    truncated = _truncation(sf.info(str(path)))
    if truncated:
        raise ValueError(truncated)
    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if audio.shape[0] == 0:
        raise ValueError("the file holds no samples")
    mono = audio.mean(axis=1)
    if not np.isfinite(mono).all():
        raise ValueError("the file holds NaN or infinite samples")
    if sr != sample_rate:
        mono = torchaudio.functional.resample(torch.from_numpy(mono), sr, sample_rate).numpy()
    return np.ascontiguousarray(mono, dtype=np.float32)


def _truncation(info) -> str | None:
    """WAV/AIFF whose data chunk is shorter on disk than its header says (libsndfile notes "should be N")."""
    found = re.search(r"^(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", info.extra_info, re.M)
    if not found:
        return None
    declared, present = int(found[1]), int(found[2])
    if present >= declared:
        return None
    width = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}.get(info.subtype, 2)
    frame = max(1, info.channels * width)  # bytes per frame
    return (f"truncated: its header declares {declared / frame / info.samplerate:.2f} s of audio, the file holds "
            f"{present / frame / info.samplerate:.2f} s (an interrupted copy or download?)")


def cut(mono: np.ndarray, clip_samples: int, sample_rate: int, name: str) -> Windows:
    n = len(mono)
    if n < clip_samples:
        wave = np.zeros((1, clip_samples), dtype=np.float32)
        wave[0, :n] = mono
        return Windows(name, wave, np.zeros(1), padded=True, seconds=n / sample_rate)
    starts = list(range(0, n - clip_samples + 1, clip_samples))
    if starts[-1] + clip_samples < n:
        starts.append(n - clip_samples)  # the partial tail: the file's last full window
    waves = np.stack([mono[s : s + clip_samples] for s in starts])
    return Windows(name, waves, np.asarray(starts) / sample_rate, padded=False, seconds=n / sample_rate)
