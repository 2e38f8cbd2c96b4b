"""`python -m asc_dist.complexity dsflexinet:sm2 [--json] [--classes 10]`: params, MACs and sizes of a zoo model
by the DCASE rule (asc_dist/nets/complexity.py), counted on the fp32 design before conv-BN fusion.

`python -m asc_dist.complexity RUN/students/NAME` (a student with its int8 export) or a DCASE package folder: every
model that ships (general, and one per device) measured the way the DCASE 2025 check measures the submission:
torchinfo MACs on one window of waveform, parameter bytes by dtype of the int8 nets as they run (conv-BN fused,
int8 weights, float32 biases), so these differ slightly from the design count."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from asc_dist.cli import run_main
from asc_dist.errors import ConfigError
from asc_dist.nets.complexity import STUDENT_INPUT, measure


@dataclass(frozen=True)
class Resolver:
    """Turns `MODEL[:PRESET]` into (model, input size) for one group of model families (students, teachers)."""

    families: Callable[[], list[str]]
    build: Callable[[str, str | None, int], tuple[nn.Module, tuple[int, ...]]]


def _student_families() -> list[str]:
    from students.presets import STUDENTS

    return sorted(STUDENTS)


def _build_student(family: str, preset: str | None, n_classes: int) -> tuple[nn.Module, tuple[int, ...]]:
    from students.presets import build_student, student_presets

    return build_student(family, preset or student_presets(family)[0], n_classes=n_classes), STUDENT_INPUT


def _teacher_families() -> list[str]:
    """Teacher families, when the separately developed `teachers` package provides its families."""
    try:
        from teachers import families as registry
    except ImportError:
        return []
    return list(getattr(registry, "TEACHER_FAMILIES", ()))


def _build_teacher(family: str, preset: str | None, n_classes: int) -> tuple[nn.Module, tuple[int, ...]]:
    from asc_dist.nets.features import FRONT_ENDS
    from teachers.families import build_teacher

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m asc_dist.complexity", description=__doc__.splitlines()[0])
    parser.add_argument("model", help="MODEL[:PRESET], e.g. dsflexinet:sm2, serfr:w32, sp4sc:default; or a student folder / DCASE "
                        "package folder: its shipped models as the DCASE 2025 check measures them")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a line")
    parser.add_argument("--classes", type=int, default=10, help="number of output classes (default 10)")
    return parser


def measure_shipped(path: Path) -> dict:
    from asc_dist.ship.dcase_package import measure_package, measure_student

    return measure_student(path) if (path / "model.pt").is_file() or (path / "model_int8.pt").is_file() else measure_package(path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if Path(args.model).is_dir():
        measured = measure_shipped(Path(args.model))
        if args.json:
            print(json.dumps(measured))
        else:
            for name, m in measured.items():
                print(f"{name}: MACs {m['macs'] / 1e6:.2f} M, parameter bytes {m['param_bytes']:,} ({m['param_bytes_by_dtype']}): "
                      f"{'within' if m['within_limits'] else 'OVER'} DCASE limits")
        return 0
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
    run_main(main)
