"""The QAT activation fake-quantiser (`asc_dist/nets/fake_quant.py`) computes what torch's does: the same values
and straight-through gradients as `torch.fake_quantize_per_tensor_affine`, the same observed ranges as the fused
module torch's QAT qconfig uses."""

from __future__ import annotations

import pytest
import torch
import torch.ao.quantization as tq

from asc_dist.nets.fake_quant import ACTIVATION_ARGS, ActivationFakeQuantize, FakeQuantPerTensor, qat_qconfig
from asc_dist.nets.quantize import prepare_qat
from students import build_student


@pytest.mark.parametrize("channels_last", [True, False])
def test_fake_quant_equals_torch_kernel_values_and_gradients(channels_last: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 6, 16, 8) * 4  # a quarter of the values fall outside the int range below
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    scale, zero_point = torch.tensor([0.0473]), torch.tensor([61], dtype=torch.int32)
    ours, theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y = FakeQuantPerTensor.apply(ours, scale, zero_point, 0, 127)
    expected = torch.fake_quantize_per_tensor_affine(theirs, scale, zero_point, 0, 127)
    grad = torch.randn_like(y)
    y.backward(grad)
    expected.backward(grad)
    assert torch.equal(y, expected) and torch.equal(ours.grad, theirs.grad)
    assert 0.1 < float((ours.grad == 0).float().mean()) < 0.9  # both sides of the range were exercised


def test_observer_and_output_follow_torchs_fused_module_batch_after_batch() -> None:
    """Moving-average ranges over changing batches, then frozen: the same qparams up to float rounding, outputs
    within one quantisation step (the fused kernel rounds its qparams in another order)."""
    ours = qat_qconfig("fbgemm").activation()
    theirs = tq.get_default_qat_qconfig("fbgemm").activation()
    assert isinstance(ours, ActivationFakeQuantize) and type(theirs) is tq.FusedMovingAvgObsFakeQuantize
    torch.manual_seed(0)
    for i in range(8):
        if i == 5:
            ours.apply(tq.disable_observer)
            theirs.apply(tq.disable_observer)
        x = (torch.randn(8, 4, 16, 8) * (1 + i) + 0.3 * i).contiguous(memory_format=torch.channels_last)
        y, expected = ours(x), theirs(x)
        assert float(ours.scale) == pytest.approx(float(theirs.scale), rel=1e-6)
        assert int(ours.zero_point) == int(theirs.zero_point)
        assert float((y - expected).abs().max()) <= float(theirs.scale) * 1.001
    assert float(ours.activation_post_process.max_val) == pytest.approx(float(theirs.activation_post_process.max_val), rel=1e-6)


def test_prepared_students_use_it_with_torchs_arguments() -> None:
    assert tq.get_default_qat_qconfig("fbgemm").activation.p.keywords == ACTIVATION_ARGS
    qat = prepare_qat(build_student("dsflexinet", "sm1", norm="rn").eval())
    fakes = [m for m in qat.modules() if isinstance(m, tq.FakeQuantizeBase)]
    activations = [m for m in fakes if isinstance(m, ActivationFakeQuantize)]
    assert activations and all(m.qscheme == torch.per_tensor_affine and m.quant_max == 127 for m in activations)
    assert all(m.qscheme == torch.per_channel_symmetric for m in fakes if m not in activations)  # weights: torch's own
