"""DS-FlexiNet (Chen et al., arXiv 2412.20722, section II-A): the DS-FlexiNet student family.

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
from torch.autograd.function import once_differentiable

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
            layers.append(("act", nn.ReLU(inplace=True)))  # BN backward reads its input, not this output
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
    """Residual Normalization, eq. (1)-(2) of arXiv 2412.20722: instance norm mixed with the identity by a trainable
    lambda, RN(x) = lambda * x + (1 - lambda) * IN(x), lambda clamped to [0, 1].

    IN (eq. 1) normalises every channel of every clip by its own mean and variance over frequency and time,
    (x - mu_bc) / sqrt(var_bc + eps) with mu_bc, var_bc taken over (F, T), no affine: it strips per-channel
    device colouring. The identity path carries back the information IN removed. Extremes: lambda = 0 is pure
    instance norm, lambda = 1 the identity. QTI's ResNorm (ref. [16]) writes lambda * x + IN(x); the two differ
    only by the factor (1 - lambda) on the whole output, which the following convolution absorbs, and the convex
    form keeps both extremes meaningful.

    Int8: `mix` observes the output range during QAT (its add is the plain sum in fp32); `tq.convert` makes the
    module a `FloatIslandResidualNorm` (`quantized_class` below): dequantise, instance norm, requantise. RN also
    has an all-int8 form, `QuantizedResidualNorm`; measured side by side (ops/bench_students.py, traced, batch 1,
    one thread) it takes 1.16-1.25x the float island's time for sm1-sm4 (torch's per-op cost at batch 1 outweighs
    the arithmetic it saves), so the float island ships.
    """

    def __init__(self, lam: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.lam = nn.Parameter(torch.tensor(float(lam)))
        self.eps = eps
        self.mix = torch.ao.nn.quantized.FloatFunctional()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lam = self.lam.clamp(0.0, 1.0)
        if self.training and torch.is_grad_enabled() and x.device.type == "cpu" and not torch.jit.is_tracing():
            normed = InstanceNormTwoPass.apply(x, self.eps)
        else:  # eval, export and GPU: torch's own kernel (the shipped graph keeps one instance_norm op)
            normed = F.instance_norm(x, eps=self.eps)
        return self.mix.add(lam * x, (1.0 - lam) * normed)


def centred_and_rstd(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """IN's two plain passes over (F, T) in the tensor's own memory order: x - mu, and 1 / sqrt(var + eps)."""
    centred = x - x.mean((2, 3), keepdim=True)
    return centred, torch.rsqrt(centred.square().mean((2, 3), keepdim=True) + eps)


class InstanceNormTwoPass(torch.autograd.Function):
    """IN of eq. (1) for CPU training: the mean over (F, T), then the mean square of the centred values (two plain
    passes), in the tensor's own memory order, with the closed-form backward. `F.instance_norm` copies a
    channels-last tensor to NCHW and back in both directions, and `torch.var_mean` over (F, T) is a Welford loop
    about 60x slower than a mean there: RN forward+backward on sm2's [64, 16, 64, 16] stage input, channels-last, one
    thread, 11.9 -> 4.6 ms (`ops/bench_students.py` step profile has the whole step). Same values within float
    rounding (tests/test_fast_paths.py)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, eps: float) -> torch.Tensor:
        centred, rstd = centred_and_rstd(x, eps)
        normed = centred.mul_(rstd)
        ctx.save_for_backward(normed, rstd)
        return normed

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        # y = (x - mu) * rstd over n = F * T values: dL/dx = rstd * (g - mean(g) - y * mean(g * y))
        normed, rstd = ctx.saved_tensors
        mean_g = grad.mean((2, 3), keepdim=True)
        mean_gy = (grad * normed).mean((2, 3), keepdim=True)
        return (grad - mean_g).addcmul_(normed, mean_gy, value=-1.0).mul_(rstd), None


class FloatIslandResidualNorm(nn.Module):
    """Residual Normalization in a converted int8 model: dequantise, RN in float, requantise to the range QAT
    observed (what `tq.convert` makes of a QAT-trained `ResidualNorm`)."""

    def __init__(self, lam: float, eps: float, scale: float, zero_point: int):
        super().__init__()
        self.lam, self.eps, self.scale, self.zero_point = lam, eps, scale, zero_point

    @classmethod
    def from_float(cls, mod: "ResidualNorm", use_precomputed_fake_quant: bool = False):
        # children are converted first: mix is now a QFunctional holding the output's scale and zero point
        return cls(float(mod.lam.detach().clamp(0.0, 1.0)), mod.eps, float(mod.mix.scale), int(mod.mix.zero_point))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # IN as two plain passes in the tensor's own (channels-last) order, as InstanceNormTwoPass: F.instance_norm
        # copies it to NCHW and back, 97 -> 41 us on sm2's [1, 16, 64, 16] at batch 1 (the same int8 output)
        y = x.dequantize()
        centred, rstd = centred_and_rstd(y, self.eps)
        out = centred.mul_((1.0 - self.lam) * rstd).add_(y, alpha=self.lam)
        return torch.quantize_per_tensor(out, self.scale, self.zero_point, x.dtype)

    def extra_repr(self) -> str:
        return f"lam={self.lam:.4f}, scale={self.scale:.5f}, zero_point={self.zero_point}"


class QuantizedResidualNorm(FloatIslandResidualNorm):
    """Residual Normalization on int8 tensors end to end, no float island (select it with
    `convert_int8(model, overrides={ResidualNorm: QuantizedResidualNorm})`). For one clip RN is a per-channel
    affine map, RN(x)_c = a_c x_c + b_c with a_c = lambda + (1 - lambda) / sigma_c and b_c = -(1 - lambda) mu_c /
    sigma_c: mu and sigma come from the int8 values and torch's int8 per-channel affine kernel
    (`quantized::batch_norm2d`, fed a_c and b_c) applies the map, so the activation never leaves int8."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x.int_repr().float() - x.q_zero_point()  # int8 steps around zero: E[q^2] - E[q]^2 keeps its precision
        mean = q.mean(dim=(2, 3))  # per clip and channel (two plain means: var_mean is 6x slower here)
        var = (q * q).mean(dim=(2, 3)) - mean * mean
        step = x.q_scale()
        inv_sigma = torch.rsqrt(var.clamp_min(0.0) * (step * step) + self.eps)
        a = self.lam + (1.0 - self.lam) * inv_sigma
        b = -(1.0 - self.lam) * inv_sigma * mean * step
        zeros, ones = torch.zeros_like(a[0]), torch.ones_like(a[0]) - self.eps  # BN's (x - 0) / sqrt(1 - eps + eps)
        out = [torch.ops.quantized.batch_norm2d(x[i : i + 1], a[i], b[i], zeros, ones, self.eps, self.scale, self.zero_point)
               for i in range(x.shape[0])]
        return out[0] if len(out) == 1 else torch.cat(out)


ResidualNorm.quantized_class = FloatIslandResidualNorm


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
