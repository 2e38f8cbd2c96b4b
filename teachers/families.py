"""Teacher families and their named sizes, looked up by name so a roster (YAML or CLI) can say
`family: cpresnet, size: default` and get the published architecture.

Every family has "tiny" (a forward+backward on 8 one-second clips in well under a second on a CPU, for
tests and the demo) and "default" (the realistic teacher). `TeacherSpec` is the typed config that crosses
the Ray boundary; `build_teacher` turns it (or plain arguments) into an `nn.Module` taking the log-mel of
its family's front end (`model.front_end`, a key of `asc_dist.nets.features.FRONT_ENDS`).
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from torch import nn

from asc_dist.errors import ConfigError
from teachers import bcresnet, cnn, cpresnet, mobilenet, passt

TEACHER_FAMILIES = ("passt", "cpresnet", "mobilenetv2", "bcresnet", "cnn")

_FAMILIES: dict[str, tuple[type[nn.Module], dict[str, dict]]] = {
    "passt": (passt.PaSSTTeacher, passt.SIZES),
    "cpresnet": (cpresnet.CPResNet, cpresnet.SIZES),
    "mobilenetv2": (mobilenet.MobileNetV2Teacher, mobilenet.SIZES),
    "bcresnet": (bcresnet.BCResNet, bcresnet.SIZES),
    "cnn": (cnn.CNN6, cnn.SIZES),
}


def teacher_class(family: str) -> type[nn.Module]:
    if family not in _FAMILIES:
        raise ConfigError(f"unknown teacher family {family!r}; choose one of {', '.join(TEACHER_FAMILIES)}")
    return _FAMILIES[family][0]


def teacher_sizes(family: str) -> tuple[str, ...]:
    teacher_class(family)
    return tuple(_FAMILIES[family][1])


def front_end_of(family: str) -> str:
    """Key of `asc_dist.nets.features.FRONT_ENDS` whose log-mel this family takes."""
    return teacher_class(family).front_end


def build_teacher(
    family: str, size: str = "default", n_classes: int = 10, weights: str | None = None, **kwargs: Any
) -> nn.Module:
    """Build a teacher from its named size; `kwargs` override the size's hyperparameters. `weights` is a
    local state dict (never downloaded); a head trained for another class count is dropped."""
    cls = teacher_class(family)
    sizes = _FAMILIES[family][1]
    if size not in sizes:
        raise ConfigError(f"unknown size {size!r} for teacher family {family!r}; choose one of {', '.join(sizes)}")
    options = {**sizes[size], **kwargs}
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "n_classes", "weights"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(
            f"teacher family {family!r} has no option {', '.join(unknown)}; valid options: {', '.join(sorted(accepted))}"
        )
    if n_classes < 2:
        raise ConfigError(f"a teacher needs at least 2 classes, got n_classes={n_classes}")
    if family == "passt":
        return cls(n_classes=n_classes, weights=weights, **options)
    model = cls(n_classes=n_classes, **options)
    if weights:
        passt.load_weights(model, weights, family=family)
    return model


@dataclass
class TeacherSpec:
    """One teacher of a roster. `options` holds any further constructor hyperparameters of the family
    (e.g. `base_channels`, `dropout`); patchout applies to PaSST only, `rho` to CP-ResNet only."""

    family: str
    size: str = "default"
    weights: str | None = None
    s_patchout_f: int = 0
    s_patchout_t: int = 0
    rho: int | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.size not in teacher_sizes(self.family):
            raise ConfigError(
                f"unknown size {self.size!r} for teacher family {self.family!r}; "
                f"choose one of {', '.join(teacher_sizes(self.family))}"
            )
        if self.family != "passt" and (self.s_patchout_f or self.s_patchout_t):
            raise ConfigError(f"s_patchout_f/s_patchout_t apply to PaSST only, not to {self.family!r}; remove them")
        if self.family != "cpresnet" and self.rho is not None:
            raise ConfigError(f"rho applies to CP-ResNet only, not to {self.family!r}; remove it")

    @property
    def front_end(self) -> str:
        return front_end_of(self.family)

    def build(self, n_classes: int = 10) -> nn.Module:
        kwargs = dict(self.options)
        if self.family == "passt":
            kwargs.update(s_patchout_f=self.s_patchout_f, s_patchout_t=self.s_patchout_t)
        if self.rho is not None:
            kwargs["rho"] = self.rho
        return build_teacher(self.family, self.size, n_classes, weights=self.weights, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TeacherSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown teacher field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(known))}")
        if "family" not in data:
            raise ConfigError(f"a teacher entry needs 'family' (one of {', '.join(TEACHER_FAMILIES)})")
        return cls(**data)
