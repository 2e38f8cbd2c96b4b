"""Read the TAU Urban Acoustic Scenes 2022/2023 Mobile development layout into a clip table.

Layout (nothing else about the dataset is assumed): `meta.csv` (tab-separated filename, scene_label,
identifier, source_label), `audio/*.wav`, `evaluation_setup/fold1_{train,evaluate,test}.csv`, and optionally
the DCASE 2024 training subsets `split{5,10,25,50,100}.csv` (in the root, `evaluation_setup/` or `split_setup/`).
The class list is the sorted set of scene labels in meta.csv. Splits: `train` = fold1_train minus the
validation carve-out, `val` = whole recording locations taken from fold1_train, `test` = fold1_evaluate.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asc_dist.errors import DatasetError

SPLITS = ("train", "val", "test")
SUBSET_PERCENTS = (5, 10, 25, 50, 100)
DEVICE_ORDER = ("a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6")
UNSEEN_DEVICES = ("s4", "s5", "s6")  # TAU22: devices of the test split only


def device_sort_key(device: str) -> tuple[int, str]:
    return (DEVICE_ORDER.index(device), device) if device in DEVICE_ORDER else (len(DEVICE_ORDER), device)


@dataclass(frozen=True)
class MetaRow:
    filename: str
    scene: str
    identifier: str
    device: str

    @property
    def city(self) -> str:
        return self.identifier.split("-")[0]


@dataclass
class TauLayout:
    """The raw contents of a TAU-layout folder, before any consistency check."""

    root: Path
    meta: dict[str, MetaRow]
    fold_train: list[tuple[str, str | None]]
    fold_evaluate: list[tuple[str, str | None]]
    fold_test: list[str]
    subsets: dict[int, list[str]] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)  # "name (file)" for each clip listed twice in one csv

    @property
    def classes(self) -> list[str]:
        return sorted({row.scene for row in self.meta.values()})


def _read_tsv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # a spreadsheet's UTF-8 BOM is not part of the header
            sample = fh.read(4096)
            fh.seek(0)
            delimiter = "\t" if "\t" in sample else ","
            return list(csv.DictReader(fh, delimiter=delimiter))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read {path}: {exc}") from None


def _pairs(path: Path) -> list[tuple[str, str | None]]:
    rows = _read_tsv(path)
    if rows and "filename" not in rows[0]:
        raise DatasetError(f"{path} has no 'filename' column (columns: {list(rows[0])}); expected TAU fold1 format")
    return [(r["filename"], r.get("scene_label") or None) for r in rows]


def _find_subset_file(root: Path, percent: int) -> Path | None:
    for folder in (root, root / "evaluation_setup", root / "split_setup"):
        path = folder / f"split{percent}.csv"
        if path.is_file():
            return path
    return None


def inside_root(root: Path, filenames: list[str], listed_in: Path) -> None:
    """Every clip path must stay inside the dataset folder: a row naming /etc/passwd or ../../x is refused.

    Lexical check (no symlink resolution), so a dataset whose audio/ is a symlink to another disk still works."""
    base = os.path.normpath(os.path.abspath(root))
    for name in filenames:
        full = os.path.normpath(os.path.join(base, name))
        if os.path.isabs(name) or not full.startswith(base + os.sep):
            raise DatasetError(f"{listed_in} names {name!r}, which lies outside the dataset folder {root}; clip paths must be "
                               "relative to it (e.g. audio/airport-lisbon-1000-40000-0-a.wav): fix that row")


def read_layout(root: str | Path) -> TauLayout:
    """Read meta.csv and the fold files; raise DatasetError when the layout itself is missing."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; pass the folder that holds meta.csv")
    meta_path = root / "meta.csv"
    if not meta_path.is_file():
        raise DatasetError(
            f"{meta_path} is missing: a TAU-layout dataset needs meta.csv (filename, scene_label, identifier, "
            "source_label); for the real TAU22 data unzip its meta archive into the dataset folder"
        )
    meta: dict[str, MetaRow] = {}
    rows = _read_tsv(meta_path)
    duplicates = _listed_twice([r.get("filename") or "" for r in rows], meta_path)
    inside_root(root, [r.get("filename") or "" for r in rows], meta_path)
    for r in rows:
        try:
            meta[r["filename"]] = MetaRow(r["filename"], r["scene_label"], r["identifier"], r["source_label"])
        except KeyError as exc:
            raise DatasetError(f"{meta_path} lacks column {exc}; expected filename, scene_label, identifier, source_label") from None
    if not meta:
        raise DatasetError(f"{meta_path} lists no clips")
    setup = root / "evaluation_setup"
    folds = {}
    for name in ("fold1_train", "fold1_evaluate", "fold1_test"):
        path = setup / f"{name}.csv"
        if not path.is_file():
            raise DatasetError(f"{path} is missing: the TAU layout needs evaluation_setup/{name}.csv")
        folds[name] = _pairs(path)
        inside_root(root, [f for f, _ in folds[name]], path)
        duplicates += _listed_twice([f for f, _ in folds[name]], path)
    subsets = {}
    for percent in SUBSET_PERCENTS:
        path = _find_subset_file(root, percent)
        if path is not None:
            subsets[percent] = [f for f, _ in _pairs(path)]
    return TauLayout(
        root=root,
        meta=meta,
        fold_train=folds["fold1_train"],
        fold_evaluate=folds["fold1_evaluate"],
        fold_test=[f for f, _ in folds["fold1_test"]],
        subsets=subsets,
        duplicates=duplicates,
    )


def _listed_twice(filenames: list[str], path: Path) -> list[str]:
    counts = Counter(filenames)
    return [f"{f} ({path.name}, {n} times)" for f, n in counts.items() if n > 1]


@dataclass
class ClipTable:
    """One row per clip: filename (the key everywhere), label index, scene, location, city, device, split."""

    classes: list[str]
    filename: np.ndarray  # object array of str
    label: np.ndarray  # int64 index into classes
    identifier: np.ndarray
    city: np.ndarray
    device: np.ndarray
    split: np.ndarray

    def __len__(self) -> int:
        return len(self.filename)

    def take(self, mask_or_index) -> "ClipTable":
        return ClipTable(
            self.classes,
            *(getattr(self, f)[mask_or_index] for f in ("filename", "label", "identifier", "city", "device", "split")),
        )

    def of_split(self, split: str) -> "ClipTable":
        return self.take(self.split == split)

    @property
    def devices(self) -> list[str]:
        return sorted(set(self.device.tolist()), key=device_sort_key)

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """{split: {device: {scene: n}}}."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for s, d, lab in zip(self.split, self.device, self.label):
            cell = out.setdefault(s, {}).setdefault(d, {})
            scene = self.classes[lab]
            cell[scene] = cell.get(scene, 0) + 1
        return out


def write_layout(root: Path, meta: list[tuple[str, str, str, str]], split_of: dict[str, str]) -> None:
    """Write what `read_layout` reads: meta.csv (filename, scene_label, identifier, source_label, in the order
    given) and evaluation_setup/fold1_{train,evaluate,test}.csv from each clip's split ("train" or "test")."""
    def tsv(path: Path, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
        path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")

    (root / "evaluation_setup").mkdir(parents=True, exist_ok=True)
    tsv(root / "meta.csv", ("filename", "scene_label", "identifier", "source_label"), meta)
    fold = {split: [(m[0], m[1]) for m in meta if split_of[m[0]] == split] for split in ("train", "test")}
    tsv(root / "evaluation_setup" / "fold1_train.csv", ("filename", "scene_label"), fold["train"])
    tsv(root / "evaluation_setup" / "fold1_evaluate.csv", ("filename", "scene_label"), fold["test"])
    tsv(root / "evaluation_setup" / "fold1_test.csv", ("filename",), [(f,) for f, _ in fold["test"]])


def group_folds(groups: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..k-1) per row, whole groups (recording locations) per fold, seeded: the same groups give
    the same folds wherever they are computed (a fold trial and the step that combines the folds)."""
    unique = sorted(set(np.asarray(groups).tolist()))
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of = {unique[j]: i % k for i, j in enumerate(order)}
    return np.array([fold_of[g] for g in np.asarray(groups).tolist()], dtype=np.int64)


def carve_validation(identifier: np.ndarray, label: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of training rows moved to validation: whole recording locations, per scene.

    For every scene, its locations are shuffled (seeded) and taken until they hold `fraction` of the scene's
    clips; a scene with a single location keeps it in training. No location ends up on both sides.
    """
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(f"validation fraction must be in [0, 1), got {fraction}")
    mask = np.zeros(len(identifier), dtype=bool)
    if fraction == 0.0:
        return mask
    rng = np.random.default_rng(seed)
    for lab in np.unique(label):
        rows = np.flatnonzero(label == lab)
        locations = np.array(sorted(set(identifier[rows].tolist())))
        if len(locations) < 2:
            continue
        rng.shuffle(locations)
        target = fraction * len(rows)
        taken = 0
        for loc in locations[:-1]:  # always leave one location for training
            if taken >= target:
                break
            loc_rows = rows[identifier[rows] == loc]
            mask[loc_rows] = True
            taken += len(loc_rows)
    return mask


def build_clip_table(
    layout: TauLayout, val_fraction: float = 0.15, seed: int = 0, subset_percent: int | None = None
) -> ClipTable:
    """Clip table of fold1_train (+ val carve-out) and fold1_evaluate; inconsistencies raise DatasetError."""
    classes = layout.classes
    class_index = {c: i for i, c in enumerate(classes)}
    train_files = [f for f, _ in layout.fold_train]
    if subset_percent is not None:
        if subset_percent not in layout.subsets:
            raise DatasetError(
                f"split{subset_percent}.csv not found under {layout.root} (looked in the root, evaluation_setup/ "
                f"and split_setup/); available subsets: {sorted(layout.subsets) or 'none'}"
            )
        keep = set(layout.subsets[subset_percent])
        train_files = [f for f in train_files if f in keep]
    test_files = [f for f, _ in layout.fold_evaluate]
    files = train_files + test_files
    missing = [f for f in files if f not in layout.meta]
    if missing:
        raise DatasetError(
            f"{len(missing)} clips in the fold files are not in {layout.root / 'meta.csv'} "
            f"(first: {', '.join(missing[:3])}); fix the fold files or meta.csv"
        )
    rows = [layout.meta[f] for f in files]
    table = ClipTable(
        classes=classes,
        filename=np.array(files, dtype=object),
        label=np.array([class_index[r.scene] for r in rows], dtype=np.int64),
        identifier=np.array([r.identifier for r in rows], dtype=object),
        city=np.array([r.city for r in rows], dtype=object),
        device=np.array([r.device for r in rows], dtype=object),
        split=np.array(["train"] * len(train_files) + ["test"] * len(test_files), dtype=object),
    )
    is_train = table.split == "train"
    val = carve_validation(table.identifier[is_train], table.label[is_train], val_fraction, seed)
    split = table.split.copy()
    split[np.flatnonzero(is_train)[val]] = "val"
    table.split = split
    return table


def load_clip_table(root: str | Path, val_fraction: float = 0.15, seed: int = 0, subset_percent: int | None = None) -> ClipTable:
    return build_clip_table(read_layout(root), val_fraction, seed, subset_percent)
