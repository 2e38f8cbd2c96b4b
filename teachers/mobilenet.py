"""MobileNetV2 teacher (one of the three teachers of the vivo DCASE 2023 Task 1a technical report) from timm, built without pretrained weights.

timm's ImageNet weights are RGB and would need a download; the teacher is built for one input channel and
trained from scratch, or loaded from a local state dict through `teachers.families` (`weights=`).
"""

from __future__ import annotations

import torch
from torch import nn

from asc_dist.errors import ConfigError

WIDTHS = ("035", "050", "075", "100", "140")
SIZES: dict[str, dict] = {
    "default": {"width": "100"},  # 2.2 M params at 10 classes
    "tiny": {"width": "035"},  # 0.4 M
}


class MobileNetV2Teacher(nn.Module):
    """Log-mel [B, 1, F, T] -> logits [B, n_classes]; `width` picks timm's `mobilenetv2_<width>`."""

    front_end = "cnn"
    head_prefixes = ("net.classifier.",)

    def __init__(self, n_classes: int = 10, width: str = "100", drop_rate: float = 0.2):
        super().__init__()
        if width not in WIDTHS:
            raise ConfigError(f"MobileNetV2 width {width!r} is not one of {', '.join(WIDTHS)}")
        self.n_classes = n_classes
        import timm  # imported where used: 2 s that a run without this family should not pay

        self.net = timm.create_model(
            f"mobilenetv2_{width}", pretrained=False, in_chans=1, num_classes=n_classes, drop_rate=drop_rate
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
