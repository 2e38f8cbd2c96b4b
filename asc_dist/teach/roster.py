"""Teacher rosters: a readable YAML list of teachers (family, size, seed, augmentation, optimiser).

`--n K` takes the first K entries; beyond the roster's length it starts over with new seeds. Global overrides
(epochs, learning rate, batch size, size) replace the per-teacher values.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import yaml

from asc_dist.errors import ConfigError

DEFAULT_ROSTER = Path(__file__).parent / "rosters" / "teachers12.yaml"
DEMO_ROSTER = Path(__file__).parent / "rosters" / "demo.yaml"


@dataclass(frozen=True)
class TeacherConfig:
    name: str
    family: str
    size: str = "default"
    seed: int = 0
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    fms_p: float = 0.0  # Freq-MixStyle probability (0 = off)
    fms_alpha: float = 0.4
    dir_p: float = 0.0  # device impulse response augmentation probability on device-a clips (0 = off)
    roll: int = 0  # max circular time shift, samples
    freqm: int = 0  # frequency mask width, mel bins
    timem: int = 0  # time mask width, frames
    mixup_alpha: float = 0.0
    s_patchout_f: int = 0  # PaSST structured patchout (frequency)
    s_patchout_t: int = 0
    weights: str | None = None  # local checkpoint (PaSST: AudioSet or fine-tuned weights)
    context_s: int = 1  # seconds of its own recording the teacher hears per clip (asc_dist.training.context); 1 = the clip
    folds: int = 0  # K > 1: out-of-fold targets (teachers --folds K, asc_dist/teach/folds.py)
    fold: int = -1  # the fold this trial holds out (0..K-1); -1: the teacher as a whole

    def to_dict(self) -> dict:
        return asdict(self)

    def config_hash(self) -> str:
        """Identity of what this teacher learns from; `weights` counts by path (no folds: as before folds existed)."""
        d = self.to_dict()
        if self.folds == 0:
            d.pop("folds"), d.pop("fold")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


_FIELDS = {f.name for f in fields(TeacherConfig)}


def _teacher(entry: dict, defaults: dict, where: str) -> TeacherConfig:
    merged = {**defaults, **entry}
    unknown = sorted(set(merged) - _FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown teacher setting(s) {unknown}; valid: {sorted(_FIELDS)}")
    for key in ("name", "family"):
        if key not in merged:
            raise ConfigError(f"{where}: every teacher needs a '{key}'")
    try:
        config = TeacherConfig(**merged)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    _check_types(config, where)
    return config


def _check_types(t: TeacherConfig, where: str) -> None:
    """YAML happily gives a string where a number belongs (`epochs: "two"`): say which setting, before Ray starts."""
    import re

    for f in fields(TeacherConfig):
        value = getattr(t, f.name)
        want = {"int": int, "float": (int, float), "str": str}.get(str(f.type).split(" |")[0].strip("'"))
        if value is None and "None" in str(f.type):
            continue
        if want is not None and (not isinstance(value, want) or isinstance(value, bool)):
            raise ConfigError(f"{where}: {f.name} must be {str(f.type).split(' |')[0]}, got {value!r}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", t.name):
        raise ConfigError(f"{where}: teacher name {t.name!r} must be letters, digits, '.', '_' or '-' (it names a folder)")


def load_roster(path: str | Path | None = None) -> list[TeacherConfig]:
    path = Path(path) if path else DEFAULT_ROSTER
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"roster file {path} does not exist; pass --roster with a YAML roster") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"roster file {path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("teachers"), list) or not doc["teachers"]:
        raise ConfigError(f"roster file {path} needs a non-empty 'teachers:' list (and optional 'defaults:')")
    unknown = sorted(set(doc) - {"defaults", "teachers"})
    if unknown:
        raise ConfigError(f"roster file {path}: unknown top-level key(s) {unknown}; a roster has 'defaults:' and 'teachers:'")
    defaults = doc.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"roster file {path}: 'defaults:' must be a mapping of teacher settings")
    teachers = [_teacher(t, defaults, f"{path} teacher {i + 1}") for i, t in enumerate(doc["teachers"])]
    names = [t.name for t in teachers]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"roster file {path} names teachers more than once: {dupes}")
    return teachers


def take(roster: list[TeacherConfig], n: int | None, **overrides) -> list[TeacherConfig]:
    """First `n` teachers; past the roster's end, its entries again with new seeds and suffixed names."""
    n = len(roster) if n is None else n
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    chosen = []
    for i in range(n):
        base = roster[i % len(roster)]
        cycle = i // len(roster)
        if cycle:
            base = replace(base, name=f"{base.name}-r{cycle}", seed=base.seed + 1000 * cycle)
        chosen.append(base)
    changes = {k: v for k, v in overrides.items() if v is not None}
    return [replace(t, **changes) for t in chosen]
