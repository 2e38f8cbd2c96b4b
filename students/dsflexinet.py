"""DS-FlexiNet (Chen et al., arXiv 2412.20722, seed 000 section II-A): the DS-FlexiNet student family.

A stem of two 3x3 stride-2 convolutions with BN+ReLU, then stages of MobileNetV2 inverted-residual blocks
(1x1 expand, 3x3 depthwise, 1x1 linear projection) whose residual path adapts to the block: identity when shape is
kept, average pooling when the block strides, a 1x1 conv+BN when the channel count changes. Channels grow by stage.

The paper gives no public code; where it is silent we choose, and say so:
- Residual Normalization (section II-B, eq. 1-2) or plain BN (`norm="rn"|"bn"`, the swap of Table V's ablation)
  sits at the entry of every stage, on the residual stream, as QTI's RN normalises a block's input. The
  conv-BN(-ReLU) units inside blocks keep BN in both modes, so they fold away for int8.
- Head: global average pooling and one linear layer. Stage 1 keeps the stem's resolution (64x16 for a 256x64
  input), every later stage halves it in its first block.

Presets `sm1`..`sm4` reproduce Table II's sizes on the 1x256x64 student mel (torchinfo count, before fusion).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.ao.quantization as tq
import torch.nn.functional as F
from torch import nn

from asc_dist.errors import ConfigError

NORMS = ("rn", "bn")


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d (+ ReLU): the unit every student fuses for int8 QAT."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int | tuple[int, int] = 1,
        stride: int | tuple[int, int] = 1,
        groups: int = 1,
        act: bool = True,
        padding: int | tuple[int, int] | None = None,
    ):
        k = (kernel, kernel) if isinstance(kernel, int) else kernel
        pad = (k[0] // 2, k[1] // 2) if padding is None else padding
        layers: list[tuple[str, nn.Module]] = [
            ("conv", nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=pad, groups=groups, bias=False)),
            ("bn", nn.BatchNorm2d(out_ch)),
        ]
        if act:
            layers.append(("act", nn.ReLU()))
        super().__init__(OrderedDict(layers))

    def fuse(self) -> None:
        """Fold BN (and ReLU) into the conv: QAT-style in train mode, exact folding in eval mode."""
        names = [n for n in ("conv", "bn", "act") if n in self._modules]
        fuse = tq.fuse_modules_qat if self.training else tq.fuse_modules
        fuse(self, names, inplace=True)


def fuse_conv_units(model: nn.Module) -> nn.Module:
    """Fuse every `ConvBNAct` of `model` in place (a student's `fuse_model`)."""
    for module in list(model.modules()):
        if isinstance(module, ConvBNAct) and isinstance(module._modules.get("bn"), nn.BatchNorm2d):
            module.fuse()
    return model


class ResidualNorm(nn.Module):
    """Residual Normalization, eq. (1)-(2) of seed 000: instance norm mixed with the identity by a trainable
    lambda, RN(x) = lambda * x + (1 - lambda) * IN(x), lambda clamped to [0, 1].

    IN (eq. 1) normalises every channel of every clip by its own mean and variance over frequency and time,
    (x - mu_bc) / sqrt(var_bc + eps) with mu_bc, var_bc taken over (F, T), no affine: it strips per-channel
    device colouring. The identity path carries back the information IN removed. Extremes: lambda = 0 is pure
    instance norm, lambda = 1 the identity. QTI's ResNorm (ref. [16]) writes lambda * x + IN(x); the two differ
    only by the factor (1 - lambda) on the whole output, which the following convolution absorbs, and the convex
    form keeps both extremes meaningful.

    Int8 QAT: instance statistics have no int8 kernel in eager mode, so RN is a float island: it dequantises its
    input and re-quantises its output with its own stubs (identity ops in the fp32 model), as CP-JKU's GRN does.
    """

    def __init__(self, lam: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.lam = nn.Parameter(torch.tensor(float(lam)))
        self.eps = eps
        self.dequant = tq.DeQuantStub()
        self.quant = tq.QuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dequant(x)
        lam = self.lam.clamp(0.0, 1.0)
        x = lam * x + (1.0 - lam) * F.instance_norm(x, eps=self.eps)
        return self.quant(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 block with a shape-adaptive shortcut (section II-A): out = project(dw(expand(x))) + short(x)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: float):
        super().__init__()
        hidden = max(1, int(round(in_ch * expansion)))
        layers: list[nn.Module] = []
        if hidden != in_ch:
            layers.append(ConvBNAct(in_ch, hidden, 1))
        layers.append(ConvBNAct(hidden, hidden, 3, stride=stride, groups=hidden))
        layers.append(ConvBNAct(hidden, out_ch, 1, act=False))  # linear bottleneck
        self.body = nn.Sequential(*layers)
        short: list[nn.Module] = []
        if stride != 1:
            short.append(nn.AvgPool2d(stride, stride, ceil_mode=True))
        if in_ch != out_ch:
            short.append(ConvBNAct(in_ch, out_ch, 1, act=False))
        self.shortcut = nn.Sequential(*short)
        self.add = nn.quantized.FloatFunctional()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add.add(self.body(x), self.shortcut(x))


@dataclass(frozen=True)
class StageSpec:
    """One stage: `blocks` inverted residuals at `channels`; the first one strides by `stride`."""

    channels: int
    blocks: int
    stride: int = 2
    expansion: float = 2.0


@dataclass(frozen=True)
class DSFlexiNetConfig:
    stem_channels: tuple[int, int] = (8, 16)
    stages: tuple[StageSpec, ...] = (StageSpec(16, 3, 1), StageSpec(20, 3), StageSpec(24, 3), StageSpec(32, 2))  # sm2
    n_classes: int = 10
    in_channels: int = 1
    norm: str = "rn"  # "rn": Residual Normalization at each stage entry; "bn": BatchNorm2d there
    rn_lambda: float = 0.1  # initial lambda of eq. (2) (QTI's recommended value)

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ConfigError(f"DS-FlexiNet norm must be one of {list(NORMS)}, got {self.norm!r}")
        if not self.stages:
            raise ConfigError("DS-FlexiNet needs at least one stage (use a preset: sm1, sm2, sm3, sm4)")
        if self.n_classes < 1:
            raise ConfigError(f"n_classes must be >= 1, got {self.n_classes}")


def _s(channels: int, blocks: int, stride: int, expansion: float = 2.0) -> StageSpec:
    return StageSpec(channels, blocks, stride, expansion)


# Table II sizes on a 1x1x256x64 input (params / MACs): sm1 13.76 K / 3.88 M, sm2 30.69 K / 8.27 M,
# sm3 54.98 K / 14.34 M, sm4 126.12 K / 23.03 M. The paper does not list its widths; these channel and block
# counts (expansion 2, four stages, stride 1 then 2) were searched to land within 1.5 % of both numbers.
PRESETS: dict[str, DSFlexiNetConfig] = {
    "sm1": DSFlexiNetConfig(stem_channels=(8, 8), stages=(_s(12, 2, 1), _s(16, 3, 2), _s(20, 2, 2), _s(24, 1, 2))),
    "sm2": DSFlexiNetConfig(stem_channels=(8, 16), stages=(_s(16, 3, 1), _s(20, 3, 2), _s(24, 3, 2), _s(32, 2, 2))),
    "sm3": DSFlexiNetConfig(stem_channels=(8, 16), stages=(_s(24, 3, 1), _s(28, 3, 2), _s(32, 3, 2), _s(48, 2, 2))),
    "sm4": DSFlexiNetConfig(stem_channels=(8, 24), stages=(_s(28, 3, 1), _s(40, 3, 2), _s(48, 3, 2), _s(96, 2, 2))),
}


class DSFlexiNet(nn.Module):
    """Log-mel [B, 1, 256, 64] -> logits [B, n_classes]; int8-QAT ready (stubs, FloatFunctional, fuse_model)."""

    front_end = "student"

    def __init__(self, cfg: DSFlexiNetConfig):
        super().__init__()
        self.cfg = cfg
        c0, c1 = cfg.stem_channels
        self.quant = tq.QuantStub()
        self.stem = nn.Sequential(ConvBNAct(cfg.in_channels, c0, 3, stride=2), ConvBNAct(c0, c1, 3, stride=2))
        stages: list[nn.Module] = []
        in_ch = c1
        for spec in cfg.stages:
            blocks: list[nn.Module] = [self._norm(in_ch)]
            for i in range(spec.blocks):
                blocks.append(InvertedResidual(in_ch, spec.channels, spec.stride if i == 0 else 1, spec.expansion))
                in_ch = spec.channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_ch, cfg.n_classes)
        self.dequant = tq.DeQuantStub()

    def _norm(self, channels: int) -> nn.Module:
        return ResidualNorm(self.cfg.rn_lambda) if self.cfg.norm == "rn" else nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant(x)
        x = self.stages(self.stem(x))
        x = torch.flatten(self.pool(x), 1)
        return self.dequant(self.classifier(x))

    def fuse_model(self) -> "DSFlexiNet":
        """Fuse conv-BN(-ReLU) in place for QAT (train mode) or PTQ/inference (eval mode)."""
        return fuse_conv_units(self)
