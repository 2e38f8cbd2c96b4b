"""A synthetic look-alike of TAU Urban Acoustic Scenes 2022 Mobile, generated in seconds.

Why: tests, demos and CI need data with the real layout, scenes that are learnable but not trivially so,
and a measurable device shift, without a 30 GB download. What mirrors TAU22 Mobile:

- 10 scenes recorded at locations in cities; `fold1_train` / `fold1_evaluate` split by location.
- A segment (`parts_per_segment` consecutive 1-s parts) is captured by several devices at once: the same
  scene audio rendered through each device, named `scene-city-location-segment-part-device.wav`.
- Each scene is a mixture of a coloured noise bed, engine hum, amplitude modulation, reverberation and
  event textures (steps, voices, chimes, squeals, pass-bys, birds, clicks). Class parameters overlap
  (metro/tram, street_pedestrian/public_square, shopping_mall/airport) and every location draws its own
  perturbation of them, so generalising to unseen locations is the hard part, as in TAU.
- Devices are simulated the way TAU's s1-s6 were: convolution with a device impulse response (MicIRP files
  from `dirs`, else a generated band-pass with resonances), then gain, compression and self-noise. `a` is
  the clean reference; b, c, s1-s3 occur in both splits, s4-s6 only in fold1_evaluate and are drawn
  harsher (they lose the bass the seen devices keep, deviate further from flat, and are noisier; with
  `dirs` they get the most coloured third of the responses) so a model trained on the others loses accuracy.

Differences from TAU, on purpose: train devices are balanced (each train segment goes to the
`devices_per_train_segment` least-used seen devices; TAU22 has 10k clips of `a` and 750 of each other) and
every evaluate segment is rendered on all nine devices, so per-device accuracy gaps come from the device alone.
Default size: 200 train clips per seen device (1200) + 100 evaluate clips per device (900), 2100 clips.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as taf

from asc_dist.atomic import atomic_path
from asc_dist.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

SCENES = ("airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
          "street_pedestrian", "street_traffic", "tram")  # fmt: skip
DEVICES = ("a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6")
SEEN_DEVICES = DEVICES[:6]
UNSEEN_DEVICES = DEVICES[6:]
CITIES = ("barcelona", "helsinki", "lisbon", "london", "lyon", "milan", "paris", "vienna")
EVENTS = ("steps", "voice", "chime", "squeal", "pass", "bird", "click")
SUBTYPES = {"PCM_16": 2**15 - 1, "PCM_24": 2**23 - 1}


@dataclass
class SynthConfig:
    """What to generate. `clips_per_device` counts fold1_train clips of each seen device (a, b, c, s1-s3)."""

    clips_per_device: int = 200
    seed: int = 0
    sample_rate: int = 44100
    duration_s: float = 1.0
    dirs: str | None = None  # folder of device impulse responses (*.wav); None: generated responses
    test_clips_per_device: int | None = None  # fold1_evaluate clips per device (all nine); None: half of train
    parts_per_segment: int = 2
    devices_per_train_segment: int = 3
    locations_per_scene: int = 12
    test_location_fraction: float = 0.34
    location_spread: float = 1.0  # scales per-location perturbation of the class parameters (difficulty)
    subtype: str = "PCM_16"

    @property
    def n_test_clips(self) -> int:
        return self.test_clips_per_device if self.test_clips_per_device is not None else max(1, self.clips_per_device // 2)

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
            (self.locations_per_scene >= 3, "locations_per_scene must be >= 3 (two train, one test)"),
            (0 < self.test_location_fraction < 1, "test_location_fraction must be in (0, 1)"),
            (self.location_spread >= 0, "location_spread must be >= 0"),
            (self.subtype in SUBTYPES, f"subtype must be one of {sorted(SUBTYPES)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"synth config: {message}")


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """One independent stream per (purpose, index): results do not depend on generation order or size."""
    return np.random.default_rng([seed, *keys])


def _db(x: float | np.ndarray) -> float | np.ndarray:
    return 10.0 ** (np.asarray(x) / 20.0)


# ---------------------------------------------------------------- scenes


@dataclass(frozen=True)
class SceneStyle:
    """Class parameters of one scene (or one location's perturbed copy). Rates are events per second."""

    tilt_db_oct: float  # noise-bed colour, dB per octave around 1 kHz
    lowpass_hz: float
    bed_db: float  # noise-bed RMS, dBFS
    hum_hz: float
    hum_db: float
    am_hz: float
    am_depth: float
    rt60_s: float
    wet: float
    snr_db: float  # event peak level over the bed
    rates: tuple[float, ...]  # per EVENTS entry


def _style(*v: float) -> SceneStyle:
    return SceneStyle(*v[:10], rates=tuple(v[10:]))


# Overlapping pairs by design: metro/tram/bus, street_pedestrian/public_square, shopping_mall/airport.
#   tilt  lowp   bed  hum_hz hum_db am_hz am_d  rt60  wet  snr | steps voice chime squeal pass bird click
STYLES = {
    "airport":           _style(-3.5, 7000, -42, 60, -62, 0.25, .10, 1.40, .55, 6, 1.2, 1.0, .40, .00, .05, .0, .7),
    "shopping_mall":     _style(-5.0, 6500, -37, 60, -60, 0.25, .10, 0.80, .35, 5, 2.0, 2.2, .06, .00, .00, .0, .3),
    "metro_station":     _style(-5.0, 6000, -36, 50, -44, 0.30, .15, 1.70, .55, 7, 1.2, 0.7, .20, .60, .50, .0, .4),
    "metro":             _style(-7.0, 2800, -30, 70, -36, 1.50, .30, 0.30, .20, 4, 0.2, 0.5, .05, .50, .10, .0, 1.6),
    "tram":              _style(-5.5, 4200, -33, 100, -42, 1.10, .30, 0.35, .20, 5, 0.2, 0.6, .20, .60, .15, .0, .9),
    "bus":               _style(-7.5, 2400, -31, 45, -34, 0.80, .25, 0.30, .20, 5, 0.2, 0.6, .08, .15, .20, .0, .5),
    "park":              _style(-3.0, 9000, -46, 50, -70, 0.20, .20, 0.10, .05, 9, 0.5, 0.3, .00, .00, .15, 2.5, .1),
    "public_square":     _style(-3.2, 8000, -43, 50, -64, 0.30, .15, 0.25, .10, 7, 1.0, 0.9, .03, .03, .20, 1.0, .3),
    "street_pedestrian": _style(-4.5, 7000, -37, 50, -62, 0.30, .15, 0.30, .12, 7, 2.6, 2.0, .02, .05, .60, .15, .4),
    "street_traffic":    _style(-5.5, 5000, -34, 40, -48, 0.40, .45, 0.10, .05, 6, 0.3, 0.3, .00, .10, 1.4, .1, .2),
}  # fmt: skip
EVENT_OFFSET_DB = {"steps": 4, "voice": -2, "chime": -2, "squeal": -6, "pass": 0, "bird": -4, "click": 2}
EVENT_SECONDS = {"steps": 0.08, "voice": 0.6, "chime": 0.8, "squeal": 0.8, "pass": 1.5, "bird": 0.15, "click": 0.01}


def perturb_style(style: SceneStyle, rng: np.random.Generator, spread: float) -> SceneStyle:
    """A location's own version of its class: level, colour, hum, modulation, room and event rates all move."""
    n = lambda s: rng.normal(0.0, s * spread)  # noqa: E731
    octave = lambda s: 2.0 ** n(s)  # noqa: E731
    return replace(
        style,
        tilt_db_oct=style.tilt_db_oct + n(0.5),
        lowpass_hz=style.lowpass_hz * octave(0.25),
        bed_db=style.bed_db + n(1.7),
        hum_hz=style.hum_hz * octave(0.12),
        hum_db=style.hum_db + n(3.5),
        am_hz=style.am_hz * octave(0.25),
        am_depth=float(np.clip(style.am_depth + n(0.07), 0.0, 0.9)),
        rt60_s=float(np.clip(style.rt60_s * octave(0.25), 0.05, 2.5)),
        wet=float(np.clip(style.wet + n(0.07), 0.0, 0.9)),
        snr_db=style.snr_db + n(2.0),
        rates=tuple(r * octave(0.35) for r in style.rates),
    )


def _band_noise(rng: np.random.Generator, count: int, m: int, sr: int, centre: np.ndarray, width_oct: float) -> np.ndarray:
    """[count, m] noise bursts, each band-limited by a Gaussian in log-frequency around its centre."""
    f = np.maximum(np.fft.rfftfreq(m, 1 / sr), 1.0)
    weight = np.exp(-0.5 * (np.log2(f[None] / centre[:, None]) / (width_oct / 2)) ** 2)
    return np.fft.irfft(np.fft.rfft(rng.standard_normal((count, m)), axis=1) * weight, m, axis=1)


def _hann_env(t: np.ndarray, dur: np.ndarray) -> np.ndarray:
    """[count, m] raised-cosine envelopes of per-event durations (seconds), zero afterwards."""
    x = np.clip(t[None] / dur[:, None], 0.0, 1.0)
    return np.sin(np.pi * x) ** 2


def _events(kind: str, count: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """[count, m] event waveforms of one texture, peak-normalised; parameters vary per event."""
    m = max(2, round(EVENT_SECONDS[kind] * sr))
    t = np.arange(m) / sr
    u = lambda lo, hi: rng.uniform(lo, hi, (count, 1))  # noqa: E731
    if kind in ("steps", "click"):
        tau = u(0.005, 0.015) if kind == "steps" else u(0.0004, 0.001)
        centre = rng.uniform(400, 2500, count) if kind == "steps" else rng.uniform(2000, 8000, count)
        x = _band_noise(rng, count, m, sr, centre, 1.2 if kind == "steps" else 2.0) * np.exp(-t / tau)
    elif kind == "pass":
        x = _band_noise(rng, count, m, sr, rng.uniform(200, 900, count), 2.5)
        x *= np.exp(-0.5 * ((t - t[-1] / 2) / u(0.2, 0.45)) ** 2)
    elif kind == "voice":
        f0 = u(90, 260) * (1 + 0.03 * np.sin(2 * np.pi * u(4, 6) * t))
        source = 2 * np.mod(np.cumsum(f0, axis=1) / sr, 1.0) - 1  # sawtooth: all harmonics, 1/k
        f = np.fft.rfftfreq(m, 1 / sr)[None, None]
        formants = np.stack([u(300, 800), u(900, 2300), u(2400, 3200)], axis=1)  # [count, 3, 1]
        bandwidth = np.array([80.0, 120.0, 150.0])[None, :, None]
        vocal_tract = np.exp(-0.5 * ((f - formants) / bandwidth) ** 2).sum(1) + 0.05
        x = np.fft.irfft(np.fft.rfft(source, axis=1) * vocal_tract, m, axis=1)
        x *= _hann_env(t, rng.uniform(0.2, 0.6, count)) * (0.6 + 0.4 * np.sin(2 * np.pi * u(3, 5) * t))
    elif kind == "chime":
        f1, f2 = u(500, 1000), u(500, 1000) * rng.choice([0.75, 0.8, 1.25], (count, 1))
        decay = u(0.15, 0.35)
        t2 = np.maximum(t - 0.3, 0.0)  # second note of the two-tone announcement chime
        env1, env2 = np.exp(-t / decay), np.exp(-t2 / decay) * (t >= 0.3)
        x = np.zeros((count, m))
        for p, a in ((1.0, 1.0), (2.01, 0.5), (2.99, 0.25)):  # bell-like inharmonic partials
            x += a * (np.sin(2 * np.pi * p * f1 * t) * env1 + np.sin(2 * np.pi * p * f2 * t2) * env2)
    elif kind == "squeal":
        f = np.minimum(u(2000, 5000), 0.4 * sr) * (1 + 0.01 * np.sin(2 * np.pi * u(4, 9) * t))
        phase = 2 * np.pi * np.cumsum(f, axis=1) / sr
        x = (np.sin(phase) + 0.3 * np.sin(2 * phase)) * _hann_env(t, rng.uniform(0.25, 0.8, count))
    elif kind == "bird":
        dur = u(0.04, 0.12)
        f_start = np.minimum(u(2500, 6000), 0.4 * sr)
        f = f_start * (1 - u(0.2, 0.5) * np.clip(t / dur, 0, 1))
        phase = 2 * np.pi * np.cumsum(f, axis=1) / sr
        x = (np.sin(phase) + 0.2 * np.sin(2 * phase)) * _hann_env(t, dur[:, 0])
    else:
        raise ConfigError(f"unknown event kind {kind!r}")
    return x / (np.abs(x).max(axis=1, keepdims=True) + 1e-12)


@functools.lru_cache(maxsize=64)
def _fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: pocketfft is fast on these, and they waste less than a power of two."""
    return min(m for m in (2**a * 3**b * 5**c for a in range(40) for b in range(4) for c in range(4)) if m >= n)


def _fftconv(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Causal linear convolution of a signal with an impulse response, truncated to len(x)."""
    nfft = _fast_len(len(x) + len(h) - 1)
    return np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft), nfft)[: len(x)]


def render_scene(style: SceneStyle, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of one scene: modulated coloured noise bed + engine hum + reverberant event textures."""
    t = np.arange(n) / sr
    f = np.fft.rfftfreq(n, 1 / sr)
    colour = _db(style.tilt_db_oct * np.log2(np.maximum(f, 20.0) / 1000.0)) / np.sqrt(1 + (f / style.lowpass_hz) ** 4)
    colour[0] = 0.0
    bed = np.fft.irfft((rng.standard_normal(len(f)) + 1j * rng.standard_normal(len(f))) * colour, n)
    bed *= (1 + style.am_depth * np.sin(2 * np.pi * style.am_hz * t + rng.uniform(0, 2 * np.pi)))
    bed *= _db(style.bed_db + rng.normal(0, 1.5)) / (np.sqrt(np.mean(bed**2)) + 1e-12)

    k = np.arange(1, 9)[:, None]
    f0 = style.hum_hz * (1 + 0.01 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t + rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    hum = (rng.uniform(0.5, 1.0, (8, 1)) / k * np.sin(k * phase + rng.uniform(0, 2 * np.pi, (8, 1)))).sum(0)
    hum *= _db(style.hum_db) / (np.sqrt(np.mean(hum**2)) + 1e-12)

    events = np.zeros(n)
    for kind, rate in zip(EVENTS, style.rates):
        m = max(2, round(EVENT_SECONDS[kind] * sr))
        count = rng.poisson(rate * (n + m) / sr)
        if count == 0:
            continue
        waves = _events(kind, count, sr, rng)
        waves *= _db(style.bed_db + style.snr_db + EVENT_OFFSET_DB[kind] + rng.normal(0, 3, (count, 1)))
        idx = rng.integers(-m, n, count)[:, None] + np.arange(m)
        keep = (idx >= 0) & (idx < n)
        events += np.bincount(idx[keep], weights=waves[keep], minlength=n)
    tail = np.arange(round(min(style.rt60_s, 1.5) * sr)) / sr
    room = rng.standard_normal(len(tail)) * np.exp(-6.91 * tail / style.rt60_s)
    events = (1 - style.wet) * events + style.wet * _fftconv(events, room / np.linalg.norm(room))
    return bed + hum + events


# ---------------------------------------------------------------- devices


@dataclass(eq=False)
class DeviceSpec:
    """A simulated recording device: impulse response, then gain, compression and self-noise."""

    name: str
    ir: np.ndarray = field(repr=False)  # 0 dB mid-band gain; [1.0] for the reference device
    source: str  # "identity", "generated" or the IR file name
    gain_db: float = 0.0
    noise_db: float = -96.0  # self-noise RMS, dBFS
    comp_threshold_db: float = 0.0
    comp_ratio: float = 1.0

    def describe(self) -> dict:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items() if k != "ir"}

    def apply(self, x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
        y = (_fftconv(x, self.ir) if len(self.ir) > 1 else x) * _db(self.gain_db)
        if self.comp_ratio > 1:
            y = _compress(y, self.comp_threshold_db, self.comp_ratio, sr)
        return y + rng.standard_normal(len(y)) * _db(self.noise_db)


def _compress(y: np.ndarray, threshold_db: float, ratio: float, sr: int) -> np.ndarray:
    """Feed-forward compressor on 10-ms frame RMS, gain smoothed over 50 ms and interpolated per sample."""
    hop = max(1, sr // 100)
    frames = np.pad(y, (0, -len(y) % hop)).reshape(-1, hop)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    reduction = np.minimum(0.0, (threshold_db - level) * (1 - 1 / ratio))
    reduction = np.convolve(np.pad(reduction, 2, mode="edge"), np.ones(5) / 5, mode="valid")
    centres = (np.arange(len(reduction)) + 0.5) * hop
    return y * _db(np.interp(np.arange(len(y)), centres, reduction))


def _min_phase_ir(mag_db: np.ndarray, n_ir: int) -> np.ndarray:
    """Minimum-phase impulse response with the given magnitude (dB on an rfft grid), via the real cepstrum."""
    nfft = 2 * (len(mag_db) - 1)
    cep = np.fft.irfft(np.log(_db(mag_db)), nfft)
    fold = np.zeros(nfft)
    fold[0], fold[nfft // 2] = cep[0], cep[nfft // 2]
    fold[1 : nfft // 2] = 2 * cep[1 : nfft // 2]
    h = np.fft.irfft(np.exp(np.fft.rfft(fold)), nfft)[:n_ir]
    return h * np.hanning(2 * n_ir)[n_ir:]


# Ranges per severity. Seen devices (b, c, s1-s3) keep the bass and stay within 2-4 dB of flat; unseen ones
# (s4-s6) cut below 150-300 Hz, where hum and rumble tell vehicles apart, deviate 4-6 dB and are noisier.
SEVERITY = {
    "seen": dict(deviation=(2.0, 4.0), hp=(40, 120), lp=(7000, 15000), tilt=1.5, n_res=(1, 3), res_db=6, bw=(0.3, 1.0),
                 gain=4, noise=(-82, -70), thr=(-35, -25), ratio=(1.0, 2.5)),
    "unseen": dict(deviation=(4.0, 6.0), hp=(150, 300), lp=(6000, 12000), tilt=1.5, n_res=(1, 3), res_db=6, bw=(0.3, 1.0),
                   gain=4, noise=(-76, -70), thr=(-35, -25), ratio=(1.0, 2.5)),
}  # fmt: skip


def _draw_ir(rng: np.random.Generator, sev: dict, sr: int, nfft: int = 8192) -> np.ndarray:
    """A random band-pass response with resonances, like a small phone microphone and its housing."""
    f = np.maximum(np.fft.rfftfreq(nfft, 1 / sr), 1.0)
    hp, lp = (np.exp(rng.uniform(*np.log(sev[k]))) for k in ("hp", "lp"))
    mag = -10 * np.log10(1 + (hp / f) ** 4) - 10 * np.log10(1 + (f / lp) ** 4)
    mag += rng.uniform(-sev["tilt"], sev["tilt"]) * np.log2(f / 1000)
    for _ in range(rng.integers(sev["n_res"][0], sev["n_res"][1] + 1)):
        fc = np.exp(rng.uniform(np.log(300), np.log(min(8000, 0.4 * sr))))
        mag += rng.uniform(-sev["res_db"], sev["res_db"]) * np.exp(-0.5 * (np.log2(f / fc) / rng.uniform(*sev["bw"])) ** 2)
    return _normalise_ir(_min_phase_ir(np.clip(mag, -80, 40), 2048), sr)


def _normalise_ir(h: np.ndarray, sr: int) -> np.ndarray:
    """Scale to 0 dB mean power gain over 500 Hz - 2 kHz: sensitivity is set where microphones are specified,
    so a device that loses the bass does not get its treble boosted (as unit-energy scaling would)."""
    spec = np.abs(np.fft.rfft(h, 16384)) ** 2
    f = np.fft.rfftfreq(16384, 1 / sr)
    return h / np.sqrt(spec[(f >= 500) & (f <= 2000)].mean())


def _bands_db(h: np.ndarray, sr: int) -> np.ndarray:
    """Third-octave power response (dB) of an impulse response, 100 Hz - 10 kHz."""
    spec = np.abs(np.fft.rfft(h, 16384)) ** 2
    f = np.fft.rfftfreq(16384, 1 / sr)
    edges = 100 * 2 ** (np.arange(21) / 3)
    return np.array([10 * np.log10(spec[(f >= lo) & (f < hi)].mean() + 1e-12) for lo, hi in zip(edges[:-1], edges[1:])])


def _deviation(bands_db: np.ndarray, gain_db: float = 0.0) -> float:
    """RMS (dB) of a device's band response, gain included, around flat: how far it is from the reference
    device `a`, which is what throws off a model trained on other devices."""
    return float(np.sqrt(np.mean((bands_db + gain_db) ** 2)))


def _draw_device(name: str, rng: np.random.Generator, sev: dict, sr: int, ir: tuple[str, np.ndarray] | None) -> DeviceSpec:
    """A device of the given severity; response and gain are redrawn until their deviation from flat lies in
    the severity's range, so the seen/unseen gap (and the accuracy it costs) is similar for every seed."""
    for _ in range(200):
        source, h = ir or ("generated", _draw_ir(rng, sev, sr))
        bands = _bands_db(h, sr)
        gain = rng.uniform(-sev["gain"], sev["gain"])
        if sev["deviation"][0] <= _deviation(bands, gain) <= sev["deviation"][1]:
            break
    return DeviceSpec(
        name, h, source,
        gain_db=gain,
        noise_db=rng.uniform(*sev["noise"]),
        comp_threshold_db=rng.uniform(*sev["thr"]),
        comp_ratio=rng.uniform(*sev["ratio"]),
    )  # fmt: skip


def load_irs(folder: str | Path, sr: int) -> list[tuple[str, np.ndarray]]:
    """Impulse responses from a folder of wav files, mono, at `sr`, onset-trimmed, 0 dB at mid band."""
    files = sorted(Path(folder).glob("*.wav"))
    if not files:
        raise ConfigError(
            f"{folder}: no .wav impulse responses found (missing or empty folder); pass a folder of IR wav files "
            "(e.g. ../shared/data/micirp) or leave dirs out to use generated device responses"
        )
    irs = []
    for path in files:
        try:
            data, file_sr = sf.read(str(path), dtype="float64", always_2d=True)
        except RuntimeError as exc:
            raise DatasetError(f"{path}: cannot read impulse response ({exc}); remove or replace the file") from exc
        h = data.mean(axis=1)
        if file_sr != sr:
            h = taf.resample(torch.from_numpy(h), file_sr, sr).numpy()
        h = h[max(0, int(np.argmax(np.abs(h))) - 32) :]
        if not np.any(h):
            raise DatasetError(f"{path}: impulse response is silent; remove the file")
        irs.append((path.name, _normalise_ir(h, sr)))
    return irs


def device_specs(cfg: SynthConfig) -> dict[str, DeviceSpec]:
    """Fixed per-device parameters drawn from the seed. With `dirs`, the most coloured third of the IRs is
    reserved for s4-s6 so the unseen devices differ from the seen ones whatever files were given."""
    sr = cfg.sample_rate
    irs = load_irs(cfg.dirs, sr) if cfg.dirs else None
    picks: dict[str, tuple[str, np.ndarray]] = {}
    if irs:
        rng = _rng(cfg.seed, 4)
        ranked = sorted(irs, key=lambda item: _deviation(_bands_db(item[1], sr)))
        cut = max(1, min(len(ranked) - 1, len(ranked) * 2 // 3)) if len(ranked) > 1 else 0
        pools = {"seen": ranked[:cut] or ranked, "unseen": ranked[cut:]}
        for sev, names in (("seen", DEVICES[1:6]), ("unseen", UNSEEN_DEVICES)):
            pool = pools[sev]
            chosen = rng.choice(len(pool), len(names), replace=len(pool) < len(names))
            picks.update({name: pool[i] for name, i in zip(names, chosen)})
    specs = {"a": DeviceSpec("a", np.ones(1), "identity", noise_db=-90.0)}
    for i, name in enumerate(DEVICES[1:], start=1):
        sev = SEVERITY["unseen" if name in UNSEEN_DEVICES else "seen"]
        specs[name] = _draw_device(name, _rng(cfg.seed, 3, i), sev, sr, picks.get(name))
    return specs


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

    Train segments go to the `devices_per_train_segment` seen devices used least so far (ties broken at
    random), so every seen device gets at least `clips_per_device` train clips and at most one segment more.
    """
    rng = _rng(cfg.seed, 0)
    n_loc, k, parts = cfg.locations_per_scene, cfg.devices_per_train_segment, cfg.parts_per_segment
    n_test_loc = min(n_loc - 2, max(1, round(n_loc * cfg.test_location_fraction)))
    n_train_seg = math.ceil(math.ceil(cfg.clips_per_device / parts) * len(SEEN_DEVICES) / k)
    n_test_seg = math.ceil(cfg.n_test_clips / parts)
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
                devices = DEVICES
                if split == "train":
                    chosen = np.sort(np.lexsort((rng.random(len(used)), used))[:k])
                    used[chosen] += 1
                    devices = tuple(SEEN_DEVICES[d] for d in chosen)
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


def _write_tsv(path: Path, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    path.write_text("\n".join("\t".join(r) for r in [header, *rows]) + "\n")


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
    devices = device_specs(cfg)
    segments = plan(cfg)
    styles = {}
    meta: list[tuple[str, str, str, str]] = []
    splits: dict[str, str] = {}
    peak = 0.0
    with atomic_path(out_dir) as tmp:
        (tmp / "audio").mkdir(parents=True)
        (tmp / "evaluation_setup").mkdir()
        for done, seg in enumerate(segments, start=1):
            loc = seg.location
            if loc.index not in styles:
                styles[loc.index] = perturb_style(STYLES[loc.scene], _rng(cfg.seed, 1, loc.index), cfg.location_spread)
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
        _write_tsv(tmp / "meta.csv", ("filename", "scene_label", "identifier", "source_label"), meta)
        fold = lambda split: [(m[0], m[1]) for m in meta if splits[m[0]] == split]  # noqa: E731
        _write_tsv(tmp / "evaluation_setup" / "fold1_train.csv", ("filename", "scene_label"), fold("train"))
        _write_tsv(tmp / "evaluation_setup" / "fold1_evaluate.csv", ("filename", "scene_label"), fold("test"))
        _write_tsv(tmp / "evaluation_setup" / "fold1_test.csv", ("filename",), [(f,) for f, _ in fold("test")])
        info = {"generator": "asc_dist.data.synth", "config": asdict(cfg),
                "devices": {name: spec.describe() for name, spec in devices.items()}}  # fmt: skip
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
