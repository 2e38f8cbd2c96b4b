"""What a synthetic scene sounds like: class styles, their per-location perturbation, and the rendering.

A scene is a mixture of a coloured noise bed, engine hum, amplitude modulation, reverberation, event
textures (steps, voices, chimes, squeals, pass-bys, birds, clicks) and a location's own background source.
Evidence is built the way real scenes hold it, so that one second is often ambiguous and ten much less so:

- the bed (colour, level, hum, modulation, room) is largely shared within a group of scenes (`GROUPS`:
  indoor halls, vehicles, open spaces, streets; `class_style(bed_share=...)`), so it tells the group, and
  the class only weakly;
- what tells scenes of a group apart are their events, which are sparse (`rate_scale`: a signature event
  every few seconds), so a 1-s clip often holds none of them;
- every location perturbs its class's parameters and adds a background source of its own (a ventilation
  drone, a fountain: band noise at a random centre and level, unrelated to the class), so generalising to
  unseen locations is the hard part, as in TAU.

The signal helpers at the top are shared with `asc_dist.data.devices` and `asc_dist.data.synth`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np

from asc_dist.errors import ConfigError

SCENES = ("airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
          "street_pedestrian", "street_traffic", "tram")  # fmt: skip
EVENTS = ("steps", "voice", "chime", "squeal", "pass", "bird", "click")


# ---------------------------------------------------------------- shared helpers


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """One independent stream per (purpose, index): results do not depend on generation order or size."""
    return np.random.default_rng([seed, *keys])


def _db(x: float | np.ndarray) -> float | np.ndarray:
    return 10.0 ** (np.asarray(x) / 20.0)


@functools.lru_cache(maxsize=64)
def _fast_len(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: pocketfft is fast on these, and they waste less than a power of two."""
    return min(m for m in (2**a * 3**b * 5**c for a in range(40) for b in range(4) for c in range(4)) if m >= n)


def _fftconv(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Causal linear convolution of a signal with an impulse response, truncated to len(x)."""
    nfft = _fast_len(len(x) + len(h) - 1)
    return np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft), nfft)[: len(x)]


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
    bg_hz: float = 1000.0  # the location's background source: centre frequency
    bg_db: float = -200.0  # its RMS level relative to the bed (-200: none; locations draw their own)
    bg_width_oct: float = 1.0


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
# Scenes whose bed (everything but the events) is largely shared: the group is easy, the class within it is not.
GROUPS = {
    "indoor": ("airport", "shopping_mall", "metro_station"),
    "vehicle": ("bus", "metro", "tram"),
    "open": ("park", "public_square"),
    "street": ("street_pedestrian", "street_traffic"),
}
_LOG_FIELDS = ("lowpass_hz", "hum_hz", "am_hz", "rt60_s")  # blended on a log scale
_BED_FIELDS = ("tilt_db_oct", "bed_db", "hum_db", "am_depth", "wet", "snr_db", *_LOG_FIELDS)


def class_style(scene: str, bed_share: float = 0.0, rate_scale: float = 1.0, event_gain_db: float = 0.0) -> SceneStyle:
    """A scene's class parameters with its bed moved `bed_share` of the way to its group's mean bed, its event
    rates scaled by `rate_scale` and its events `event_gain_db` louder (0, 1, 0: the scene's own style)."""
    style = STYLES[scene]
    group = next(members for members in GROUPS.values() if scene in members)
    changes = {}
    for name in _BED_FIELDS:
        values = np.array([getattr(STYLES[m], name) for m in group], dtype=float)
        if name in _LOG_FIELDS:
            mean = float(np.exp(np.log(values).mean()))
            changes[name] = float(np.exp((1 - bed_share) * np.log(getattr(style, name)) + bed_share * np.log(mean)))
        else:
            changes[name] = float((1 - bed_share) * getattr(style, name) + bed_share * values.mean())
    changes["snr_db"] += event_gain_db
    return replace(style, **changes, rates=tuple(r * rate_scale for r in style.rates))


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
        bg_hz=float(np.exp(rng.uniform(np.log(80.0), np.log(4000.0)))),
        bg_db=float(rng.uniform(-15.0, 0.0)) if spread > 0 else style.bg_db,
        bg_width_oct=float(rng.uniform(0.3, 1.5)),
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
    if style.bg_db > -100:
        bg = _band_noise(rng, 1, n, sr, np.array([style.bg_hz]), style.bg_width_oct)[0]
        bg *= _db(style.bed_db + style.bg_db) / (np.sqrt(np.mean(bg**2)) + 1e-12)
        bed = bed + bg
    return bed + hum + events
