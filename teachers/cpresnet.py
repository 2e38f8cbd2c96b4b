"""CP-ResNet: the receptive-field-regularised ResNet of Koutini et al. (EUSIPCO 2019, TASLP 2021).

ASC generalises better when the receptive field over the spectrogram is bounded, so instead of stacking
3x3 convolutions everywhere, `rho` decides how many of them stay 3x3: the convolutions are visited in a
fixed order (stage, block, conv) and the k-th upgradable one is 3x3 only when rho > k (the schedule of
`kkoutini/cpjku_dcase20` / `cpjku_dcase23 models/cp_resnet.py`, expressed as one rule). Defaults give
CP-JKU's 128 K-parameter DCASE23 teacher (rho 8, base 32 channels, stage-3 cut by 36, blocks (2, 1, 1),
grouped stage 2) on the 256 x 43 CPRESNET_MEL input.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from asc_dist.errors import ConfigError

SIZES: dict[str, dict] = {
    "default": {},  # 128 K params, rho 8
    "tiny": {"base_channels": 16, "cut_channels": (0, 0, 0)},
}


def kernel_size(rho: int, stage: int, block: int, conv: int) -> int:
    """3 or 1 for conv `conv` (0/1) of block `block` in stage `stage` (0-based). Slots cover two blocks
    per stage; the first conv is always 3x3, the second always 1x1, later blocks always 1x1."""
    if block >= 2:
        return 1
    slot = stage * 4 + block * 2 + conv
    if slot <= 1:
        return 3 if slot == 0 else 1
    return 3 if rho > slot - 1 else 1


class BasicBlock(nn.Module):
    """Two convolutions (k1, k2 in {1, 3}, 'same' padding) with BN, residual add, ReLU after the add."""

    def __init__(self, c_in: int, c_out: int, k1: int, k2: int, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, k1, padding=k1 // 2, groups=groups, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, k2, padding=k2 // 2, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, groups=groups, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu_(self.bn1(self.conv1(x)))  # in place: batch norm's backward reads its input, not its output
        y = self.bn2(self.conv2(y))
        return torch.relu_(y + self.shortcut(x))


class CPResNet(nn.Module):
    """Log-mel [B, 1, F, T] -> logits [B, n_classes]: 5x5/2 stem, three stages of BasicBlocks (max-pools
    in stage 1 only: 2x2 first, then 2x1 over frequency), 1x1 conv to classes, BN, global average."""

    front_end = "cpresnet"
    head_prefixes = ("head.",)

    def __init__(
        self,
        n_classes: int = 10,
        rho: int = 8,
        base_channels: int = 32,
        channels_multiplier: int = 2,
        cut_channels: tuple[int, int, int] = (0, 0, 36),
        n_blocks: tuple[int, int, int] = (2, 1, 1),
        groups: tuple[int, int, int] = (1, 2, 1),
    ):
        super().__init__()
        self.n_classes, self.rho = n_classes, rho
        widths = [base_channels * channels_multiplier**i - cut for i, cut in enumerate(cut_channels)]
        for width, group in zip(widths, groups):
            if width <= 0 or width % group:
                raise ConfigError(f"CP-ResNet stage widths {widths} must be positive and divisible by groups {groups}")
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 5, stride=2, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        stages, c_in = [], widths[0]
        for s, (width, blocks, group) in enumerate(zip(widths, n_blocks, groups)):
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if s == 0 else []
            for b in range(blocks):
                k1, k2 = kernel_size(rho, s, b, 0), kernel_size(rho, s, b, 1)
                layers.append(BasicBlock(c_in, width, k1, k2, group))
                c_in = width
                if s == 0 and b + 1 in (1, 2, 4):  # CP-JKU's stage-1 pooling positions
                    layers.append(nn.MaxPool2d((2, 1)))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.Conv2d(c_in, n_classes, 1, bias=False), nn.BatchNorm2d(n_classes))
        self._init_weights(sum(n_blocks))

    def _init_weights(self, n_blocks: int) -> None:
        """He init, then Fixup-style residual scaling as CP-JKU do: first conv of each block scaled by
        n_blocks^-1/2, second conv and the classifier conv start at zero, so every block starts as identity."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, BasicBlock):
                fan = m.conv1.kernel_size[0] * m.conv1.kernel_size[1] * m.conv1.out_channels
                nn.init.normal_(m.conv1.weight, 0.0, math.sqrt(2.0 / fan) / math.sqrt(n_blocks))
                nn.init.zeros_(m.conv2.weight)
        nn.init.zeros_(self.head[0].weight)

    def kernel_sizes(self) -> list[tuple[int, int]]:
        """(k1, k2) per block, in order: what rho chose."""
        return [(m.conv1.kernel_size[0], m.conv2.kernel_size[0]) for m in self.modules() if isinstance(m, BasicBlock)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.head(x).mean(dim=(2, 3))
