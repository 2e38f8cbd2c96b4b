"""How a simulated device colours a clip: device specs, generated and loaded impulse responses, gain,
compression and self-noise.

Devices are simulated the way TAU's s1-s6 were: convolution with a device impulse response (MicIRP files from
`dirs`, else a generated band-pass with resonances), then gain, compression and self-noise. `a` is the clean
reference; b, c, s1-s3 occur in both splits, s4-s6 only in fold1_evaluate and are drawn harsher (they lose
the bass the seen devices keep, deviate further from flat, and are noisier; with `dirs` they get the most
coloured third of the responses) so a model trained on the others loses accuracy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as taf

from asc_dist.data.scenes import _db, _fftconv, _rng
from asc_dist.errors import ConfigError, DatasetError

DEVICES = ("a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6")
SEEN_DEVICES = DEVICES[:6]
UNSEEN_DEVICES = DEVICES[6:]


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


def device_specs(seed: int, sr: int, dirs: str | None = None) -> dict[str, DeviceSpec]:
    """Fixed per-device parameters drawn from the seed. With `dirs`, the most coloured third of the IRs is
    reserved for s4-s6 so the unseen devices differ from the seen ones whatever files were given."""
    irs = load_irs(dirs, sr) if dirs else None
    picks: dict[str, tuple[str, np.ndarray]] = {}
    if irs:
        rng = _rng(seed, 4)
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
        specs[name] = _draw_device(name, _rng(seed, 3, i), sev, sr, picks.get(name))
    return specs
