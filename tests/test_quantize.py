"""Int8 QAT primitives on real students: prepare, freeze, convert, export, size, latency."""

from __future__ import annotations

import pytest
import torch
import torch.ao.nn.intrinsic.qat as nniqat
import torch.ao.nn.quantized as nnq
from torch import nn
from torch.ao.quantization import FakeQuantizeBase

from asc_dist.errors import ConfigError
from asc_dist.nets.quantize import (
    convert_int8,
    export_torchscript,
    freeze_observers_and_bn,
    int8_size_bytes,
    latency_per_clip_ms,
    prepare_qat,
)
from students import build_student
from students.dsflexinet import ConvBNAct

CLIPS = torch.randn(4, 1, 256, 16)  # quarter-second clips keep the CPU tests fast


@pytest.fixture(scope="module")
def calibrated():
    """A SERFR-CNN-24 and its QAT copy after a few training-mode forwards (observers have ranges)."""
    torch.manual_seed(0)
    fp32 = build_student("serfr", "w24")
    qat = prepare_qat(fp32)
    with torch.no_grad():
        for _ in range(3):
            qat(CLIPS)
    return fp32, qat


def test_prepare_qat_copies_fuses_and_leaves_the_original(calibrated) -> None:
    fp32, qat = calibrated
    assert any(isinstance(m, nn.BatchNorm2d) for m in fp32.modules())  # original not fused
    assert not any(isinstance(m, FakeQuantizeBase) for m in fp32.modules())
    assert any(isinstance(m, FakeQuantizeBase) for m in qat.modules())
    assert qat.training
    units = [m for m in qat.modules() if isinstance(m, ConvBNAct)]
    assert units and all(isinstance(u.bn, nn.Identity) and isinstance(u.conv, nniqat.ConvBn2d) for u in units)


def test_prepare_qat_needs_fuse_model() -> None:
    with pytest.raises(ConfigError, match="fuse_model"):
        prepare_qat(nn.Sequential(nn.Conv2d(1, 2, 3)))


@pytest.mark.parametrize("model,preset", [("dsflexinet", "sm1"), ("sp4sc", "small")])
def test_freeze_stops_observers_and_bn_statistics(model: str, preset: str) -> None:
    """Covers fused conv-BN and the BNs that stay standalone (DS-FlexiNet's norm="bn", SP4SC's BN after a sum)."""
    torch.manual_seed(0)
    qat = prepare_qat(build_student(model, preset, norm="bn"))
    qat(CLIPS)
    freeze_observers_and_bn(qat)
    stats = {k: v.clone() for k, v in qat.state_dict().items() if "running" in k or "scale" in k}
    qat.train()  # what the training loop does every epoch
    qat(CLIPS * 3 + 1)  # a shifted batch would move both if they were live
    after = qat.state_dict()
    assert stats and all(torch.equal(v, after[k]) for k, v in stats.items())
    assert all(int(m.observer_enabled) == 0 for m in qat.modules() if isinstance(m, FakeQuantizeBase))


def test_convert_int8_matches_fake_quant_model(calibrated) -> None:
    _, qat = calibrated
    int8 = convert_int8(qat)
    assert qat.training  # the QAT model itself is untouched and can keep training
    assert any(isinstance(m, nnq.Conv2d) for m in int8.modules())
    qat.eval()
    with torch.no_grad():
        fake, real = qat(CLIPS), int8(CLIPS)
    qat.train()
    assert real.shape == fake.shape == (4, 10)
    assert torch.corrcoef(torch.stack([real.flatten(), fake.flatten()]))[0, 1] > 0.95


def test_export_is_atomic_and_sizes_are_consistent(calibrated, tmp_path) -> None:
    fp32, qat = calibrated
    int8 = convert_int8(qat)
    path = export_torchscript(int8, tmp_path / "model_int8.pt", CLIPS[:1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_int8.pt"]  # no temp files left behind
    assert int8_size_bytes(path) == path.stat().st_size
    loaded = torch.jit.load(str(path))
    torch.testing.assert_close(loaded(CLIPS), int8(CLIPS))
    # int8 weights are a quarter of fp32, but per-channel scales and per-tensor overhead weigh on small models
    assert int8_size_bytes(int8) < int8_size_bytes(fp32)


def test_latency_per_clip(calibrated) -> None:
    fp32, _ = calibrated
    ms = latency_per_clip_ms(fp32, CLIPS, repeats=2, warmup=1)
    assert 0 < ms < 10_000
    with pytest.raises(ConfigError):
        latency_per_clip_ms(fp32, CLIPS, repeats=0)
