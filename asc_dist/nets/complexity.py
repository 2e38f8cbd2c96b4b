"""Model complexity by the DCASE rule (the NeSsi counter of the DCASE 2024 Task 1 baseline, CPJKU/dcase2024_task1_baseline).

Parameters and multiply-accumulates come from `torchinfo.summary(model, input_size)`: `total_params` and
`total_mult_adds`, counted on the fp32 model *before* conv-BN fusion (BN parameters and their MACs included),
exactly as NeSsi and CP-JKU do. Limits: 128 kB of parameter memory (128,000 int8 parameters) and 30 M MACs.

One size vocabulary across asc-dist (report, MLflow, registry tags, this CLI): `param_kb` is the DCASE measure,
parameters x bytes per parameter at int8, in kB of 1000 bytes; `int8_file_kb` is the exported file on disk
(int8 weights plus their scales, the TorchScript container and the front end's STFT window and mel matrix, which
are constants, not model parameters). Only `param_kb` is held against the 128 kB limit.

The command line is asc_dist/complexity.py.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torchinfo
from torch import nn

MAX_PARAM_BYTES = 128_000  # DCASE 2024 baseline MAX_PARAMS_MEMORY, in bytes
MAX_MACS = 30_000_000
STUDENT_INPUT = (1, 1, 256, 64)  # STUDENT_MEL, one 1-s clip


@dataclass(frozen=True)
class Complexity:
    params: int
    macs: int
    int8_bytes: int
    fp16_bytes: int
    fp32_bytes: int
    within_limits: bool  # int8 parameter memory and MACs both inside the DCASE limits
    limits: str

    def to_json(self) -> dict:
        return {
            "params": self.params,
            "macs": self.macs,
            "param_kb": self.int8_bytes / 1000,  # the DCASE measure: parameters x 1 byte (int8), kB of 1000 bytes
            "param_kb_fp16": self.fp16_bytes / 1000,
            "param_kb_fp32": self.fp32_bytes / 1000,
            "within_limits": self.within_limits,
        }


def measure(model: nn.Module, input_size: tuple[int, ...] = STUDENT_INPUT) -> Complexity:
    """Count `model` on one input of `input_size` (eval mode, on the model's device; its mode is restored)."""
    was_training = model.training
    try:
        stats = torchinfo.summary(model, input_size=input_size, verbose=0, mode="eval")
    finally:
        model.train(was_training)
    params, macs = int(stats.total_params), int(stats.total_mult_adds)
    int8 = params  # one byte per parameter
    ok = int8 <= MAX_PARAM_BYTES and macs <= MAX_MACS
    text = (
        f"params {params / 1e3:.2f} K, param_kb {int8 / 1e3:.1f} at int8 (limit {MAX_PARAM_BYTES / 1e3:.0f} kB); "
        f"MACs {macs / 1e6:.2f} M (limit {MAX_MACS / 1e6:.0f} M): {'within' if ok else 'OVER'} DCASE limits"
    )
    return Complexity(params, macs, int8, 2 * params, 4 * params, ok, text)


def measure_as_shipped(model: nn.Module, input_size: tuple[int, ...]) -> dict:
    """A shipped model measured the way the DCASE 2025 Task 1 check measures it (CPJKU/dcase2025_task1_inference,
    `complexity.py`): torchinfo's MACs of a float copy on the network input (a waveform here: the front end has no
    parameters and counts nothing), and parameter bytes summed over `model.parameters()` at each one's own dtype
    (1 byte per int8 weight, 4 per float32 bias). For the open int8 form (`asc_dist.ship.open_int8`)."""
    stats = torchinfo.summary(copy.deepcopy(model).float(), input_size=input_size, verbose=0, mode="eval")
    by_dtype: dict[str, int] = {}
    for p in model.parameters():
        key = str(p.dtype).removeprefix("torch.")
        by_dtype[key] = by_dtype.get(key, 0) + p.numel() * p.element_size()
    macs, param_bytes = int(stats.total_mult_adds), sum(by_dtype.values())
    return {"macs": macs, "param_bytes": param_bytes, "params": sum(p.numel() for p in model.parameters()), "param_bytes_by_dtype": by_dtype,
            "within_limits": macs <= MAX_MACS and param_bytes <= MAX_PARAM_BYTES}
