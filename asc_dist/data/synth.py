"""A synthetic look-alike of TAU Urban Acoustic Scenes 2022 Mobile, generated in seconds.

Why: tests, demos and CI need data with the real layout, scenes where model capacity and temporal context
matter as they do in real recordings, and a measurable device shift, without a 30 GB download. What mirrors
TAU22 Mobile:

- 10 scenes recorded at locations in cities; `fold1_train` / `fold1_evaluate` split by location.
- A recording (segment) is `parts_per_segment` = 10 consecutive 1-s parts, captured by several devices at
  once: the same scene audio rendered through each device, named `scene-city-location-segment-part-device.wav`.
- Scene evidence (`asc_dist.data.scenes`) is sparse in time and partly shared between classes: the bed tells
  a group of scenes apart, the class within the group shows in events every few seconds, and every location
  adds its own background. One second is often ambiguous, ten seconds much less so.
- Devices (`asc_dist.data.devices`) are simulated the way TAU's s1-s6 were: impulse response (MicIRP files
  from `dirs`, else generated), gain, compression and self-noise. `a` is the clean reference; b, c, s1-s3
  occur in both splits, s4-s6 only in fold1_evaluate and are drawn harsher, so a model trained on the
  others loses accuracy. With `dirs`, the files that simulate s4-s6 are recorded in synth.json
  (`unseen_device_irs`) so that a DIR bank built from the same folder leaves them out.

Device mix: `balanced` (default) gives every seen device the same number of train clips (each train segment
goes to the `devices_per_train_segment` least-used seen devices); `tau` records every train segment on `a`
and on one other seen device for 39 % of segments, so that `a` holds 72 % of the train clips as in TAU22 (DIR
augments `a` only). Every evaluate segment is rendered on all nine devices, so per-device accuracy gaps come
from the device alone. Default size: 400 train clips per seen device on average (2,400) + 300 evaluate
clips per device (2,700): 5,100 clips; 80 train and 30 evaluate segments, 240 + 270 recordings.

This module holds the config, the plan of cities, locations and segments, and the writing of the files.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from asc_dist.data.devices import DEVICES, SEEN_DEVICES, SEVERITY, UNSEEN_DEVICES, DeviceSpec, device_specs, load_irs
from asc_dist.data.scenes import (
    EVENT_OFFSET_DB,
    EVENT_SECONDS,
    EVENTS,
    SCENES,
    STYLES,
    SceneStyle,
    _rng,
    class_style,  # fmt: skip
    perturb_style,
    render_scene,
)
from asc_dist.data.table import write_layout
from asc_dist.errors import ConfigError
from asc_dist.run.atomic import atomic_path
from asc_dist.run.diskspace import full_disk_means

__all__ = [
    "CITIES", "DEVICES", "EVENTS", "EVENT_OFFSET_DB", "EVENT_SECONDS", "SCENES", "SEEN_DEVICES", "SEVERITY",
    "STYLES", "SUBTYPES", "UNSEEN_DEVICES", "DeviceSpec", "Location", "SceneStyle", "Segment", "SynthConfig",
    "SynthSummary", "device_specs", "generate", "load_irs", "perturb_style", "plan", "render_scene",
]  # fmt: skip

log = logging.getLogger(__name__)

CITIES = ("barcelona", "helsinki", "lisbon", "london", "lyon", "milan", "paris", "vienna")
SUBTYPES = {"PCM_16": 2**15 - 1, "PCM_24": 2**23 - 1}
DEVICE_MIXES = ("balanced", "tau")
TAU_EXTRA_DEVICE_P = 0.39  # a train segment also on one other seen device: a's share 1 / 1.39 = 72 %


@dataclass
class SynthConfig:
    """What to generate. `clips_per_device` counts fold1_train clips of each seen device (a, b, c, s1-s3)."""

    clips_per_device: int = 400
    seed: int = 0
    sample_rate: int = 44100
    duration_s: float = 1.0
    dirs: str | None = None  # folder of device impulse responses (*.wav); None: generated responses
    test_clips_per_device: int | None = None  # fold1_evaluate clips per device (all nine); None: 3/4 of train
    parts_per_segment: int = 10  # 1-s parts per recording, as in TAU22
    devices_per_train_segment: int = 3  # balanced mix only
    devices_per_test_segment: int = 3  # of all nine, balanced; 9 = every evaluate segment on every device
    device_mix: str = "balanced"  # or "tau": device a holds 72 % of the train clips
    bed_share: float = 0.7  # how far each scene's bed moves to its group's mean (0: own bed, 1: group bed)
    event_rate_scale: float = 0.35  # scales every event rate (lower: sparser evidence per second)
    event_gain_db: float = 0.0  # raises every event over the bed (rarer but clearer events: context matters more)
    locations_per_scene: int = 12
    test_location_fraction: float = 0.34
    location_spread: float = 1.0  # scales per-location perturbation of the class parameters (difficulty)
    subtype: str = "PCM_16"

    @property
    def n_test_clips(self) -> int:
        return self.test_clips_per_device if self.test_clips_per_device is not None else max(1, round(0.75 * self.clips_per_device))

    @property
    def clip_samples(self) -> int:
        return round(self.duration_s * self.sample_rate)

    def validate(self) -> None:
        checks = [
            (self.clips_per_device >= 1, "clips_per_device must be >= 1"),
            (self.n_test_clips >= 1, "test_clips_per_device must be >= 1"),
            (self.seed >= 0, "seed must be >= 0"),
            (8000 <= self.sample_rate <= 192000, "sample_rate must be in 8000..192000 Hz"),
            (0.1 <= self.duration_s <= 30, "duration_s must be in 0.1..30 s"),
            (self.parts_per_segment >= 1, "parts_per_segment must be >= 1"),
            (1 <= self.devices_per_train_segment <= len(SEEN_DEVICES), "devices_per_train_segment must be in 1..6"),
            (1 <= self.devices_per_test_segment <= len(DEVICES), "devices_per_test_segment must be in 1..9"),
            (self.locations_per_scene >= 3, "locations_per_scene must be >= 3 (two train, one test)"),
            (0 < self.test_location_fraction < 1, "test_location_fraction must be in (0, 1)"),
            (self.location_spread >= 0, "location_spread must be >= 0"),
            (self.device_mix in DEVICE_MIXES, f"device_mix must be one of {', '.join(DEVICE_MIXES)}"),
            (0 <= self.bed_share <= 1, "bed_share must be in [0, 1]"),
            (self.event_rate_scale > 0, "event_rate_scale must be > 0"),
            (self.subtype in SUBTYPES, f"subtype must be one of {sorted(SUBTYPES)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"synth config: {message}")


# ---------------------------------------------------------------- layout


@dataclass(frozen=True)
class Location:
    scene: str
    city: str
    loc_id: int
    split: str  # "train" (fold1_train) or "test" (fold1_evaluate)
    index: int  # global index; seeds this location's parameters

    @property
    def identifier(self) -> str:
        return f"{self.city}-{self.loc_id}"


@dataclass(frozen=True)
class Segment:
    location: Location
    seg_id: int
    devices: tuple[str, ...]
    index: int  # global index; seeds this segment's audio

    def filename(self, part: int, device: str) -> str:
        return f"audio/{self.location.scene}-{self.location.identifier}-{self.seg_id}-{part}-{device}.wav"


def plan(cfg: SynthConfig) -> list[Segment]:
    """Locations per scene (split by location), segments per scene and split, devices per segment.

    Balanced mix: train segments go to the `devices_per_train_segment` seen devices used least so far (ties
    broken at random), so every seen device gets at least `clips_per_device` train clips and at most one
    segment more. TAU mix: every train segment is on `a`, and with probability 0.39 also on the least-used
    other seen device; the train total stays about 6 x `clips_per_device`.
    """
    rng = _rng(cfg.seed, 0)
    n_loc, k, parts = cfg.locations_per_scene, cfg.devices_per_train_segment, cfg.parts_per_segment
    n_test_loc = min(n_loc - 2, max(1, round(n_loc * cfg.test_location_fraction)))
    per_segment = k if cfg.device_mix == "balanced" else 1 + TAU_EXTRA_DEVICE_P
    n_train_seg = math.ceil(math.ceil(cfg.clips_per_device / parts) * len(SEEN_DEVICES) / per_segment)
    n_test_seg = math.ceil(math.ceil(cfg.n_test_clips / parts) * len(DEVICES) / cfg.devices_per_test_segment)
    used_test = np.zeros(len(DEVICES), dtype=int)
    per_scene = {"train": math.ceil(n_train_seg / len(SCENES)), "test": math.ceil(n_test_seg / len(SCENES))}
    n_seg = len(SCENES) * sum(per_scene.values())
    loc_ids = rng.choice(np.arange(100, 100 + max(1000, 4 * n_loc * len(SCENES))), n_loc * len(SCENES), replace=False)
    seg_ids = rng.choice(np.arange(1000, 1000 + max(99000, 4 * n_seg)), n_seg, replace=False)
    used = np.zeros(len(SEEN_DEVICES), dtype=int)
    segments: list[Segment] = []
    for s, scene in enumerate(SCENES):
        cities = np.roll(np.resize(CITIES, n_loc), rng.integers(len(CITIES)))
        locs = [
            Location(scene, str(cities[j]), int(loc_ids[i]), "test" if r < n_test_loc else "train", i)
            for r, j in enumerate(rng.permutation(n_loc))
            for i in [s * n_loc + j]
        ]
        for split in ("train", "test"):
            pool = [loc for loc in locs if loc.split == split]
            for j in range(per_scene[split]):
                if split == "test":
                    chosen = np.sort(np.lexsort((rng.random(len(used_test)), used_test))[: cfg.devices_per_test_segment])
                    used_test[chosen] += 1
                    devices = tuple(DEVICES[d] for d in chosen)
                elif cfg.device_mix == "balanced":
                    chosen = np.sort(np.lexsort((rng.random(len(used)), used))[:k])
                    used[chosen] += 1
                    devices = tuple(SEEN_DEVICES[d] for d in chosen)
                else:
                    devices = ("a",)
                    if rng.random() < TAU_EXTRA_DEVICE_P:
                        other = 1 + int(np.lexsort((rng.random(len(used) - 1), used[1:]))[0])
                        used[other] += 1
                        devices = ("a", SEEN_DEVICES[other])
                segments.append(Segment(pool[j % len(pool)], int(seg_ids[len(segments)]), devices, len(segments)))
    return segments


# ---------------------------------------------------------------- generation


@dataclass
class SynthSummary:
    """What was written: clips per split x device and per split x scene, devices used, and wall time."""

    out_dir: Path
    n_clips: int
    by_device: dict[str, dict[str, int]]  # split -> device -> clips
    by_scene: dict[str, dict[str, int]]  # split -> scene -> clips
    locations: dict[str, int]  # split -> recording locations
    devices: dict[str, str]  # device -> impulse response source
    peak: float  # largest absolute sample before quantisation (> 1 means clipping)
    wall_s: float

    def table(self) -> str:
        splits = list(self.by_device)
        head = f"{'device':<8}" + "".join(f"{s:>8}" for s in splits) + "  impulse response"
        rows = [head]
        for dev in DEVICES:
            counts = "".join(f"{self.by_device[s].get(dev, 0):>8}" for s in splits)
            rows.append(f"{dev:<8}{counts}  {self.devices[dev]}")
        rows.append(f"{'total':<8}" + "".join(f"{sum(self.by_device[s].values()):>8}" for s in splits))
        rows.append(f"{'places':<8}" + "".join(f"{self.locations[s]:>8}" for s in splits))
        return f"{self.n_clips} clips in {self.out_dir} ({self.wall_s:.1f} s, peak {self.peak:.2f})\n" + "\n".join(rows)

    __str__ = table


def _write_wav(path: Path, x: np.ndarray, sr: int, subtype: str) -> None:
    """Quantise explicitly (round, clip) so the bytes depend on nothing but the samples."""
    full = SUBTYPES[subtype]
    q = np.round(np.clip(x, -1.0, 1.0) * full)
    data = q.astype(np.int16) if subtype == "PCM_16" else q.astype(np.int32) << 8
    buf = io.BytesIO()  # libsndfile fsyncs real files on close; one write of the finished bytes is much faster
    sf.write(buf, data, sr, subtype=subtype, format="WAV")
    path.write_bytes(buf.getvalue())


def generate(
    out_dir: str | Path, cfg: SynthConfig | None = None, progress: Callable[[int, int], None] | None = None
) -> SynthSummary:
    """Write the dataset to `out_dir` atomically (temp sibling, renamed at the end).

    An existing `out_dir` is replaced only if it is empty or was written by this generator (has synth.json).
    `progress(done, total)` is called after each segment.
    """
    cfg = cfg or SynthConfig()
    cfg.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "synth.json").is_file())):
        raise ConfigError(f"{out_dir}: exists and is not a synthetic dataset (no synth.json); choose a new --out folder")
    start = time.perf_counter()
    sr, n_clip, parts = cfg.sample_rate, cfg.clip_samples, cfg.parts_per_segment
    devices = device_specs(cfg.seed, cfg.sample_rate, cfg.dirs)
    segments = plan(cfg)
    styles = {}
    meta: list[tuple[str, str, str, str]] = []
    splits: dict[str, str] = {}
    peak = 0.0
    full = (f"the disk under {out_dir.parent} filled up while writing the synthetic dataset {out_dir}; the partial dataset was "
            "removed. Free space there or pass --out (pipeline: --run) on a disk with room")
    with full_disk_means(full), atomic_path(out_dir) as tmp:
        (tmp / "audio").mkdir(parents=True)
        (tmp / "evaluation_setup").mkdir()
        for done, seg in enumerate(segments, start=1):
            loc = seg.location
            if loc.index not in styles:
                base = class_style(loc.scene, cfg.bed_share, cfg.event_rate_scale, cfg.event_gain_db)
                styles[loc.index] = perturb_style(base, _rng(cfg.seed, 1, loc.index), cfg.location_spread)
            scene = render_scene(styles[loc.index], n_clip * parts, sr, _rng(cfg.seed, 2, seg.index))
            for dev in seg.devices:
                y = devices[dev].apply(scene, sr, _rng(cfg.seed, 5, seg.index, DEVICES.index(dev)))
                peak = max(peak, float(np.abs(y).max()))
                for part in range(parts):
                    name = seg.filename(part, dev)
                    _write_wav(tmp / name, y[part * n_clip : (part + 1) * n_clip], sr, cfg.subtype)
                    meta.append((name, loc.scene, loc.identifier, dev))
                    splits[name] = loc.split
            if progress:
                progress(done, len(segments))
            if done % max(1, len(segments) // 10) == 0 or done == len(segments):
                log.info("synth: %d/%d segments, %d clips", done, len(segments), len(meta))
        meta.sort()
        write_layout(tmp, meta, splits)
        held_out = sorted({devices[d].source for d in UNSEEN_DEVICES if cfg.dirs})
        if held_out:
            log.info("synth: impulse responses of the unseen devices, left out of any DIR bank: %s", ", ".join(held_out))
        info = {"generator": "asc_dist.data.synth", "config": asdict(cfg),
                "devices": {name: spec.describe() for name, spec in devices.items()},
                "unseen_device_irs": held_out}  # fmt: skip
        (tmp / "synth.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    if peak > 1.0:
        log.warning("synth: peak %.2f > 1, some samples were clipped", peak)
    by_split = {s: [m for m in meta if splits[m[0]] == s] for s in ("train", "test")}
    return SynthSummary(
        out_dir=out_dir,
        n_clips=len(meta),
        by_device={s: dict(sorted(Counter(m[3] for m in rows).items())) for s, rows in by_split.items()},
        by_scene={s: dict(sorted(Counter(m[1] for m in rows).items())) for s, rows in by_split.items()},
        locations={s: len({m[2] for m in rows}) for s, rows in by_split.items()},
        devices={name: spec.source for name, spec in devices.items()},
        peak=peak,
        wall_s=time.perf_counter() - start,
    )
