"""Which students the study trains: DS-FlexiNet's (arXiv 2412.20722) Tables IV, V and II as rows of student configs.

Every row is the paper's student recipe (DS-FlexiNet, RN, Freq-MixStyle 0.4 / 0.3, Auto-DIR p 0.6 with tau
from the data, time roll, frequency masking, fused-teacher KD) with one thing changed:
- Table IV (what the student learns from): no KD (label loss only), the best single teacher (chosen on val
  accuracy), the average of the teachers, the fusion;
- Table V (device generalisation): BN vs RN, each with plain DIR vs Auto-DIR (Freq-MixStyle on);
- Table II (size and int8): sm1-sm4, fp32 and int8 after QAT;
- Table D (device-aware inference, DCASE 2025 Task 1): the general student against one copy per training device
  fine-tuned from it (`asc_dist.distill.devices`), each test clip scored by its device's copy (unseen: the general);
- Table KD (a diagnosis, not in the paper): no KD against fused KD at other temperatures, label weights and
  loss reductions (Hinton et al. 2015, arXiv 1503.02531, for T; CP-JKU's `cpjku` reduction vs `batchmean`).
Rows that are the same configuration (the default recipe appears in all three tables) train once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from asc_dist.run.layout import RunLayout


@dataclass(frozen=True)
class Row:
    table: str  # "IV", "V" or "II"
    label: str
    changes: tuple[tuple[str, object], ...] = ()  # StudentConfig fields that differ from the recipe

    @property
    def key(self) -> str:
        """Identity of the configuration (shared rows have one key)."""
        return json.dumps(sorted(self.changes), default=str)


@dataclass(frozen=True)
class StudyProfile:
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int = 24
    qat_epochs: int = 2
    tables: tuple[str, ...] = ("IV", "V", "II")
    # Recipe fields the user changed for the whole study (e.g. --preset sm1); part of every student's id.
    overrides: tuple[tuple[str, object], ...] = ()
    presets: tuple[str, ...] = ("sm1", "sm2", "sm3", "sm4")
    recipe: dict = field(default_factory=lambda: {
        "model": "dsflexinet", "preset": "sm2", "norm": "rn", "targets": "fused", "fms_p": 0.4, "fms_alpha": 0.3,
        "adir_p": 0.6, "adir_tau": "auto", "dir_p": 0.0, "roll_s": 0.125, "freqm": 48,
    })  # fmt: skip


TABLES = ("IV", "V", "II", "KD", "D")
DEVICE_EPOCHS = 3  # the device copies' fine-tuning (a few epochs at a tenth of the learning rate, as the DCASE 2025 baseline)

STUDY_PROFILES = {
    # Two CPU cores, 3 seeds, QAT 2 epochs, 24 epochs: long enough for both arms to converge. On the real-audio set
    # (docs/kd_diagnosis.md) no KD and KD students plateau on val by epoch 14-20; at 8 epochs KD's lead (+3.4 on test)
    # was mostly a faster start and shrank to +0.8 at 24. The synthetic default took about 50 minutes at 8 epochs
    # (README), so about 2.5 hours now; `--epochs 8` for the quick version.
    "study": StudyProfile(),
    # TAU22 on GPUs: the paper's length (CP-JKU train students 150-250 epochs).
    "full": StudyProfile(epochs=150, qat_epochs=24),
}


def best_single_teacher(run_dir: Path) -> str:
    """The teacher with the best validation accuracy in RUN/teachers.json (chosen on val, never on test)."""
    teachers = json.loads(RunLayout.of(run_dir).teachers_manifest.read_text())["teachers"]
    scored = [(r.get("val_acc") or 0.0, name) for name, r in teachers.items()]
    return max(scored)[1]


def rows(profile: StudyProfile, best_teacher: str) -> list[Row]:
    out: list[Row] = []
    if "IV" in profile.tables:
        out += [Row("IV", "no KD", (("targets", "none"),)),
                Row("IV", f"best single teacher ({best_teacher})", (("targets", f"teacher:{best_teacher}"),)),
                Row("IV", "average of teachers", (("targets", "average"),)),
                Row("IV", "fused teachers", ())]  # fmt: skip
    if "V" in profile.tables:
        for norm in ("bn", "rn"):
            out.append(Row("V", f"{norm.upper()} + DIR", (("adir_p", 0.0), ("dir_p", 0.6), ("norm", norm))))
            out.append(Row("V", f"{norm.upper()} + ADIR", (("norm", norm),) if norm == "bn" else ()))
    if "II" in profile.tables:
        for preset in profile.presets:
            out.append(Row("II", preset, (("preset", preset), ("qat", True))))
    if "KD" in profile.tables:
        out += [Row("KD", "no KD", (("targets", "none"),)),
                Row("KD", "fused teachers", ()),
                Row("KD", "fused T1", (("temperature", 1.0),)),
                Row("KD", "fused T4", (("temperature", 4.0),)),
                Row("KD", "fused lambda 0.3", (("kd_lambda", 0.3),)),
                Row("KD", "fused batchmean", (("kd_reduction", "batchmean"),))]  # fmt: skip
    if "D" in profile.tables:
        out += [Row("D", "general", ()), Row("D", "device-specific", (("device_epochs", DEVICE_EPOCHS),))]
    return out


def general_of(row: Row) -> Row | None:
    """For a device-specific row, the row of the general student its copies are fine-tuned from (else None)."""
    changes = dict(row.changes)
    if not changes.get("device_epochs"):
        return None
    return Row(row.table, "general", tuple((k, v) for k, v in row.changes if k not in ("device_epochs", "device_lr")))


def select(plan: list[Row], wanted: list[str] | None) -> list[Row]:
    """The rows whose label is, or starts with, one of `wanted` (all rows when None); an unmatched name is an error."""
    if not wanted:
        return plan
    unknown = [w for w in wanted if not any(r.label == w or r.label.startswith(w) for r in plan)]
    if unknown:
        labels = sorted({r.label for r in plan})
        raise ValueError(f"--rows {','.join(unknown)} matches no row of the chosen tables; rows: {'; '.join(labels)}")
    return [r for r in plan if any(r.label == w or r.label.startswith(w) for w in wanted)]
