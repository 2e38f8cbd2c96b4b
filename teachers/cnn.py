"""CNN6-style teacher (PANNs, Kong et al. 2020): the plain CNN of the vivo DCASE 2023 Task 1a teacher trio.

Four blocks of 5x5 conv-BN-ReLU followed by 2x2 average pooling and dropout, then PANNs' clip pooling:
average over frequency, smooth over time (max- plus avg-pool of width 3), then max + mean over time,
which keeps both the loudest and the typical evidence, and a 512-unit embedding layer before the classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asc_dist.errors import ConfigError

SIZES: dict[str, dict] = {
    "default": {"channels": (64, 128, 256, 512), "embed_dim": 512},  # 4.6 M params (CNN6)
    "tiny": {"channels": (8, 16, 32, 64), "embed_dim": 64},
}


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 5, padding=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(F.avg_pool2d(torch.relu(self.bn(self.conv(x))), 2))


class CNN6(nn.Module):
    """Log-mel [B, 1, F, T] -> logits [B, n_classes]; F and T must be at least 16 (four 2x2 pools)."""

    front_end = "cnn"
    head_prefixes = ("classifier.",)

    def __init__(
        self,
        n_classes: int = 10,
        channels: tuple[int, ...] = (64, 128, 256, 512),
        embed_dim: int = 512,
        dropout: float = 0.2,
        head_dropout: float = 0.5,
    ):
        super().__init__()
        if not channels or min(channels) < 1:
            raise ConfigError(f"CNN6 channels must be a non-empty list of positive widths, got {channels}")
        self.n_classes = n_classes
        widths = (1, *channels)
        self.blocks = nn.Sequential(*[ConvBlock(a, b, dropout) for a, b in zip(widths[:-1], widths[1:])])
        self.head_dropout = nn.Dropout(head_dropout)
        self.embed = nn.Linear(channels[-1], embed_dim)
        self.classifier = nn.Linear(embed_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(x).mean(dim=2)  # [B, C, T']
        x = F.max_pool1d(x, 3, stride=1, padding=1) + F.avg_pool1d(x, 3, stride=1, padding=1)
        x = x.amax(dim=2) + x.mean(dim=2)
        x = torch.relu(self.embed(self.head_dropout(x)))
        return self.classifier(self.head_dropout(x))
