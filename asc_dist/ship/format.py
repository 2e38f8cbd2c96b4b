"""The shipped format: one TorchScript module, float32 mono waveform in, logits out (front end included), with
the metadata prediction needs (classes, rate, clip length, int8 engine) stored inside the file."""

from __future__ import annotations

import torch
from torch import nn


class WaveToLogits(nn.Module):
    """What ships: 32 kHz mono waveform [batch, samples] -> logits [batch, classes]."""

    def __init__(self, front: nn.Module, model: nn.Module):
        super().__init__()
        self.front = front
        self.model = model

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.model(self.front(waves))


def ship_metadata(cfg, store, kind: str) -> dict:
    """What a shipped file must carry for `asc_dist.predict`: classes, rate, clip length, int8 engine."""
    return {"format": 1, "kind": kind, "classes": store.classes, "sample_rate": store.sample_rate,
            "clip_samples": int(store.manifest["samples"]), "engine": torch.backends.quantized.engine if kind == "int8" else None,
            "model": cfg.model, "preset": cfg.preset, "name": cfg.run_name,
            "input": "float32 mono waveform [batch, samples] at sample_rate", "output": "logits [batch, classes]"}
