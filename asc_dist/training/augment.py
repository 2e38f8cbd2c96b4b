"""Batch augmentations shared by teachers and students, run inside the training step on the compute device.

Waveform level (`[B, samples]` float32 plus one device string per row): DIR, Auto-DIR, time roll, time
stretch, mixup. Spectrogram level (log-mel `[B, 1, F, T]`): frequency / time masking, then Freq-MixStyle
(CP-JKU's order: the mel module masks, the training step mixes styles afterwards).

Each augmentation is a small `nn.Module` with its probability and parameters in its constructor, following
CP-JKU's composable dataset wrappers (fschmid56/cpjku_dcase23) but applied to whole batches so they run on
the GPU. `.eval()` turns every one of them into the identity.

Randomness: every draw that decides *what* to do (rows, impulse responses, shifts, rates, Beta lambdas,
permutations) comes from torch's global CPU generator and is then moved to the data's device. So
`torch.manual_seed(s)` reproduces a run on CPU and GPU alike, and no decision needs a device sync (Auto-DIR's
energy gate is the one small exception). torchaudio's masks are drawn on the data's device, whose generator
`torch.manual_seed` seeds too. Distinct DDP ranks need distinct seeds: the caller's job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
from torch import nn

from asc_dist.errors import ConfigError

# TAU Urban Acoustic Scenes 2022 Mobile is distributed at 44.1 kHz: Auto-DIR energies are measured there.
TAU_NATIVE_RATE = 44100
# Seed 000, eq. 3: "we set tau to an average value of 323" (the mean clip energy over TAU22).
ADIR_TAU = 323.0


def _check_probability(name: str, p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"augmentation probability {name}={p} is outside [0, 1]; pass a value in [0, 1]")


def _check_devices(waves: torch.Tensor, devices: Sequence[str] | None, who: str) -> Sequence[str]:
    if devices is None or len(devices) != waves.shape[0]:
        got = "none" if devices is None else len(devices)
        raise ValueError(f"{who} needs one device string per row: {waves.shape[0]} rows, {got} devices")
    return devices


# --------------------------------------------------------------------------------------------------------
# Impulse responses
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImpulseResponseBank:
    """Device impulse responses, read and resampled once, packed into one zero-padded tensor.

    CP-JKU's `load_dirs` reads every `*.wav` once at start-up, sorted, mono, at the training rate; easy_dcase
    re-reads a random file per application, which is what this avoids. Zero padding is harmless: the head of
    a 'full' convolution (all that DIR keeps) does not see trailing zeros.
    """

    irs: torch.Tensor  # [K, max_len] float32
    lengths: torch.Tensor  # [K] int64, valid samples per row
    names: tuple[str, ...]
    sample_rate: int

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def load(cls, folder: str | Path, sample_rate: int) -> ImpulseResponseBank:
        folder = Path(folder)
        fix = (
            "point it at a folder of impulse-response .wav files (CP-JKU's 66 MicIRP files, e.g. "
            "../shared/data/micirp) or turn DIR/Auto-DIR off (dir_p = adir_p = 0)"
        )
        if not folder.is_dir():
            raise ConfigError(f"impulse-response folder {folder} does not exist; {fix}")
        paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".wav")
        if not paths:
            raise ConfigError(f"impulse-response folder {folder} holds no .wav file; {fix}")
        signals: list[np.ndarray] = []
        rates: list[int] = []
        bad: list[str] = []
        for path in paths:
            try:
                audio, sr = sf.read(path, dtype="float32", always_2d=True)
            except (sf.SoundFileError, RuntimeError, ValueError, OSError) as exc:
                bad.append(f"{path.name} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
                continue
            if audio.shape[0] == 0:
                bad.append(f"{path.name} (no samples)")
                continue
            signals.append(audio.mean(axis=1))
            rates.append(int(sr))
        if bad:
            raise ConfigError(
                f"impulse-response folder {folder}: {len(bad)} of {len(paths)} .wav files are unreadable: "
                f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}; replace or remove them, or {fix}"
            )
        resampled = _resample_all(signals, rates, sample_rate)
        lengths = torch.tensor([len(x) for x in resampled], dtype=torch.int64)
        irs = torch.zeros(len(resampled), int(lengths.max()), dtype=torch.float32)
        for row, x in enumerate(resampled):
            irs[row, : len(x)] = x
        return cls(irs=irs, lengths=lengths, names=tuple(p.name for p in paths), sample_rate=int(sample_rate))


def _resample_all(signals: list[np.ndarray], rates: list[int], target: int) -> list[torch.Tensor]:
    """Resample every signal to `target`, one batched call per source rate (torchaudio pads with zeros too,
    so a padded batch gives the same samples as one call per file)."""
    out: list[torch.Tensor | None] = [None] * len(signals)
    for rate in sorted(set(rates)):
        rows = [i for i, r in enumerate(rates) if r == rate]
        batch = torch.zeros(len(rows), max(len(signals[i]) for i in rows))
        for k, i in enumerate(rows):
            batch[k, : len(signals[i])] = torch.from_numpy(signals[i])
        if rate != target:
            batch = torchaudio.functional.resample(batch, rate, target)
        for k, i in enumerate(rows):
            out[i] = batch[k, : math.ceil(len(signals[i]) * target / rate)].clone()
    return out  # type: ignore[return-value]


def clip_energy(waves: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Auto-DIR clip energy (DS-FlexiNet, arXiv 2412.20722, eq. 3): sum of squared samples, float scale [-1, 1], per row,
    expressed at TAU22's native 44.1 kHz: `E(x) = (44100 / sample_rate) * sum_n x[n]^2`.

    The paper gives tau = 323 as the average energy over TAU22, without saying how energy is computed. The
    plain sum of squares of a 1-s clip at its native 44.1 kHz fits that value: the one genuine TAU22 clip
    in ../shared/data (airport, device a, -21.5 dBFS) has 309. The sum grows with the sample count, so a
    clip resampled to 32 kHz is rescaled to the 44.1 kHz count; the value is then rate-independent and the
    paper's tau applies at any pipeline rate. Recalibrate with the mean of this over your training clips.
    """
    return waves.float().pow(2).sum(dim=-1) * (TAU_NATIVE_RATE / sample_rate)


class DeviceIR(nn.Module):
    """DIR augmentation (CP-JKU, Morocutti et al. 2023): each device-'a' row, with probability `p`, is
    convolved with a random impulse response; 'full' convolution truncated to the clip length.

    Only device 'a' rows: the other devices are already "other microphones" (CP-JKU `DIRAugmentDataset`).
    Batched with `torchaudio.functional.fftconvolve`; the bank lives in a buffer so `.to(device)` moves it.
    """

    def __init__(self, bank: ImpulseResponseBank, p: float = 0.6, device_name: str = "a"):
        super().__init__()
        _check_probability("dir_p", p)
        if len(bank) == 0:
            raise ConfigError("DeviceIR needs at least one impulse response; load a bank with ImpulseResponseBank.load")
        self.p = p
        self.device_name = device_name
        self.sample_rate = bank.sample_rate
        self.register_buffer("irs", bank.irs.clone(), persistent=False)
        self.ir_lengths = bank.lengths.clone()  # stays on CPU: used for slicing without a sync

    def extra_repr(self) -> str:
        return f"p={self.p}, n_irs={self.irs.shape[0]}, device_name={self.device_name!r}"

    def candidates(self, waves: torch.Tensor, devices: Sequence[str]) -> torch.Tensor:
        """CPU bool [B]: rows of the target device that won their coin flip."""
        is_target = torch.tensor([d == self.device_name for d in devices], dtype=torch.bool)
        return is_target & (torch.rand(waves.shape[0]) < self.p)

    def forward(self, waves: torch.Tensor, devices: Sequence[str] | None = None) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return waves
        devices = _check_devices(waves, devices, type(self).__name__)
        rows = self.candidates(waves, devices)
        ir_idx = torch.randint(self.irs.shape[0], (waves.shape[0],))
        return self._convolve(waves, rows, ir_idx)

    def _convolve(self, waves: torch.Tensor, rows: torch.Tensor, ir_idx: torch.Tensor) -> torch.Tensor:
        picked = rows.nonzero().squeeze(1)
        if picked.numel() == 0:
            return waves
        chosen = ir_idx[picked]
        n = waves.shape[-1]
        ir_len = int(self.ir_lengths[chosen].max())
        # Trailing zeros after the responses leave the first n output samples as they are, and make the transform
        # length fftconvolve picks (n + len - 1) one whose FFT is fast: 34,999 samples (a 1-s clip at 32 kHz and a
        # 3,000-sample response) is 31 x 1,129, 36,000 is 2^5 3^2 5^3; Auto-DIR with the MicIRP responses went from
        # 16.6 to 4.4 ms a batch (ops/step_profile.py, docs/bench_students_sm2_step.json).
        padded = fast_fft_length(n + ir_len - 1) - n + 1
        dev = waves.device
        if self.irs.device != dev:  # follow the data once, even if nobody called `.to(device)` on the pipeline
            self.irs = self.irs.to(dev)
        h = self.irs.index_select(0, chosen.to(dev))[:, :padded]
        h = torch.nn.functional.pad(h, (0, padded - h.shape[-1]))
        x = waves.index_select(0, picked.to(dev)).float()
        y = torchaudio.functional.fftconvolve(x, h)[:, :n]
        return waves.index_copy(0, picked.to(dev), y.to(waves.dtype))


def fast_fft_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: FFT libraries (MKL, pocketfft, cuFFT) are fastest on such lengths."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35 * (1 << max(0, (-(-n // p35) - 1).bit_length()))  # times the smallest power of 2 reaching n
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


class AutoDeviceIR(DeviceIR):
    """Auto-DIR (DS-FlexiNet, arXiv 2412.20722, eq. 3): DIR only for device-'a' clips whose energy exceeds `tau`, with
    probability `p`; quieter clips are never convolved, "to prevent overprocessing and distortion".

    Energy is `clip_energy` (sum of squares at TAU22's 44.1 kHz scale, see there); tau 323 is the paper's.
    """

    def __init__(self, bank: ImpulseResponseBank, p: float = 0.6, tau: float = ADIR_TAU, sample_rate: int | None = None):
        super().__init__(bank, p)
        if tau < 0:
            raise ConfigError(f"Auto-DIR threshold tau={tau} is negative; energies are >= 0 (the paper uses 323)")
        self.tau = tau
        self.energy_rate = int(sample_rate or bank.sample_rate)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tau={self.tau}"

    def clip_energy(self, waves: torch.Tensor) -> torch.Tensor:
        return clip_energy(waves, self.energy_rate)

    def candidates(self, waves: torch.Tensor, devices: Sequence[str]) -> torch.Tensor:
        loud = (self.clip_energy(waves) > self.tau).cpu()
        return super().candidates(waves, devices) & loud


# --------------------------------------------------------------------------------------------------------
# Other waveform augmentations
# --------------------------------------------------------------------------------------------------------


class TimeRoll(nn.Module):
    """Circular shift of each row by its own uniform integer in [-max_shift, max_shift] samples
    (CP-JKU `RollDataset`: student 4000 samples at 32 kHz, PaSST 10000)."""

    def __init__(self, max_shift: int):
        super().__init__()
        if max_shift < 0:
            raise ConfigError(f"time roll max_shift={max_shift} is negative; pass a sample count >= 0")
        self.max_shift = int(max_shift)

    def extra_repr(self) -> str:
        return f"max_shift={self.max_shift}"

    def forward(self, waves: torch.Tensor, devices: Sequence[str] | None = None) -> torch.Tensor:
        if not self.training or self.max_shift == 0:
            return waves
        batch, n = waves.shape
        shifts = torch.randint(-self.max_shift, self.max_shift + 1, (batch,))
        if waves.device.type != "cpu":  # one gather kernel instead of 2 x batch small copies
            index = (torch.arange(n, device=waves.device).unsqueeze(0) - shifts.to(waves.device).unsqueeze(1)) % n
            return waves.gather(1, index)  # out[i, t] = x[i, t - s_i], i.e. torch.roll(x[i], s_i)
        # On CPU two slice copies per row: with the gather's [B, n] int64 index a batch of 64 clips took 7.3 ms, now 1.7.
        out = torch.empty_like(waves)
        for i, s in enumerate((shifts % n).tolist()):
            out[i, s:] = waves[i, : n - s]
            out[i, :s] = waves[i, n - s :]
        return out


class TimeStretch(nn.Module):
    """Time stretching (vivo DCASE 2023 Task 1a technical report, submissions 3-4) by resampling: a rate r > 1 plays the clip r times
    faster (shorter, higher pitched, as sox `speed`), r < 1 slower; then crop the tail or zero-pad to the
    original length. With probability `p`, one rate for the batch, or one per row when `per_row`.

    Rates are drawn uniformly in `rates` and rounded to 1/`resolution` so that the resampling kernels stay
    small (orig/new frequencies like 93/100); a rounded rate of exactly 1 leaves the row untouched.
    """

    def __init__(
        self, p: float = 0.5, rates: tuple[float, float] = (0.9, 1.1), per_row: bool = False, resolution: int = 100
    ):
        super().__init__()
        _check_probability("stretch_p", p)
        lo, hi = float(rates[0]), float(rates[1])
        if not 0 < lo <= hi:
            raise ConfigError(f"time-stretch rates {rates} must satisfy 0 < low <= high, e.g. (0.9, 1.1)")
        self.p, self.rates, self.per_row, self.resolution = p, (lo, hi), per_row, int(resolution)

    def extra_repr(self) -> str:
        return f"p={self.p}, rates={self.rates}, per_row={self.per_row}"

    def _draw_steps(self, n: int) -> torch.Tensor:
        lo, hi = self.rates
        rate = lo + (hi - lo) * torch.rand(n, dtype=torch.float64)
        return torch.round(rate * self.resolution).long()

    def stretch(self, waves: torch.Tensor, step: int) -> torch.Tensor:
        """Stretch all rows by rate `step / resolution`, back to the input length."""
        n = waves.shape[-1]
        if step == self.resolution:
            return waves
        y = torchaudio.functional.resample(waves.float(), step, self.resolution).to(waves.dtype)
        if y.shape[-1] >= n:
            return y[..., :n]
        return torch.nn.functional.pad(y, (0, n - y.shape[-1]))

    def forward(self, waves: torch.Tensor, devices: Sequence[str] | None = None) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return waves
        if not self.per_row:
            if float(torch.rand(())) >= self.p:
                return waves
            return self.stretch(waves, int(self._draw_steps(1)[0]))
        batch = waves.shape[0]
        apply = torch.rand(batch) < self.p
        steps = torch.where(apply, self._draw_steps(batch), torch.full((batch,), self.resolution))
        out = waves
        for step in sorted(set(steps.tolist()) - {self.resolution}):
            rows = (steps == step).nonzero().squeeze(1).to(waves.device)
            out = out.index_copy(0, rows, self.stretch(waves.index_select(0, rows), step))
        return out


@dataclass(frozen=True)
class MixInfo:
    """How a batch was mixed: row i = lam[i] * row i + (1 - lam[i]) * row perm[i]."""

    perm: torch.Tensor  # [B] int64
    lam: torch.Tensor  # [B] float32, in [0.5, 1]


class Mixup(nn.Module):
    """Mixup (Zhang et al.; cpjku22 recipe): per-sample lam ~ Beta(alpha, alpha) folded to max(lam, 1 - lam)
    so each row stays dominated by its own clip, and one random permutation partner. Returns the mixed
    batch and the `MixInfo` so the label and KD losses can mix both targets (`mix_targets`, `asc_dist.training.kd`)."""

    def __init__(self, alpha: float = 0.3):
        super().__init__()
        if alpha <= 0:
            raise ConfigError(f"mixup alpha={alpha} must be > 0 (cpjku22 uses 0.3); set mixup_alpha=0 to turn it off")
        self.alpha = alpha

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"

    def draw(self, batch: int, device: torch.device | str = "cpu") -> MixInfo:
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((batch,))
        lam = torch.maximum(lam, 1.0 - lam).float()
        perm = torch.randperm(batch)
        return MixInfo(perm=perm.to(device), lam=lam.to(device))

    def forward(self, waves: torch.Tensor) -> tuple[torch.Tensor, MixInfo | None]:
        if not self.training:
            return waves, None
        mix = self.draw(waves.shape[0], waves.device)
        lam = mix.lam.to(waves.dtype).view(-1, *([1] * (waves.dim() - 1)))
        return lam * waves + (1.0 - lam) * waves[mix.perm], mix


def mix_targets(targets: torch.Tensor, mix: MixInfo | None, n_classes: int | None = None) -> torch.Tensor:
    """Soft targets [B, C] for a mixed batch: lam * t_i + (1 - lam) * t_perm(i).

    `targets` are int labels [B] (one-hot encoded, `n_classes` required) or probabilities [B, C]; without
    `mix` the (one-hot) targets come back unchanged. Feed the result to `F.cross_entropy` as probabilities.
    """
    if not targets.is_floating_point():
        if n_classes is None:
            raise ValueError("mix_targets needs n_classes to one-hot encode integer labels")
        targets = torch.nn.functional.one_hot(targets.long(), n_classes).float()
    if mix is None:
        return targets
    lam = mix.lam.to(targets.dtype).unsqueeze(1)
    return lam * targets + (1.0 - lam) * targets[mix.perm]


# --------------------------------------------------------------------------------------------------------
# Spectrogram augmentations
# --------------------------------------------------------------------------------------------------------


class FreqMixStyle(nn.Module):
    """Freq-MixStyle, exactly CP-JKU's `mixstyle` (fschmid56/cpjku_dcase23; DS-FlexiNet, arXiv 2412.20722, section II-C1).

    With probability `p` for the whole batch: per-instance, per-frequency-bin mean and std over channel and
    time (dims [1, 3], unbiased var + eps, detached), per-instance lam ~ Beta(alpha, alpha), a random
    permutation partner, and re-normalisation with the mixed statistics. The frequency profile is what
    carries the device "style"; the normalised time-frequency pattern of each clip is kept.
    """

    def __init__(self, p: float = 0.4, alpha: float = 0.3, eps: float = 1e-6):
        super().__init__()
        _check_probability("fms_p", p)
        if alpha <= 0:
            raise ConfigError(f"Freq-MixStyle alpha={alpha} must be > 0 (CP-JKU students use 0.3, teachers 0.4)")
        self.p, self.alpha, self.eps = p, alpha, eps

    def extra_repr(self) -> str:
        return f"p={self.p}, alpha={self.alpha}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or float(torch.rand(())) >= self.p:
            return x
        batch = x.shape[0]
        # Two passes of plain sums: torch.var (Welford) over 64-frame rows is far slower than a mean on CPU
        # (3.2 -> 0.6 ms a step with this form, docs/bench_students_sm2_step.json).
        f_mu = x.mean(dim=[1, 3], keepdim=True).detach()
        centred = x - f_mu
        f_var = centred.detach().square().sum(dim=[1, 3], keepdim=True) / (x.shape[1] * x.shape[3] - 1)  # unbiased
        f_sig = (f_var + self.eps).sqrt()
        lmda = torch.distributions.Beta(self.alpha, self.alpha).sample((batch, 1, 1, 1)).to(x.device, x.dtype)
        perm = torch.randperm(batch).to(x.device)
        mu_mix = f_mu * lmda + f_mu[perm] * (1 - lmda)
        sig_mix = f_sig * lmda + f_sig[perm] * (1 - lmda)
        # (x - mu) / sig * sig_mix + mu_mix in one pass
        return torch.addcmul(mu_mix, centred, sig_mix / f_sig)


class FrequencyMasking(nn.Module):
    """SpecAugment frequency masking, one independent band of width U[0, max_width) per instance
    (torchaudio, `iid_masks=True`, as CP-JKU: student freqm 48 of 256 mels)."""

    def __init__(self, max_width: int):
        super().__init__()
        if max_width < 0:
            raise ConfigError(f"frequency mask max_width={max_width} is negative; pass a bin count >= 0")
        self.max_width = int(max_width)
        self.mask = torchaudio.transforms.FrequencyMasking(self.max_width, iid_masks=True) if max_width else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.mask is None:
            return x
        return self.mask(x)


class TimeMasking(nn.Module):
    """SpecAugment time masking, one independent span of width U[0, max_width) frames per instance
    (torchaudio, `iid_masks=True`; CP-JKU PaSST teacher timem 20, students 0)."""

    def __init__(self, max_width: int):
        super().__init__()
        if max_width < 0:
            raise ConfigError(f"time mask max_width={max_width} is negative; pass a frame count >= 0")
        self.max_width = int(max_width)
        self.mask = torchaudio.transforms.TimeMasking(self.max_width, iid_masks=True) if max_width else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.mask is None:
            return x
        return self.mask(x)


# --------------------------------------------------------------------------------------------------------
# Config and pipelines
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentConfig:
    """Every augmentation's knobs; all off by default. Presets below follow the published recipes."""

    dir_p: float = 0.0  # DIR on device-a rows (CP-JKU: 0.6 student / PaSST, 0.4 CP-ResNet)
    adir_p: float = 0.0  # Auto-DIR instead of DIR (DS-FlexiNet, arXiv 2412.20722); the two are exclusive
    adir_tau: float = ADIR_TAU
    roll_max_s: float = 0.0  # circular roll, seconds (CP-JKU student 4000 samples at 32 kHz = 0.125 s)
    stretch_p: float = 0.0
    stretch_rates: tuple[float, float] = (0.9, 1.1)
    stretch_per_row: bool = False
    mixup_alpha: float = 0.0  # 0 = off (cpjku22: 0.3)
    freqm: int = 0  # max frequency-mask width, mel bins
    timem: int = 0  # max time-mask width, frames
    fms_p: float = 0.0
    fms_alpha: float = 0.3

    def __post_init__(self) -> None:
        for name in ("dir_p", "adir_p", "stretch_p", "fms_p"):
            _check_probability(name, getattr(self, name))
        if self.dir_p > 0 and self.adir_p > 0:
            raise ConfigError("dir_p and adir_p are both > 0; Auto-DIR replaces DIR, so set one of them to 0")
        if self.roll_max_s < 0 or self.freqm < 0 or self.timem < 0 or self.adir_tau < 0:
            raise ConfigError("roll_max_s, freqm, timem and adir_tau must be >= 0")
        if self.mixup_alpha < 0 or self.fms_alpha <= 0:
            raise ConfigError("mixup_alpha must be >= 0 (0 = off) and fms_alpha > 0")
        lo, hi = self.stretch_rates
        if not 0 < lo <= hi:
            raise ConfigError(f"stretch_rates={self.stretch_rates} must satisfy 0 < low <= high, e.g. (0.9, 1.1)")

    @property
    def needs_impulse_responses(self) -> bool:
        return self.dir_p > 0 or self.adir_p > 0

    def to_dict(self) -> dict:
        return asdict(self)


AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    "none": AugmentConfig(),
    # cpjku23 student (CP-Mobile): DIR 0.6, roll +-4000 @ 32 kHz, FMS 0.4 / 0.3, freqm 48.
    "cpjku_student": AugmentConfig(dir_p=0.6, roll_max_s=0.125, fms_p=0.4, fms_alpha=0.3, freqm=48),
    # DS-FlexiNet (arXiv 2412.20722): Auto-DIR + FMS + roll + frequency masking; the paper gives no ADIR p, CP-JKU's 0.6 used.
    "dsflexinet": AugmentConfig(adir_p=0.6, roll_max_s=0.125, fms_p=0.4, fms_alpha=0.3, freqm=48),
    # cpjku23 PaSST teacher: DIR 0.6, roll 10000 samples, FMS 0.4 / 0.4, freqm 48, timem 20.
    "passt_teacher": AugmentConfig(dir_p=0.6, roll_max_s=0.3125, fms_p=0.4, fms_alpha=0.4, freqm=48, timem=20),
    # cpjku23 CP-ResNet teacher: DIR 0.4, roll 4000, FMS 0.8 / 0.4.
    "cpresnet_teacher": AugmentConfig(dir_p=0.4, roll_max_s=0.125, fms_p=0.8, fms_alpha=0.4),
}


class WavePipeline(nn.Module):
    """Waveform steps in order (DIR/Auto-DIR, stretch, roll: CP-JKU applies DIR before rolling), then mixup
    last, because after mixing a row no longer has one device."""

    def __init__(self, steps: Sequence[nn.Module] = (), mixup: Mixup | None = None):
        super().__init__()
        self.steps = nn.ModuleList(steps)
        self.mixup = mixup

    def forward(self, waves: torch.Tensor, devices: Sequence[str] | None = None) -> tuple[torch.Tensor, MixInfo | None]:
        for step in self.steps:
            waves = step(waves, devices)
        if self.mixup is None:
            return waves, None
        return self.mixup(waves)


class SpecPipeline(nn.Sequential):
    """Log-mel steps in order: frequency mask, time mask, Freq-MixStyle."""


def build_augmentations(
    cfg: AugmentConfig, ir_bank: ImpulseResponseBank | None, sample_rate: int
) -> tuple[WavePipeline, SpecPipeline]:
    """The two pipelines `cfg` asks for; `ir_bank` is needed (at `sample_rate`) only for DIR/Auto-DIR."""
    waves: list[nn.Module] = []
    if cfg.needs_impulse_responses:
        if ir_bank is None:
            raise ConfigError(
                "DIR/Auto-DIR is on but no impulse responses were given; load them with "
                "ImpulseResponseBank.load(folder, sample_rate) (e.g. ../shared/data/micirp) or set dir_p = adir_p = 0"
            )
        if ir_bank.sample_rate != sample_rate:
            raise ConfigError(
                f"impulse responses are at {ir_bank.sample_rate} Hz but the waveforms at {sample_rate} Hz; "
                f"load the bank with sample_rate={sample_rate}"
            )
        if cfg.adir_p > 0:
            waves.append(AutoDeviceIR(ir_bank, cfg.adir_p, cfg.adir_tau, sample_rate))
        else:
            waves.append(DeviceIR(ir_bank, cfg.dir_p))
    if cfg.stretch_p > 0:
        waves.append(TimeStretch(cfg.stretch_p, cfg.stretch_rates, cfg.stretch_per_row))
    shift = round(cfg.roll_max_s * sample_rate)
    if shift > 0:
        waves.append(TimeRoll(shift))
    mixup = Mixup(cfg.mixup_alpha) if cfg.mixup_alpha > 0 else None
    specs: list[nn.Module] = []
    if cfg.freqm > 0:
        specs.append(FrequencyMasking(cfg.freqm))
    if cfg.timem > 0:
        specs.append(TimeMasking(cfg.timem))
    if cfg.fms_p > 0:
        specs.append(FreqMixStyle(cfg.fms_p, cfg.fms_alpha))
    return WavePipeline(waves, mixup), SpecPipeline(*specs)
