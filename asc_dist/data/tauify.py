"""`python -m asc_dist.data tauify SRC OUT`: your own labelled recordings as a TAU-layout dataset every step reads.

What it writes (and why):
- each recording cut into `part_s` parts named `scene-city-location-segment-part-device.wav`, TAU's scheme,
  so a context teacher (asc_dist/training/context.py) reassembles the whole recording from its parts;
  `location` is the recording's group (e.g. UrbanSound8K's `freesound_id`), so the validation carve, which
  takes whole locations (asc_dist/data/table.py), never splits a group either;
- the last partial part is kept, zero-padded, when it holds at least half a part, and dropped otherwise; a
  recording shorter than one part is an error (or skipped with `--skip-short`);
- the test split by a column's values (`--test-column fold --test-values 3`: UrbanSound8K's own protocol) or a
  seeded fraction of groups; a group on both sides is refused;
- device variants: device `a` is the recording as it is; with `--dirs`, every training-split recording is
  also convolved with one impulse response per training device, and every test-split recording with those
  and one per unseen test device. The responses are drawn (seeded) from `--dirs` without overlap, and the
  unseen devices' responses are listed in `tauify.json` (`unseen_device_irs`) so DIR banks leave them out;
- audio is decoded by soundfile (wav, flac, ogg), mixed to mono and resampled once to `--sr`, written as
  16-bit PCM wav. The whole dataset is written to a temp folder and renamed: nothing half-written remains.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as taf

from asc_dist.data.decode import read_mono
from asc_dist.data.devices import load_irs
from asc_dist.data.table import write_layout
from asc_dist.errors import ConfigError, DatasetError
from asc_dist.run.atomic import atomic_path
from asc_dist.run.diskspace import full_disk_means
from asc_dist.run.writable import require_writable

log = logging.getLogger(__name__)
MANIFEST = "tauify.json"  # also read by asc_dist/training/ir_bank.py (unseen_device_irs)
BASE_DEVICE = "a"


@dataclass(frozen=True)
class TauifyConfig:
    src: str  # folder the labels CSV's file paths are relative to
    out: str
    labels: str | None = None  # default SRC/meta.csv
    file_column: str = "filename"
    label_column: str = "class"
    group_column: str = "freesound_id"
    test_column: str | None = None  # with test_values: rows whose value is listed form the test split
    test_values: tuple[str, ...] = ()
    test_fraction: float = 0.3  # otherwise: this share of the groups, seeded
    city: str | None = None  # default: SRC's folder name
    dirs: str | None = None
    train_devices: tuple[str, ...] = ("b", "c", "s1")
    test_devices: tuple[str, ...] = ("s4", "s5", "s6")
    sample_rate: int = 32000
    part_s: float = 1.0
    seed: int = 0
    skip_short: bool = False

    def labels_path(self) -> Path:
        return Path(self.labels) if self.labels else Path(self.src) / "meta.csv"

    def check(self) -> None:
        if self.part_s <= 0 or self.sample_rate < 1000:
            raise ConfigError(f"--part-s must be > 0 and --sr >= 1000 (got {self.part_s}, {self.sample_rate})")
        if self.test_column is None and not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"--test-fraction {self.test_fraction} must be in (0, 1), or give --test-column and --test-values")
        if self.test_column is not None and not self.test_values:
            raise ConfigError(f"--test-column {self.test_column} needs --test-values (e.g. 3, or 3,4)")
        names = (BASE_DEVICE, *self.train_devices, *self.test_devices)
        if len(set(names)) != len(names) or any(not re.fullmatch(r"[A-Za-z0-9]+", d) for d in names):
            raise ConfigError(f"device names must be distinct letters/digits other than '{BASE_DEVICE}' (got {', '.join(names)})")


@dataclass
class Recording:
    path: Path
    label: str
    group: str
    test: bool
    segment: int = 0  # index of the recording within its group


@dataclass
class TauifySummary:
    out: str
    recordings: int
    clips: dict[str, int]  # split -> clips
    devices: dict[str, str | None]  # device -> impulse response (None: the recording itself)
    dropped_tails: int
    skipped_short: list[str] = field(default_factory=list)


def _token(text: str) -> str:
    """A name field of a TAU file name: no '-' (the field separator), no path or odd characters."""
    token = re.sub(r"[^A-Za-z0-9_.]+", "_", str(text).strip()).strip("_.")
    return token or "x"


def read_recordings(cfg: TauifyConfig) -> list[Recording]:
    path = cfg.labels_path()
    if not path.is_file():
        raise DatasetError(f"labels CSV {path} does not exist; give --labels FILE (columns for file, label and group)")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        sample = fh.read(4096)
        fh.seek(0)
        delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
        rows = list(csv.DictReader(fh, delimiter=delimiter))
    if not rows:
        raise DatasetError(f"{path} lists no recordings")
    columns = [cfg.file_column, cfg.label_column, cfg.group_column] + ([cfg.test_column] if cfg.test_column else [])
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise DatasetError(f"{path} has no column {', '.join(missing)} (it has {', '.join(rows[0])}); name the right one with "
                           "--file-column / --label-column / --group-column / --test-column")
    src = Path(cfg.src).resolve()
    recs = []
    for line, row in enumerate(rows, start=2):
        name, label, group = (row[cfg.file_column] or "").strip(), (row[cfg.label_column] or "").strip(), (row[cfg.group_column] or "").strip()
        if not name or not label or not group:
            what = "file" if not name else "label" if not label else "group"
            raise DatasetError(f"{path} line {line}: the {what} is missing ({row}); fill it in or remove the row")
        file = (src / name).resolve()
        if not file.is_relative_to(src):
            raise DatasetError(f"{path} line {line}: {name} lies outside {src}; list files inside SRC")
        test = (row[cfg.test_column] or "").strip() in cfg.test_values if cfg.test_column else False
        recs.append(Recording(file, label, group, test))
    return recs


def split_by_group(recs: list[Recording], cfg: TauifyConfig) -> None:
    """Mark the test recordings (by column or a seeded fraction of groups); refuse a group on both sides."""
    if cfg.test_column is None:
        groups = sorted({r.group for r in recs})
        order = np.random.default_rng(cfg.seed).permutation(len(groups))
        take = max(1, round(cfg.test_fraction * len(groups)))
        test_groups = {groups[i] for i in order[:take]}
        for r in recs:
            r.test = r.group in test_groups
    sides: dict[str, set[bool]] = {}
    for r in recs:
        sides.setdefault(r.group, set()).add(r.test)
    both = sorted(g for g, s in sides.items() if len(s) == 2)
    if both:
        raise DatasetError(f"group {both[0]} ({len(both)} group(s) in all) has recordings on both sides of the test split "
                           f"({cfg.test_column} {', '.join(cfg.test_values)}): a group must stay on one side; fix the CSV")
    if all(r.test for r in recs) or not any(r.test for r in recs):
        raise DatasetError(f"the test split would hold {'every' if recs[0].test else 'no'} recording; change --test-values or --test-fraction")
    by_group: dict[str, list[Recording]] = {}
    for r in sorted(recs, key=lambda r: str(r.path)):
        by_group.setdefault(r.group, []).append(r)
    for members in by_group.values():
        for i, r in enumerate(members):
            r.segment = i


def read_resampled(path: Path, sr: int) -> np.ndarray:
    """The recording as float32 mono at `sr` (asc_dist/data/decode.py reads it; a broken file names itself)."""
    wave, file_sr = read_mono(path, fix="replace it or remove its row from the labels CSV")
    return wave if file_sr == sr else taf.resample(torch.from_numpy(wave), file_sr, sr).numpy()


def cut_parts(wave: np.ndarray, part: int) -> tuple[list[np.ndarray], bool]:
    """Whole parts, plus the last partial one zero-padded if it holds at least half a part; (parts, tail dropped)."""
    n_full, tail = divmod(len(wave), part)
    parts = [wave[i * part:(i + 1) * part] for i in range(n_full)]
    if tail and tail * 2 >= part:
        parts.append(np.pad(wave[n_full * part:], (0, part - tail)))
    return parts, bool(tail) and tail * 2 < part


def assign_devices(cfg: TauifyConfig) -> dict[str, tuple[str, np.ndarray] | None]:
    """Device -> impulse response (None for device a): training and unseen devices from disjoint, seeded draws."""
    devices: dict[str, tuple[str, np.ndarray] | None] = {BASE_DEVICE: None}
    if not cfg.dirs:
        return devices
    irs = load_irs(cfg.dirs, cfg.sample_rate)
    wanted = len(cfg.train_devices) + len(cfg.test_devices)
    if len(irs) < wanted:
        raise ConfigError(f"--dirs {cfg.dirs} holds {len(irs)} impulse responses; {wanted} devices need one each "
                          f"({', '.join(cfg.train_devices + cfg.test_devices)}): give fewer devices or more responses")
    order = np.random.default_rng([cfg.seed, 7]).permutation(len(irs))
    for device, i in zip(cfg.train_devices + cfg.test_devices, order):
        devices[device] = irs[i]
    return devices


def tauify(cfg: TauifyConfig) -> TauifySummary:
    cfg.check()
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not (out / MANIFEST).is_file():
        raise ConfigError(f"{out}: exists and is not a dataset tauify wrote (no {MANIFEST}); choose a new OUT folder")
    require_writable(out.parent, "the dataset's parent folder", "give OUT in a folder you can write")
    recs = read_recordings(cfg)
    split_by_group(recs, cfg)
    devices = assign_devices(cfg)
    if not cfg.dirs:
        log.info("tauify: no --dirs, so device %s only (give --dirs for training and unseen device variants)", BASE_DEVICE)
    city = _token(cfg.city or Path(cfg.src).resolve().name)
    part = round(cfg.part_s * cfg.sample_rate)
    meta, split_of = [], {}
    dropped, skipped, start, last_log = 0, [], time.monotonic(), time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    full = f"the disk under {out.parent} filled up while writing {out}; the partial dataset was removed. Free space there or give OUT on a disk with room"
    with full_disk_means(full), atomic_path(out) as tmp:
        (tmp / "audio").mkdir(parents=True)
        for n, rec in enumerate(recs, start=1):
            wave = read_resampled(rec.path, cfg.sample_rate)
            if len(wave) < part:
                if not cfg.skip_short:
                    raise DatasetError(f"{rec.path}: {len(wave) / cfg.sample_rate:.2f} s is shorter than one part ({cfg.part_s:g} s); "
                                       "remove its row, pass --skip-short, or a shorter --part-s")
                skipped.append(str(rec.path))
                continue
            names = [BASE_DEVICE, *cfg.train_devices, *(cfg.test_devices if rec.test else ())] if cfg.dirs else [BASE_DEVICE]
            identifier = f"{city}-{_token(rec.group)}"
            stem = f"{_token(rec.label)}-{identifier}-{rec.segment}"
            for device in names:
                ir = devices[device]
                variant = wave if ir is None else taf.fftconvolve(torch.from_numpy(wave), torch.from_numpy(ir[1].astype(np.float32)))[: len(wave)].numpy()
                parts, tail_dropped = cut_parts(variant, part)
                dropped += tail_dropped and device == BASE_DEVICE
                for k, piece in enumerate(parts):
                    name = f"audio/{stem}-{k}-{device}.wav"
                    sf.write(str(tmp / name), np.clip(piece, -1.0, 1.0), cfg.sample_rate, subtype="PCM_16")
                    meta.append((name, rec.label, identifier, device))
                    split_of[name] = "test" if rec.test else "train"
            if time.monotonic() - last_log > 10 or n == len(recs):
                rate = n / max(time.monotonic() - start, 1e-9)
                log.info("tauify: %d/%d recordings, %d clips | %.1f recordings/s | ETA %.0f s", n, len(recs), len(meta), rate, (len(recs) - n) / rate)
                last_log = time.monotonic()
        write_layout(tmp, meta, split_of)
        clips = {s: sum(v == s for v in split_of.values()) for s in ("train", "test")}
        summary = TauifySummary(str(out), len(recs) - len(skipped), clips,
                                {d: (ir[0] if ir else None) for d, ir in devices.items()}, int(dropped), skipped)
        manifest = {"generator": "asc_dist.data.tauify", "config": asdict(cfg), "summary": asdict(summary),
                    "unseen_device_irs": sorted(devices[d][0] for d in cfg.test_devices if devices.get(d)),
                    "rules": {"last_part": "kept zero-padded when at least half a part, else dropped",
                              "split": "by group: no group on both sides; validation carves whole groups (locations)"}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    log.info("tauify: wrote %s: %s clips (train/test), devices %s, %d tail(s) dropped", out, summary.clips,
             ", ".join(summary.devices), dropped)
    return summary
