"""Student models by name: `build_student("dsflexinet", "sm2")` is the one way the pipeline makes a student."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from asc_dist.errors import ConfigError
from students import dsflexinet, serfr, sp4sc


@dataclass(frozen=True)
class StudentFamily:
    """A model class, its config dataclass presets, and the paper it follows."""

    build: Callable[[Any], nn.Module]
    presets: Mapping[str, Any]
    paper: str


STUDENTS: dict[str, StudentFamily] = {
    "dsflexinet": StudentFamily(dsflexinet.DSFlexiNet, dsflexinet.PRESETS, "DS-FlexiNet, arXiv 2412.20722"),
    "serfr": StudentFamily(serfr.SERFRCNN, serfr.PRESETS, "SERFR-CNN, DCASE 2023 T1 report (Fei et al.)"),
    "sp4sc": StudentFamily(sp4sc.SP4SC, sp4sc.PRESETS, "SP4SC, DCASE 2021 T1a report (Puy et al.)"),
}


def _family(model: str) -> StudentFamily:
    if model not in STUDENTS:
        raise ConfigError(f"unknown student model {model!r}; choose one of {sorted(STUDENTS)}")
    return STUDENTS[model]


def student_presets(model: str) -> list[str]:
    return list(_family(model).presets)


def student_config(model: str, preset: str, n_classes: int = 10, norm: str = "rn", **overrides: Any) -> Any:
    """The preset's config dataclass with `n_classes`, `norm` (models that have one) and `overrides` applied.

    `norm` only applies to models with a selectable normalisation (DS-FlexiNet); the others always use BN.
    """
    family = _family(model)
    if preset not in family.presets:
        raise ConfigError(f"unknown preset {preset!r} for student {model!r}; choose one of {list(family.presets)}")
    base = family.presets[preset]
    fields = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown} for student {model!r}; valid: {sorted(fields)}")
    changes: dict[str, Any] = {"n_classes": n_classes, **overrides}
    if "norm" in fields:
        changes.setdefault("norm", norm)
    return dataclasses.replace(base, **changes)


def build_student(model: str, preset: str, n_classes: int = 10, norm: str = "rn", **overrides: Any) -> nn.Module:
    """Build a fresh (fp32, train-mode) student; unknown model, preset or option raises ConfigError."""
    return _family(model).build(student_config(model, preset, n_classes, norm, **overrides))
