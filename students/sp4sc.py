"""SP4SC (Puy, Jain, Bursuc, DCASE 2021 Task 1a technical report, section 3.2): CNN6 with separable convolution blocks.

A separable convolution block (SCB, section 3.2.1) first mixes channels with a 1x1 conv g, then filters each
channel with a 3x1 and a 1x3 depthwise conv (dilation 2, as in the reference code) whose outputs are summed,
then BN, ReLU and 2x2 average pooling: c_out (c_in + 6) conv weights. Four SCBs, a frequency-mean plus
time max+mean global pooling, and a two-layer MLP. A BN over mel bins normalises the input (CNN6's `bn0`).

`merge_bn()` is the test-time trick of section 3.2.2: eq. (2)-(4) fold each block's BN into its depthwise
kernels (w~ = gamma / sigma * w) and a bias (beta~ = beta - gamma * mu / sigma), and `bn0` becomes a per-mel
affine. The default preset reproduces Figure 4: 62,474 parameters at test time (torch parameter count;
Figure 4's 64,335 at training time counts the BN running statistics as well, torch counts 62,922).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.ao.quantization as tq
import torch.nn.functional as F
from torch import nn

from asc_dist.errors import ConfigError


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (3)-(4): the BN as y = scale * x + shift with running statistics."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - scale * bn.running_mean


class MelAffine(nn.Module):
    """Per-mel-bin y = w * x + b: what `bn0` becomes after merging (kept in float, see SP4SC.fuse_model)."""

    def __init__(self, n_mels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, 1, n_mels, 1))
        self.bias = nn.Parameter(torch.zeros(1, 1, n_mels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


class MelNorm(nn.Module):
    """BatchNorm over mel bins of a [B, 1, F, T] spectrogram (CNN6's `bn0`): each bin gets its own statistics."""

    def __init__(self, n_mels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(n_mels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.transpose(1, 2)).transpose(1, 2)

    def merged(self) -> MelAffine:
        scale, shift = _bn_scale_shift(self.bn)
        affine = MelAffine(scale.numel()).to(scale.device)
        affine.weight.data.copy_(scale.detach().view(1, 1, -1, 1))
        affine.bias.data.copy_(shift.detach().view(1, 1, -1, 1))
        return affine


class SeparableConvBlock(nn.Module):
    """SCB (Figure 3): 1x1 conv, then 3x1 + 1x3 depthwise convs summed, BN, ReLU, 2x2 average pool."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 2):
        super().__init__()
        self.mix = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.freq = nn.Conv2d(out_ch, out_ch, (3, 1), padding=(dilation, 0), dilation=(dilation, 1),
                              groups=out_ch, bias=False)
        self.time = nn.Conv2d(out_ch, out_ch, (1, 3), padding=(0, dilation), dilation=(1, dilation),
                              groups=out_ch, bias=False)
        self.add = nn.quantized.FloatFunctional()
        self.bn = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mix(x)
        x = self.add.add(self.freq(x), self.time(x))
        return self.pool(self.relu(self.bn(x)))

    def merge_bn(self) -> None:
        """Eq. (2)-(4): scale both depthwise kernels by gamma/sigma, put the shifted beta in one bias."""
        if not isinstance(self.bn, nn.BatchNorm2d):
            return
        scale, shift = _bn_scale_shift(self.bn)
        with torch.no_grad():
            self.freq.weight.mul_(scale.view(-1, 1, 1, 1))
            self.time.weight.mul_(scale.view(-1, 1, 1, 1))
            self.time.bias = nn.Parameter(shift.detach().clone())
        self.bn = nn.Identity()


@dataclass(frozen=True)
class SP4SCConfig:
    channels: tuple[int, int, int, int] = (64, 128, 128, 128)
    n_mels: int = 256
    dilation: int = 2
    dropout: float = 0.0
    n_classes: int = 10
    in_channels: int = 1

    def __post_init__(self) -> None:
        if len(self.channels) != 4 or min(self.channels) < 1:
            raise ConfigError(f"SP4SC has four separable blocks: channels needs 4 positive ints, got {self.channels}")
        if self.n_classes < 1:
            raise ConfigError(f"n_classes must be >= 1, got {self.n_classes}")


# "default": the reference Cnn6_60k (Figure 4 sizes); about 60 M MACs on the 256x64 student mel, over the
# DCASE 30 M limit (the 2021 task capped parameters only). "small": half the channels, inside both limits.
PRESETS: dict[str, SP4SCConfig] = {
    "default": SP4SCConfig(),
    "small": SP4SCConfig(channels=(32, 64, 64, 64)),
}


class SP4SC(nn.Module):
    """Log-mel [B, 1, n_mels, T] -> logits [B, n_classes]; int8-QAT ready (stubs, FloatFunctional, fuse_model).

    The mel-bin normalisation runs in float before the QuantStub (its statistics vary along frequency, which no
    int8 conv kernel can express); everything after it is quantised.
    """

    front_end = "student"

    def __init__(self, cfg: SP4SCConfig):
        super().__init__()
        self.cfg = cfg
        self.bn0: nn.Module = MelNorm(cfg.n_mels)
        self.quant = tq.QuantStub()
        chans = (cfg.in_channels, *cfg.channels)
        self.blocks = nn.Sequential(
            *[SeparableConvBlock(chans[i], chans[i + 1], cfg.dilation) for i in range(4)]
        )
        self.pool_add = nn.quantized.FloatFunctional()
        self.dropout = nn.Dropout(cfg.dropout)
        self.fc1 = nn.Linear(cfg.channels[-1], cfg.channels[-1])
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(cfg.channels[-1], cfg.n_classes)
        self.dequant = tq.DeQuantStub()
        self.bn0.qconfig = None  # float island: never quantised by prepare_qat / convert

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant(self.bn0(x))
        x = self.blocks(x)
        x = x.mean(dim=2, keepdim=True)  # frequency mean: [B, C, 1, T]
        x = self.pool_add.add(F.max_pool2d(x, (1, x.shape[-1])), F.avg_pool2d(x, (1, x.shape[-1])))
        x = self.dropout(torch.flatten(x, 1))
        x = self.dropout(self.relu(self.fc1(x)))
        return self.dequant(self.fc2(x))

    def merge_bn(self) -> "SP4SC":
        """Fold every BN into the preceding convs (eq. 2-4) in place, for inference; returns self.

        Needs running statistics, so the outputs match the unmerged model in eval mode only.
        """
        for block in self.blocks:
            block.merge_bn()
        if isinstance(self.bn0, MelNorm):
            self.bn0 = self.bn0.merged()
            self.bn0.qconfig = None
        return self

    def fuse_model(self) -> "SP4SC":
        """Fuse each block's BN+ReLU in place (the BN follows a sum of two convs, so it cannot join a conv)."""
        fuse = tq.fuse_modules_qat if self.training else tq.fuse_modules
        for block in self.blocks:
            if isinstance(block.bn, nn.BatchNorm2d):
                fuse(block, ["bn", "relu"], inplace=True)
        if isinstance(self.relu, nn.ReLU):
            fuse(self, ["fc1", "relu"], inplace=True)
        return self
