"""Decode wav files with soundfile (mono mix) and resample with torchaudio, in batches."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from asc_dist.errors import DatasetError

TAU_FIX = "re-extract it from the dataset archive or drop it from meta.csv and the fold files"


def read_mono(path: Path, fix: str = TAU_FIX) -> tuple[np.ndarray, int]:
    """Read one audio file as float32 mono (channels averaged); a broken file raises DatasetError naming it and `fix`."""
    try:
        audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - libsndfile raises several types
        raise DatasetError(f"cannot decode {path} ({exc}); {fix}") from None
    if audio.size == 0:
        raise DatasetError(f"{path} holds no audio frames; {fix}")
    return audio.mean(axis=1), sr


def fit_length(wave: np.ndarray, n: int) -> np.ndarray:
    if len(wave) >= n:
        return wave[:n]
    return np.pad(wave, (0, n - len(wave)))


def decode_batch(paths: Sequence[Path], sample_rate: int, n_samples: int, pool: ThreadPoolExecutor | None = None) -> np.ndarray:
    """Decode `paths` -> float32 [len(paths), n_samples] at `sample_rate` (clips of one rate resampled together)."""
    reads = list(pool.map(read_mono, paths)) if pool else [read_mono(p) for p in paths]
    out = np.zeros((len(paths), n_samples), dtype=np.float32)
    by_rate: dict[int, list[int]] = {}
    for i, (_, sr) in enumerate(reads):
        by_rate.setdefault(sr, []).append(i)
    for sr, rows in by_rate.items():
        src_len = max(len(reads[i][0]) for i in rows)
        batch = np.stack([fit_length(reads[i][0], src_len) for i in rows])
        if sr != sample_rate:
            batch = torchaudio.functional.resample(torch.from_numpy(batch), sr, sample_rate).numpy()
        for j, i in enumerate(rows):
            true_len = round(len(reads[i][0]) * sample_rate / sr)
            out[i] = fit_length(batch[j][:true_len], n_samples)
    return out
