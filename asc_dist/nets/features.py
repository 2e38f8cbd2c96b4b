"""Log-mel front ends, one per model family, as `nn.Module`s that run on the compute device.

Follows CP-JKU's `AugmentMelSTFT` (fschmid56/cpjku_dcase23): pre-emphasis [-0.97, 1] (a valid convolution,
so a 1-s clip at 32 kHz gives 64 frames at hop 500), STFT with a symmetric Hann window, power spectrum,
Kaldi mel banks, `log(x + 1e-5)`, then `(x + 4.5) / 5`. During training the upper mel edge is jittered
by up to `fmax_aug_range` Hz around its evaluation value `sr/2 - fmax_aug_range/2`. The mel product always
runs in fp32, even under autocast.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import torch
import torchaudio
from torch import nn


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 32000
    n_fft: int = 4096
    win_length: int = 3072
    hop_length: int = 500
    n_mels: int = 256
    fmin: float = 0.0
    fmax_aug_range: int = 1000  # training jitter of the upper band edge, Hz (1 = off)

    @property
    def fmax(self) -> float:
        return self.sample_rate // 2 - self.fmax_aug_range // 2

    def frames(self, n_samples: int) -> int:
        """Frames produced for `n_samples` of audio (pre-emphasis drops one sample; STFT is centred)."""
        return 1 + (n_samples - 1) // self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)


# Student (CP-Mobile / DS-FlexiNet input): 1 x 256 x 64 per 1-s clip.
STUDENT_MEL = MelConfig()
# CP-ResNet teacher: same, hop 750 -> 1 x 256 x 43.
CPRESNET_MEL = MelConfig(hop_length=750)
# PaSST as hear21passt expects it: 128 mels, n_fft 1024, window 800, hop 320 -> 1 x 128 x 100.
PASST_MEL = MelConfig(n_fft=1024, win_length=800, hop_length=320, n_mels=128, fmax_aug_range=2000)
# Small-CNN teachers (MobileNetV2, BC-ResNet, CNN6): 128 mels keep them fast.
CNN_MEL = MelConfig(n_fft=2048, win_length=2048, hop_length=500, n_mels=128)

FRONT_ENDS = {"student": STUDENT_MEL, "cpresnet": CPRESNET_MEL, "passt": PASST_MEL, "cnn": CNN_MEL}

# One CPU front-end pass holds at most this much complex spectrogram (7 student clips, one ten-second CP-ResNet
# window): with the whole batch of 64 student clips in one pass the front end took 2.3x as long (ops/step_profile.py).
CHUNK_BYTES = 8 * 2**20


class LogMel(nn.Module):
    """Waveform [batch, samples] at `cfg.sample_rate` -> log-mel [batch, 1, n_mels, frames]."""

    def __init__(self, cfg: MelConfig = STUDENT_MEL, band_groups: int = 16):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.win_length, periodic=False), persistent=False)  # symmetric Hann
        self.register_buffer("eval_banks", self._banks(cfg.fmax), persistent=False)
        self.band_groups = band_groups
        bands = self._band_slices(self.eval_banks, band_groups) if band_groups else []
        self._spans = [(lo, hi) for lo, hi, _ in bands]  # FFT-bin span of each buffer _band{i}
        for i, (_, _, piece) in enumerate(bands):
            self.register_buffer(f"_band{i}", piece, persistent=False)

    @staticmethod
    def _band_slices(banks: torch.Tensor, groups: int) -> list[tuple[int, int, torch.Tensor]]:
        """The mel matrix cut into `groups` runs of consecutive filters, each kept only over the FFT bins where
        it is non-zero: (first bin, last bin + 1, the dense piece). The dense product is 256 x 2049 per frame,
        but a mel filter covers few bins, so 16 pieces hold every non-zero weight in 6 % of the entries."""
        step = -(-banks.shape[0] // groups)
        out = []
        for r0 in range(0, banks.shape[0], step):
            rows = banks[r0 : r0 + step]
            nz = (rows != 0).any(0).nonzero().flatten()
            lo, hi = (int(nz.min()), int(nz.max()) + 1) if len(nz) else (0, 1)
            out.append((lo, hi, rows[:, lo:hi].contiguous()))
        return out

    def mel_macs(self, frames: int) -> int:
        """Multiply-adds of the mel product per clip in eval mode (the banded form if on)."""
        if not self._spans:
            return self.eval_banks.numel() * frames
        return sum(getattr(self, f"_band{i}").numel() for i in range(len(self._spans))) * frames

    def _banks(self, fmax: float) -> torch.Tensor:
        banks, _ = torchaudio.compliance.kaldi.get_mel_banks(
            self.cfg.n_mels, self.cfg.n_fft, float(self.cfg.sample_rate), self.cfg.fmin, fmax, 100.0, -500.0, 1.0
        )
        return torch.nn.functional.pad(banks, (0, 1), value=0.0)  # Kaldi banks omit the Nyquist bin

    def chunk_rows(self, n_samples: int) -> int:
        """Clips per front-end pass on CPU: as many as keep one pass's complex spectrogram within CHUNK_BYTES,
        so that its intermediates stay in cache and in malloc's reused heap (`asc_dist.infra.allocator`)."""
        per_clip = (self.cfg.n_fft // 2 + 1) * self.cfg.frames(n_samples) * 8
        return max(1, CHUNK_BYTES // per_clip)

    def _train_banks(self) -> list[tuple[int, int, torch.Tensor]] | torch.Tensor:
        """The mel banks with this batch's jittered upper edge (one draw per batch), banded like the eval ones."""
        jitter = self.cfg.fmax_aug_range // 2 - int(torch.randint(self.cfg.fmax_aug_range, (1,)))
        banks = self._banks(self.cfg.fmax + jitter)  # on the CPU: cut into bands there, then moved
        if self.band_groups:  # the jittered banks, banded the same way (a dense product is 16x the work)
            return self._band_slices(banks, self.band_groups)
        return banks

    def _pieces(self, banks: list[tuple[int, int, torch.Tensor]] | torch.Tensor | None,
                device: torch.device) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
        """The mel matrix as pieces on `device` and the FFT-bin span each multiplies: `banks` from `_train_banks`,
        or None for the eval banks (one piece over every bin is the dense product)."""
        if isinstance(banks, list):
            return [piece.to(device) for _, _, piece in banks], [(lo, hi) for lo, hi, _ in banks]
        if banks is not None:
            return [banks.to(device)], [(0, banks.shape[1])]
        if self._spans:  # the same product over the non-zero band of each run of filters only
            return [getattr(self, f"_band{i}") for i in range(len(self._spans))], self._spans
        return [self.eval_banks], [(0, self.eval_banks.shape[1])]

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        if waves.dim() == 3:
            waves = waves.squeeze(1)
        banks = self._train_banks() if self.training and self.cfg.fmax_aug_range > 1 else None
        with torch.autocast(device_type=waves.device.type, enabled=False):  # the whole front end in fp32
            waves = waves.float()
            cfg, rows = self.cfg, self.chunk_rows(waves.shape[-1])
            args = (waves, self.window, cfg.n_fft, cfg.hop_length, cfg.win_length, *self._pieces(banks, waves.device))
            if torch.jit.is_tracing():  # the shipped file: its graph keeps the chunk loop and takes any batch size
                mel = _scripted_mel_power_in_chunks()(*args, rows)
            elif _exporting():  # ONNX and torch.compile: one pass, so the recorded graph takes any batch size
                mel = mel_power(*args)
            else:
                mel = mel_power_in_chunks(*args, rows)
        mel = (torch.log(mel + 1e-5) + 4.5) / 5.0
        return mel.unsqueeze(1)


def stft(x: torch.Tensor, window: torch.Tensor, n_fft: int, hop_length: int, win_length: int) -> torch.Tensor:
    """Complex STFT [B, n_fft/2+1, frames] of [B, samples], centred with reflection (torchaudio's Spectrogram with
    power=None is this call)."""
    return torch.stft(x, n_fft, hop_length, win_length, window, center=True, pad_mode="reflect", normalized=False,
                      onesided=True, return_complex=True)


def mel_power(waves: torch.Tensor, window: torch.Tensor, n_fft: int, hop_length: int, win_length: int,
              pieces: list[torch.Tensor], spans: list[tuple[int, int]]) -> torch.Tensor:
    """Mel power [B, n_mels, frames] of fp32 waves [B, samples]: pre-emphasis, |STFT|^2, then each piece of the
    mel matrix times the power over its span of FFT bins."""
    x = waves[:, 1:] - 0.97 * waves[:, :-1]  # pre-emphasis; as a conv1d it was 60x slower on CPU
    spec = torch.view_as_real(stft(x, window, n_fft, hop_length, win_length))  # [B, bins, frames, (re, im)]
    # |X|^2 as re^2 + im^2 (8x faster than torch's complex abs().square()), squared in place on the STFT's own
    # contiguous output: one temporary less
    spec.square_()
    power = spec[..., 0] + spec[..., 1]
    out: list[torch.Tensor] = []
    for i in range(len(pieces)):
        out.append(torch.matmul(pieces[i], power[:, spans[i][0] : spans[i][1]]))
    return torch.cat(out, dim=1)


def mel_power_in_chunks(waves: torch.Tensor, window: torch.Tensor, n_fft: int, hop_length: int, win_length: int,
                        pieces: list[torch.Tensor], spans: list[tuple[int, int]], rows: int) -> torch.Tensor:
    """`mel_power` of at most `rows` clips at a time on the CPU (one pass on a GPU): the same numbers, since the
    STFT and the mel product never mix clips, with one pass's intermediates in cache."""
    if waves.device.type != "cpu" or waves.shape[0] <= rows:
        return mel_power(waves, window, n_fft, hop_length, win_length, pieces, spans)
    out: list[torch.Tensor] = []
    for part in waves.split(rows):
        out.append(mel_power(part, window, n_fft, hop_length, win_length, pieces, spans))
    return torch.cat(out)


@functools.cache
def _scripted_mel_power_in_chunks() -> torch.jit.ScriptFunction:
    """`mel_power_in_chunks` as TorchScript, for traces: a traced loop would be unrolled for the traced batch size.
    One pass over a batch of 64 clips took 2.7x as long per clip as passes of 7 (`ops/bench_students.py`)."""
    return torch.jit.script(mel_power_in_chunks)


def _exporting() -> bool:
    """Recording a graph other than a trace (scripting, ONNX, torch.compile): one pass, so it takes any batch size."""
    return torch.jit.is_scripting() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


def front_end(name: str) -> LogMel:
    return LogMel(FRONT_ENDS[name])
