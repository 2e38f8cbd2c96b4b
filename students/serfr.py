"""SERFR-CNN (Fei, Li, Jia, DCASE 2023 Task 1a technical report, Table 1): a receptive-field-regularised
CNN (RFR-CNN, Koutini et al.) with squeeze-excitation after each residual block.

Table 1, read top to bottom:
  5x5 conv-32-BN-ReLU -> 2x3 average pool
  -> RFR block 1: 3 x [1x1 conv, 3x3 conv] -> SE -> transition (1x1 conv + residual 2x2 max pool)
  -> RFR block 2: 3 x [1x1 conv, 1x1 conv] -> SE -> transition
  -> RFR block 3: 3 x [1x1 conv, 1x1 conv] -> SE -> transition
  -> 1x1 conv-256 -> global average pool -> dense.
Only blocks 1's units see 3x3 context; blocks 2-3 are 1x1 only, which is what caps the receptive field.

Where the report is silent we choose, and say so:
- `width` (the 24 / 32 of "SERFR-CNN-24/-32") is the channel count of the stem and of every RFR block.
- The stem conv strides 2 and the 2x3 pool (time x frequency in the report's Keras layout, so 3 x 2 over our
  [frequency, time] axes) strides by its size: on the 1x256x64 student mel this keeps SERFR-CNN-32 under the
  DCASE 30 M MAC limit (the report used 28 frames at 16 kHz, half our frame count).
- A transition is out = maxpool2x2(x + ReLU(BN(conv1x1(x)))): the 1x1 conv is a residual branch and the max
  pool is applied to the residual sum ("1x1 conv + RES 2x2 max pool").
- An RFR unit is ReLU(x + BN(conv_b(ReLU(BN(conv_a(x)))))), a ResNet basic block with the table's kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.ao.quantization as tq
from torch import nn

from asc_dist.errors import ConfigError
from students.dsflexinet import ConvBNAct, fuse_conv_units


class SqueezeExcite(nn.Module):
    """Channel attention (Hu et al.): x * sigmoid(W2 ReLU(W1 GAP(x))); the product is a FloatFunctional."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.gate = nn.Sigmoid()
        self.mul = nn.quantized.FloatFunctional()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))
        return self.mul.mul(x, w)


class RFRUnit(nn.Module):
    """ResNet basic block with the kernel pair of Table 1 (1x1 then 3x3 in block 1, 1x1 then 1x1 later)."""

    def __init__(self, channels: int, second_kernel: int):
        super().__init__()
        self.conv_a = ConvBNAct(channels, channels, 1)
        self.conv_b = ConvBNAct(channels, channels, second_kernel, act=False)
        self.add = nn.quantized.FloatFunctional()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.add.add(x, self.conv_b(self.conv_a(x))))


class Transition(nn.Module):
    """1x1 conv residual branch, then a 2x2 max pool of the residual sum (Table 1 'Transition Layer')."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = ConvBNAct(channels, channels, 1)
        self.add = nn.quantized.FloatFunctional()
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.add.add(x, self.conv(x)))


@dataclass(frozen=True)
class SERFRConfig:
    width: int = 32
    units_per_block: int = 3
    block_kernels: tuple[int, ...] = (3, 1, 1)  # second kernel of each RFR block's units
    head_channels: int = 256
    se_reduction: int = 4
    n_classes: int = 10
    in_channels: int = 1

    def __post_init__(self) -> None:
        if self.width < 4 or self.units_per_block < 1 or not self.block_kernels:
            raise ConfigError(f"SERFR-CNN needs width >= 4, units_per_block >= 1 and block kernels; got {self}")
        if self.n_classes < 1:
            raise ConfigError(f"n_classes must be >= 1, got {self.n_classes}")


PRESETS: dict[str, SERFRConfig] = {"w24": SERFRConfig(width=24), "w32": SERFRConfig(width=32)}


class SERFRCNN(nn.Module):
    """Log-mel [B, 1, 256, 64] -> logits [B, n_classes]; int8-QAT ready (stubs, FloatFunctional, fuse_model)."""

    front_end = "student"

    def __init__(self, cfg: SERFRConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.quant = tq.QuantStub()
        self.stem = ConvBNAct(cfg.in_channels, w, 5, stride=2)
        self.stem_pool = nn.AvgPool2d((3, 2), (3, 2))
        blocks: list[nn.Module] = []
        for kernel in cfg.block_kernels:
            units = [RFRUnit(w, kernel) for _ in range(cfg.units_per_block)]
            blocks.append(nn.Sequential(*units, SqueezeExcite(w, cfg.se_reduction), Transition(w)))
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBNAct(w, cfg.head_channels, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cfg.head_channels, cfg.n_classes)
        self.dequant = tq.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_pool(self.stem(self.quant(x)))
        x = self.head(self.blocks(x))
        x = torch.flatten(self.pool(x), 1)
        return self.dequant(self.classifier(x))

    def fuse_model(self) -> "SERFRCNN":
        """Fuse conv-BN(-ReLU) in place for QAT (train mode) or PTQ/inference (eval mode)."""
        return fuse_conv_units(self)
