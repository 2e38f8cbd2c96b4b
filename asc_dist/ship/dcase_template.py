"""DCASE 2025 Task 1 submission module, written by `python -m asc_dist.export --dcase-package LABEL`.

Implements the challenge's inference API (CPJKU/dcase2025_task1_inference): `load_model`, `load_inputs`,
`get_model_for_device`, `predict`. Standalone: torch, torchaudio and soundfile only. `load_model` returns every
model of the submission: the general asc-dist int8 student and one fine-tuned copy per training device, each a
front end (TorchScript, waveform at the model's rate -> log-mel, no parameters) followed by the int8 net whose
int8 weights are int8 parameters (`open_int8.py`), so the organisers' complexity check measures what runs.
`get_model_for_device` gives a device's own model, or the general one for a device without one (s4-s6, unknown).

A file is read as mono (channels averaged), resampled to the model's rate and cut into the model's windows (a
partial last window is the file's last full window; a file shorter than a window is zero-padded); its logits
are the mean of its windows' log-probabilities.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Tuple

import soundfile as sf
import torch
import torchaudio
from torch import Tensor, nn

from .open_int8 import load_open

HERE = Path(__file__).resolve().parent
CKPTS = HERE / "ckpts"


def _meta() -> dict:
    return json.loads((HERE / "resources" / "model.json").read_text())


class DeviceModel(nn.Module):
    """Waveform windows [n, samples] -> logits [n, classes]."""

    def __init__(self, front: nn.Module, net: nn.Module):
        super().__init__()
        self.front, self.net = front, net

    def forward(self, waves: Tensor) -> Tensor:
        return self.net(self.front(waves))


class Submission(nn.Module):
    """The general model and the per-device models (a ModuleDict keyed by device id)."""

    def __init__(self, general: DeviceModel, devices: dict, meta: dict):
        super().__init__()
        self.general, self.devices, self.meta = general, nn.ModuleDict(devices), meta

    def forward(self, waves: Tensor) -> Tensor:
        return self.general(waves)


def load_model(model_file_path: Optional[str] = None) -> Submission:
    """All models of the submission; `model_file_path`: a folder laid out like this package's ckpts/."""
    meta = _meta()
    engine = meta.get("engine")
    if engine and engine in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = engine  # the int8 kernels the nets were converted for
    folder = Path(model_file_path) if model_file_path else CKPTS
    front = torch.jit.load(str(folder / "front.pt"), map_location="cpu").eval()
    here = f"{__package__}.open_int8" if __package__ else "open_int8"
    general = DeviceModel(front, load_open(folder / "general.pt", here))
    devices = {d: DeviceModel(front, load_open(folder / f"device_{d}.pt", here)) for d in meta["devices"]}
    return Submission(general, devices, meta).eval()


def _windows(path: str, meta: dict) -> Tensor:
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    wave = torch.from_numpy(audio.mean(axis=1))
    if sr != meta["sample_rate"]:
        wave = torchaudio.functional.resample(wave, sr, meta["sample_rate"])
    n, clip = wave.shape[0], meta["clip_samples"]
    if n < clip:
        return torch.nn.functional.pad(wave, (0, clip - n))[None]
    starts = list(range(0, n - clip + 1, clip))
    if starts[-1] + clip < n:
        starts.append(n - clip)
    return torch.stack([wave[s : s + clip] for s in starts])


def load_inputs(file_paths: List[str], device_ids: List[str], model: Submission) -> List[Tensor]:
    """Model-ready input per file: its windows, float32 [n_windows, samples] at the model's rate."""
    if len(file_paths) != len(device_ids):
        raise ValueError(f"{len(file_paths)} files but {len(device_ids)} device ids")
    return [_windows(p, model.meta) for p in file_paths]


def get_model_for_device(model: Submission, device_id: str) -> nn.Module:
    """The model fine-tuned for `device_id`, or the general model for a device without one."""
    return model.devices[device_id] if device_id in model.devices else model.general


def predict(file_paths: List[str], device_ids: List[str], model_file_path: Optional[str] = None,
            use_cuda: bool = False) -> Tuple[List[Tensor], List[str]]:
    """Per-file logits [n_classes] in input order, and the class order. int8 kernels run on the CPU only."""
    model = load_model(model_file_path)
    logits = []
    with torch.inference_mode():
        for windows, device in zip(load_inputs(file_paths, device_ids, model), device_ids):
            log_probs = torch.log_softmax(get_model_for_device(model, device)(windows), dim=1)
            logits.append(log_probs.mean(dim=0))
    return logits, list(model.meta["classes"])
