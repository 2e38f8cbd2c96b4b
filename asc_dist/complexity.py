"""Model complexity by the DCASE rule (NeSsi; REFERENCE.md section 5), and its CLI.

Parameters and multiply-accumulates come from `torchinfo.summary(model, input_size)`: `total_params` and
`total_mult_adds`, counted on the fp32 model *before* conv-BN fusion (BN parameters and their MACs included),
exactly as NeSsi and CP-JKU do. Limits: 128 KB of parameter memory (128,000 int8 parameters) and 30 M MACs.

    python -m asc_dist.complexity dsflexinet:sm2 [--json] [--classes 10]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass

import torchinfo
from torch import nn

from asc_dist.errors import ConfigError

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
            "int8_kb": self.int8_bytes / 1000,
            "fp16_kb": self.fp16_bytes / 1000,
            "fp32_kb": self.fp32_bytes / 1000,
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
        f"params {params / 1e3:.2f} K = {int8 / 1e3:.1f} KB at int8 (limit {MAX_PARAM_BYTES / 1e3:.0f} KB); "
        f"MACs {macs / 1e6:.2f} M (limit {MAX_MACS / 1e6:.0f} M): {'within' if ok else 'OVER'} DCASE limits"
    )
    return Complexity(params, macs, int8, 2 * params, 4 * params, ok, text)


@dataclass(frozen=True)
class Resolver:
    """Turns `MODEL[:PRESET]` into (model, input size) for one group of model families (students, teachers)."""

    families: Callable[[], list[str]]
    build: Callable[[str, str | None, int], tuple[nn.Module, tuple[int, ...]]]


def _student_families() -> list[str]:
    from students.registry import STUDENTS

    return sorted(STUDENTS)


def _build_student(family: str, preset: str | None, n_classes: int) -> tuple[nn.Module, tuple[int, ...]]:
    from students.registry import build_student, student_presets

    return build_student(family, preset or student_presets(family)[0], n_classes=n_classes), STUDENT_INPUT


def _teacher_families() -> list[str]:
    """Teacher families, when the separately developed `teachers` package provides its registry."""
    try:
        from teachers import registry
    except ImportError:
        return []
    return list(getattr(registry, "TEACHER_FAMILIES", ()))


def _build_teacher(family: str, preset: str | None, n_classes: int) -> tuple[nn.Module, tuple[int, ...]]:
    from asc_dist.features import FRONT_ENDS
    from teachers.registry import build_teacher

    model = build_teacher(family, preset or "default", n_classes=n_classes)
    mel = FRONT_ENDS[getattr(model, "front_end", "student")]
    return model, (1, 1, mel.n_mels, mel.frames(mel.sample_rate))  # one 1-s clip


RESOLVERS: list[Resolver] = [Resolver(_student_families, _build_student), Resolver(_teacher_families, _build_teacher)]


def resolve(spec: str, n_classes: int = 10) -> tuple[nn.Module, tuple[int, ...]]:
    """`MODEL[:PRESET]` -> (model, input size of one 1-s clip of its front end)."""
    family, _, preset = spec.partition(":")
    known: list[str] = []
    for resolver in RESOLVERS:
        names = resolver.families()
        if family in names:
            return resolver.build(family, preset or None, n_classes)
        known += names
    raise ConfigError(f"unknown model {family!r} in {spec!r}; expected MODEL[:PRESET] with MODEL one of {known}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asc_dist.complexity", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="MODEL[:PRESET], e.g. dsflexinet:sm2, serfr:w32, sp4sc:default")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a line")
    parser.add_argument("--classes", type=int, default=10, help="number of output classes (default 10)")
    args = parser.parse_args(argv)
    if args.classes < 1:
        raise ConfigError(f"--classes must be >= 1, got {args.classes}")
    model, input_size = resolve(args.model, args.classes)
    result = measure(model, input_size)
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(f"{args.model} on {'x'.join(map(str, input_size))}: {result.limits}")
    return 0


if __name__ == "__main__":
    from asc_dist.cli import run_main

    run_main(main)
