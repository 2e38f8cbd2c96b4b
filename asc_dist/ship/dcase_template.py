"""DCASE 2025 Task 1 submission module, written by `python -m asc_dist.export --dcase-package LABEL`.

Implements the challenge's inference API (CP-JKU's dcase2025_task1_inference README): `load_model`,
`load_inputs`, `get_model_for_device`, `predict`. Standalone: torch, torchaudio and soundfile only. The model is
the asc-dist int8 TorchScript student in `ckpts/` (waveform at 32 kHz in, logits out, its front end inside);
one model serves every device. A file is read as mono (channels averaged), resampled to the model's rate and
cut into the model's windows (a partial last window is the file's last full window; a file shorter than a
window is zero-padded); its logits are the mean of its windows' log-probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Tuple

import soundfile as sf
import torch
import torchaudio
from torch import Tensor

HERE = Path(__file__).resolve().parent
DEFAULT_CKPT = HERE / "ckpts" / "model_int8.pt"
META = json.loads((HERE / "resources" / "model.json").read_text())


def load_model(model_file_path: Optional[str] = None) -> torch.nn.Module:
    engine = META.get("engine")
    if engine and engine in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = engine  # the int8 kernels the file was converted for
    return torch.jit.load(str(model_file_path or DEFAULT_CKPT), map_location="cpu").eval()


def _windows(path: str) -> Tensor:
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    wave = torch.from_numpy(audio.mean(axis=1))
    if sr != META["sample_rate"]:
        wave = torchaudio.functional.resample(wave, sr, META["sample_rate"])
    n, clip = wave.shape[0], META["clip_samples"]
    if n < clip:
        return torch.nn.functional.pad(wave, (0, clip - n))[None]
    starts = list(range(0, n - clip + 1, clip))
    if starts[-1] + clip < n:
        starts.append(n - clip)
    return torch.stack([wave[s : s + clip] for s in starts])


def load_inputs(file_paths: List[str], device_ids: List[str], model: torch.nn.Module) -> List[Tensor]:
    """Model-ready input per file: its windows, float32 [n_windows, samples] at the model's rate."""
    if len(file_paths) != len(device_ids):
        raise ValueError(f"{len(file_paths)} files but {len(device_ids)} device ids")
    return [_windows(p) for p in file_paths]


def get_model_for_device(model: torch.nn.Module, device_id: str) -> torch.nn.Module:
    return model  # one device-independent model (trained with device augmentation)


def predict(file_paths: List[str], device_ids: List[str], model_file_path: Optional[str] = None,
            use_cuda: bool = False) -> Tuple[List[Tensor], List[str]]:
    """Per-file logits [n_classes] in input order, and the class order."""
    model = load_model(model_file_path)
    logits = []
    with torch.inference_mode():
        for windows, device in zip(load_inputs(file_paths, device_ids, model), device_ids):
            log_probs = torch.log_softmax(get_model_for_device(model, device)(windows), dim=1)
            logits.append(log_probs.mean(dim=0))
    return logits, list(META["classes"])
