"""Activation fake-quantisation for CPU QAT at the speed of plain tensor ops.

torch's QAT qconfig observes and fake-quantises every activation with `FusedMovingAvgObsFakeQuantize`: on the
CPU its fake-quant kernel is a scalar loop (about 11 ms per 2.1 M-value activation, one thread) and its
min/max runs strided over a channels-last tensor (3.6 ms against 0.3 ms in memory order). `ActivationFakeQuantize`
is the same observer (`MovingAverageMinMaxObserver`, reading the tensor in its own memory order) and the same
fake quantisation as `torch.fake_quantize_per_tensor_affine`, (clamp(round(x / s) + z, qmin, qmax) - z) * s
with the straight-through gradient inside the range, written as vectorised tensor ops.
"""

from __future__ import annotations

import torch
import torch.ao.quantization as tq


def flat_view(x: torch.Tensor) -> torch.Tensor:
    """`x`'s values as a 1-D view in memory order (min/max do not care about order), or `x` itself."""
    if x.is_contiguous():
        return x.view(-1)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).reshape(-1)
    return x


class FakeQuantPerTensor(torch.autograd.Function):
    """torch.fake_quantize_per_tensor_affine's forward and straight-through backward (its cachemask kernel:
    the gradient passes where round(x / s) + z lies within [qmin, qmax])."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
        zp = zero_point.to(x.dtype)
        q = torch.round(x * scale.reciprocal()).add_(zp)  # nearbyint(x * (1 / s)) + z, as the kernel
        clamped = q.clamp(qmin, qmax)
        ctx.save_for_backward(clamped == q)  # inside [qmin, qmax]: one comparison instead of two and an and
        return clamped.sub_(zp).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inside,) = ctx.saved_tensors
        return torch.where(inside, grad, 0.0), None, None, None, None


class ActivationFakeQuantize(tq.FakeQuantize):
    """`tq.FakeQuantize` (per-tensor activations) with the fast observer read and fake quantisation above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer_enabled[0] == 1:
            self.activation_post_process(flat_view(x.detach()))
            scale, zero_point = self.calculate_qparams()
            self.scale.copy_(scale.to(self.scale.device))
            self.zero_point.copy_(zero_point.to(self.zero_point.device))
        if self.fake_quant_enabled[0] == 1:
            x = FakeQuantPerTensor.apply(x, self.scale, self.zero_point, self.quant_min, self.quant_max)
        return x


# torch's own activation arguments in `get_default_qat_qconfig("fbgemm")` (tests/test_fake_quant.py compares them)
ACTIVATION_ARGS = {"observer": tq.MovingAverageMinMaxObserver, "quant_min": 0, "quant_max": 255, "reduce_range": True}


def qat_qconfig(backend: str) -> tq.QConfig:
    """torch's default QAT qconfig for `backend` with `ActivationFakeQuantize` for the activations (the same
    observer and arguments); weights keep torch's per-channel fake-quantiser."""
    return tq.QConfig(activation=ActivationFakeQuantize.with_args(**ACTIVATION_ARGS), weight=tq.get_default_qat_qconfig(backend).weight)
