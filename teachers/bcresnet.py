"""BC-ResNet (broadcasted residual learning, Kim et al. 2021), ASC variant of `yqcai888/easy_dcase_task1`.

Each block convolves along frequency only (depthwise, with SubSpectralNorm so every sub-band gets its own
statistics), averages frequency away, convolves along time on that 1-D summary, and broadcasts the result
back over all frequencies: a 2-D receptive field at near 1-D cost. Between stages, ResNorm (identity plus
frequency-wise instance norm) removes device-specific per-band offsets. `base_channels` is the width
multiplier; the stage widths are 1, 1.5, 2 and 2.5 times it.
"""

from __future__ import annotations

import torch
from torch import nn

from asc_dist.errors import ConfigError

SIZES: dict[str, dict] = {
    "default": {"base_channels": 40, "sub_bands": 4},
    "tiny": {"base_channels": 16, "sub_bands": 2},
}
# 'N' = ResNorm, 'M' = 2x2 max-pool, numbers = block width in units of base_channels (easy_dcase depth 15).
LAYOUT = ("N", 1, 1, "N", "M", 1.5, 1.5, "N", "M", 2, 2, "N", 2.5, 2.5, 2.5, "N")


class ResNorm(nn.Module):
    """lambda * x + frequency-wise instance norm of x (statistics over channels and time)."""

    def __init__(self, lamb: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.lamb, self.eps = lamb, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 3), keepdim=True)
        var = x.var(dim=(1, 3), keepdim=True)
        return self.lamb * x + (x - mean) / torch.sqrt(var + self.eps)


class SubSpectralNorm(nn.Module):
    """BatchNorm with separate statistics per frequency sub-band (Chang et al. 2021)."""

    def __init__(self, channels: int, sub_bands: int):
        super().__init__()
        self.sub_bands = sub_bands
        self.bn = nn.BatchNorm2d(channels * sub_bands)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, f, t = x.shape
        if f % self.sub_bands:
            raise ValueError(f"SubSpectralNorm: {f} frequency bins do not split into {self.sub_bands} sub-bands")
        return self.bn(x.reshape(n, c * self.sub_bands, f // self.sub_bands, t)).reshape(n, c, f, t)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3)))[:, :, None, None]


class BroadcastBlock(nn.Module):
    """Frequency-depthwise conv + SSN -> mean over frequency -> temporal-depthwise conv + BN, SiLU, 1x1
    conv, dropout -> broadcast-add to the frequency branch (and the input when widths match) -> SE, ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int, dropout: float, sub_bands: int):
        super().__init__()
        self.transition = None
        if c_in != c_out:
            self.transition = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())
        pad = (kernel - 1) // 2
        self.freq_dw = nn.Conv2d(c_out, c_out, (kernel, 1), padding=(pad, 0), groups=c_out, bias=False)
        self.ssn = SubSpectralNorm(c_out, sub_bands)
        self.temp_dw = nn.Sequential(
            nn.Conv2d(c_out, c_out, (1, kernel), padding=(0, pad), groups=c_out, bias=False), nn.BatchNorm2d(c_out)
        )
        self.pointwise = nn.Sequential(nn.SiLU(), nn.Conv2d(c_out, c_out, 1, bias=False), nn.Dropout(dropout))
        self.se = SqueezeExcite(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        if self.transition is not None:
            x = self.transition(x)
        auxiliary = self.ssn(self.freq_dw(x))
        y = self.pointwise(self.temp_dw(auxiliary.mean(dim=2, keepdim=True)))
        y = auxiliary + y if self.transition is not None else identity + auxiliary + y
        return torch.relu(self.se(y))


class BCResNet(nn.Module):
    """Log-mel [B, 1, F, T] -> logits [B, n_classes]; F must stay divisible by `sub_bands` after the
    stride-2 stem and two max-pools (128 mel bins: 64, 32, 16)."""

    front_end = "cnn"
    head_prefixes = ("classifier.",)

    def __init__(
        self, n_classes: int = 10, base_channels: int = 40, kernel: int = 3, dropout: float = 0.1, sub_bands: int = 4
    ):
        super().__init__()
        if base_channels < 1 or sub_bands < 1 or kernel % 2 == 0:
            raise ConfigError(
                f"BC-ResNet needs base_channels >= 1, sub_bands >= 1 and an odd kernel, got "
                f"{base_channels}, {sub_bands}, {kernel}"
            )
        self.n_classes = n_classes
        width = 2 * base_channels
        self.stem = nn.Conv2d(1, width, 5, stride=2, padding=2, bias=False)
        layers: list[nn.Module] = []
        for item in LAYOUT:
            if item == "N":
                layers.append(ResNorm())
            elif item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                c_out = int(item * base_channels)
                layers.append(BroadcastBlock(width, c_out, kernel, dropout, sub_bands))
                width = c_out
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(width, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(self.stem(x))).mean(dim=(2, 3))
