"""`check`: every problem in a TAU-layout dataset, counted by kind, without decoding audio.

Reads only wav headers (soundfile.info), so it is fast enough to run before every pack. Expected sample rate,
channel count and duration default to the most common values in the dataset unless given.
"""

from __future__ import annotations

import collections
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from asc_dist.data.table import SPLITS, TauLayout, build_clip_table, device_sort_key, read_layout
from asc_dist.errors import DatasetError

PROBLEM_HINTS = {
    "layout": "the folder does not follow the TAU layout",
    "missing": "files listed in meta.csv or the fold files but absent from disk (restore them, or drop them from the csvs)",
    "corrupt": "unreadable or corrupt wav files (re-extract them from the archive)",
    "duration": "clips whose duration differs from the rest",
    "sample_rate": "clips with an unexpected sample rate",
    "channels": "clips with an unexpected channel count",
    "not_in_meta": "split files name clips that meta.csv lacks",
    "label_mismatch": "split files give a scene label that differs from meta.csv",
    "duplicate": "clips listed more than once in one csv (they would be packed and trained on twice: drop the repeats)",
}
RARE_LABEL_SHARE = 0.2  # a label with fewer clips than this share of the median label's is named (a typo?)


@dataclass
class CheckReport:
    root: Path
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # worth a look, not a reason to refuse the dataset
    expected: dict[str, float] = field(default_factory=dict)
    n_files: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, kind: str, item: str) -> None:
        self.problems.setdefault(kind, []).append(item)

    def format(self, max_names: int = 3) -> str:
        lines = [f"dataset {self.root}: {self.n_files} clips listed, {len(self.classes)} classes"]
        if self.expected:
            lines.append("expected: " + ", ".join(f"{k} {v:g}" for k, v in self.expected.items()))
        for split in SPLITS:
            per_device = self.counts.get(split)
            if not per_device:
                continue
            short = [c[:7] for c in self.classes]
            lines.append(f"\n[{split}] clips per device x scene")
            lines.append(f"{'device':>7} " + " ".join(f"{s:>7}" for s in short) + f" {'total':>7}")
            for device in sorted(per_device, key=device_sort_key):
                row = [per_device[device].get(c, 0) for c in self.classes]
                lines.append(f"{device:>7} " + " ".join(f"{n:>7}" for n in row) + f" {sum(row):>7}")
        if self.problems:
            lines.append("")
            for kind, items in self.problems.items():
                shown = ", ".join(items[:max_names]) + (", ..." if len(items) > max_names else "")
                lines.append(f"problem {kind}: {len(items)} {PROBLEM_HINTS.get(kind, '')}: {shown}")
        else:
            lines.append("\nno problems found")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _consistency(layout: TauLayout, report: CheckReport) -> None:
    for name, pairs in (("fold1_train", layout.fold_train), ("fold1_evaluate", layout.fold_evaluate)):
        for filename, label in pairs:
            row = layout.meta.get(filename)
            if row is None:
                report.add("not_in_meta", f"{filename} ({name})")
            elif label is not None and label != row.scene:
                report.add("label_mismatch", f"{filename} ({name}: {label}, meta: {row.scene})")
    for filename in layout.fold_test:
        if filename not in layout.meta:
            report.add("not_in_meta", f"{filename} (fold1_test)")
    for percent, files in layout.subsets.items():
        for filename in files:
            if filename not in layout.meta:
                report.add("not_in_meta", f"{filename} (split{percent})")


def _label_warnings(layout: TauLayout, report: CheckReport) -> None:
    """Labels that look like typos (far rarer than the rest), labels missing from a split, and no validation split."""
    import numpy as np

    table = build_clip_table(layout, val_fraction=0.15)
    per_label = Counter(row.scene for row in layout.meta.values())
    median = float(np.median(list(per_label.values())))
    for label, n in sorted(per_label.items()):
        if n < RARE_LABEL_SHARE * median:
            report.warnings.append(f"label {label!r} has {n} clip(s) against a median of {median:g} per label: a typo in meta.csv? "
                                   "(it becomes a class of its own)")
    for split in ("train", "test"):
        present = {table.classes[i] for i in table.label[table.split == split]}
        missing = [c for c in table.classes if c not in present]
        if missing and (table.split == split).any():
            report.warnings.append(f"the {split} split has no clip of {', '.join(missing)}")
    if not (table.split == "val").any():
        report.warnings.append("no validation split: every class of fold1_train comes from one location, so none can be carved "
                               "(--val-fraction); fusion and students need val: add locations or recordings")


def _most_common(values: list) -> float | None:
    return collections.Counter(values).most_common(1)[0][0] if values else None


def check_dataset(
    root: str | Path,
    sample_rate: int | None = None,
    channels: int | None = None,
    duration_s: float | None = None,
) -> CheckReport:
    report = CheckReport(root=Path(root))
    try:
        layout = read_layout(root)
    except DatasetError as exc:
        report.add("layout", str(exc))
        return report
    report.classes = layout.classes
    _consistency(layout, report)
    listed = sorted(set(layout.meta) | {f for f, _ in layout.fold_train} | {f for f, _ in layout.fold_evaluate} | set(layout.fold_test))
    report.n_files = len(listed)
    infos = {}
    for filename in listed:
        path = layout.root / filename
        if not path.is_file():
            report.add("missing", filename)
            continue
        try:
            info = sf.info(str(path))
            if info.frames <= 0:
                raise RuntimeError("no audio frames")
            infos[filename] = info
        except Exception:  # noqa: BLE001 - libsndfile raises several types for broken files
            report.add("corrupt", filename)
    sr = sample_rate or _most_common([i.samplerate for i in infos.values()])
    ch = channels or _most_common([i.channels for i in infos.values()])
    dur = duration_s or _most_common([round(i.frames / i.samplerate, 3) for i in infos.values()])
    if sr:
        report.expected = {"sample_rate": sr, "channels": ch, "duration_s": dur}
    for filename, info in infos.items():
        if info.samplerate != sr:
            report.add("sample_rate", f"{filename} ({info.samplerate} Hz)")
        if info.channels != ch:
            report.add("channels", f"{filename} ({info.channels} ch)")
        if abs(info.frames / info.samplerate - dur) > 1e-3:
            report.add("duration", f"{filename} ({info.frames / info.samplerate:.3f} s)")
    for item in layout.duplicates:
        report.add("duplicate", item)
    if not report.problems.get("not_in_meta"):
        report.counts = build_clip_table(layout, val_fraction=0.0).counts()
        _label_warnings(layout, report)
    return report
