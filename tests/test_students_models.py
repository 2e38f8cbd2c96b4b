"""Student models: published sizes, Residual Normalization, BN merging, and the int8 QAT -> TorchScript path."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from asc_dist.errors import ConfigError
from asc_dist.nets.complexity import measure
from asc_dist.nets.quantize import convert_int8, export_torchscript, freeze_observers_and_bn, prepare_qat
from students import STUDENTS, build_student, student_presets
from students.dsflexinet import ResidualNorm
from students.sp4sc import SP4SC, SP4SCConfig

# Table II of DS-FlexiNet (arXiv 2412.20722): parameters and MACs on one 1x256x64 clip.
TABLE_II = {"sm1": (13_760, 3.88e6), "sm2": (30_690, 8.27e6), "sm3": (54_980, 14.34e6), "sm4": (126_120, 23.03e6)}
ALL_STUDENTS = [
    *[("dsflexinet", p, n) for p in TABLE_II for n in ("rn", "bn")],
    ("serfr", "w24", "rn"),
    ("serfr", "w32", "rn"),
    ("sp4sc", "default", "rn"),
    ("sp4sc", "small", "rn"),
]


@pytest.mark.parametrize("norm", ["rn", "bn"])
@pytest.mark.parametrize("preset", list(TABLE_II))
def test_dsflexinet_presets_match_table_ii(preset: str, norm: str) -> None:
    cx = measure(build_student("dsflexinet", preset, norm=norm))
    params, macs = TABLE_II[preset]
    assert abs(cx.params / params - 1) < 0.10, (cx.params, params)
    assert abs(cx.macs / macs - 1) < 0.10, (cx.macs, macs)
    assert cx.within_limits


@pytest.mark.parametrize("preset", ["w24", "w32"])
def test_serfr_presets_fit_dcase_limits_and_grow_with_width(preset: str) -> None:
    cx = measure(build_student("serfr", preset))
    assert cx.within_limits, cx.limits
    assert measure(build_student("serfr", "w24")).params < measure(build_student("serfr", "w32")).params


def test_residual_norm_extremes_follow_eq_2() -> None:
    """RN(x) = lambda * x + (1 - lambda) * IN(x): lambda = 0 is instance norm over (F, T) per channel, 1 the identity."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 8) * 4 + 2
    instance = (x - x.mean((2, 3), keepdim=True)) / torch.sqrt(x.var((2, 3), unbiased=False, keepdim=True) + 1e-5)
    rn = ResidualNorm(lam=0.0)
    torch.testing.assert_close(rn(x), instance, atol=1e-5, rtol=1e-5)
    rn.lam.data.fill_(1.0)
    torch.testing.assert_close(rn(x), x, atol=1e-6, rtol=1e-6)
    # the identity path carries exactly lambda times each channel's mean; IN contributes none of it
    rn.lam.data.fill_(0.3)
    torch.testing.assert_close(rn(x).mean((2, 3)), 0.3 * x.mean((2, 3)), atol=1e-5, rtol=1e-5)


def test_residual_norm_lambda_is_trained() -> None:
    rn = ResidualNorm(lam=0.1)
    rn(torch.randn(2, 4, 8, 8)).pow(2).sum().backward()
    assert rn.lam.grad is not None and rn.lam.grad.abs() > 0


def test_sp4sc_merge_bn_matches_and_drops_bn_parameters() -> None:
    torch.manual_seed(0)
    model = SP4SC(SP4SCConfig())
    for m in model.modules():  # non-trivial statistics, as after training
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.randn(2, 1, 256, 64)
    with torch.no_grad():
        before = model(x)
    # Figure 4 of the SP4SC study (Puy, Jain, Bursuc, DCASE 2021 Task 1a technical report): 64,335 values at training time (state dict, BN running stats included) ...
    assert sum(v.numel() for v in model.state_dict().values()) == 64_335
    train_params = sum(p.numel() for p in model.parameters())
    model.merge_bn()
    with torch.no_grad():
        after = model(x)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    # ... and 62,474 at test time
    assert sum(p.numel() for p in model.parameters()) == 62_474 < train_params


def test_every_student_has_student_front_end_and_class_count() -> None:
    x = torch.randn(2, 1, 256, 64)
    for model_name in STUDENTS:
        for preset in student_presets(model_name):
            model = build_student(model_name, preset, n_classes=7).eval()
            assert model.front_end == "student"
            with torch.no_grad():
                assert model(x).shape == (2, 7)


def test_registry_names_valid_choices() -> None:
    with pytest.raises(ConfigError, match="dsflexinet"):
        build_student("resnet", "sm1")
    with pytest.raises(ConfigError, match="sm1"):
        build_student("dsflexinet", "sm9")
    with pytest.raises(ConfigError, match="width"):
        build_student("serfr", "w24", depth=3)
    with pytest.raises(ConfigError, match="rn"):
        build_student("dsflexinet", "sm1", norm="ln")
    assert student_presets("dsflexinet") == ["sm1", "sm2", "sm3", "sm4"]
    assert build_student("serfr", "w24", width=16).cfg.width == 16


LOAD_AND_PREDICT = """
import json, sys, torch
out = {}
for path in sys.argv[1:]:
    model = torch.jit.load(path)
    y = model(torch.randn(3, 1, 256, 16))
    out[path] = [list(y.shape), bool(torch.isfinite(y).all())]
print(json.dumps(out))
"""


def test_every_student_qat_int8_torchscript_roundtrip(tmp_path) -> None:
    """Prepare QAT, one training step, freeze, convert to int8, export; a fresh process loads and predicts."""
    torch.manual_seed(0)
    x, y = torch.randn(2, 1, 256, 16), torch.randint(0, 10, (2,))  # 1/4-s clips keep this fast
    paths = []
    for model_name, preset, norm in ALL_STUDENTS:
        qat = prepare_qat(build_student(model_name, preset, norm=norm))
        opt = torch.optim.SGD(qat.parameters(), lr=1e-3)
        F.cross_entropy(qat(x), y).backward()
        opt.step()
        freeze_observers_and_bn(qat)
        int8 = convert_int8(qat)
        path = export_torchscript(int8, tmp_path / f"{model_name}-{preset}-{norm}.pt", x[:1])
        paths.append(str(path))
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, *paths], capture_output=True, text=True, timeout=120, check=True
    )
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for path in paths:
        shape, finite = results[path]
        assert shape == [3, 10] and finite, path


@pytest.mark.parametrize("lam,batch", [(0.3, 1), (0.3, 3), (0.0, 2)])
def test_int8_residual_norm_matches_float_within_one_step(lam: float, batch: int) -> None:
    """The int8 RN (statistics from the int8 values, one int8 affine kernel) gives the float RN of the same
    int8 input, up to the output's own rounding."""
    from students.dsflexinet import QuantizedResidualNorm

    torch.manual_seed(0)
    x = torch.randn(batch, 8, 16, 8) * torch.linspace(0.5, 3, 8).view(1, 8, 1, 1) + torch.linspace(-1, 1, 8).view(1, 8, 1, 1)
    qx = torch.quantize_per_tensor(x, 0.03, 120, torch.quint8)
    expected = ResidualNorm(lam=lam)(qx.dequantize())
    scale = float(expected.abs().max()) / 120
    q = QuantizedResidualNorm(lam, 1e-5, scale, 128)
    out = q(qx)
    assert out.is_quantized and out.q_scale() == pytest.approx(scale)
    assert (out.dequantize() - expected).abs().max() <= scale * 0.51 + 1e-4


@pytest.mark.parametrize("lam,batch,channels_last", [(0.3, 1, True), (0.3, 3, False), (0.0, 2, True), (1.0, 1, True)])
def test_float_island_is_the_float_rn_of_its_int8_input(lam: float, batch: int, channels_last: bool) -> None:
    """The shipped island (two plain passes in the tensor's own memory order) gives RN of eq. (1)-(2) as torch's
    instance norm computes it, requantised: the same int8 steps but for float rounding at a step's edge."""
    import torch.nn.functional as F

    from students.dsflexinet import FloatIslandResidualNorm

    torch.manual_seed(0)
    x = torch.randn(batch, 8, 16, 8) * torch.linspace(0.5, 3, 8).view(1, 8, 1, 1) + torch.linspace(-1, 1, 8).view(1, 8, 1, 1)
    if channels_last:  # how a quantised convolution hands it over
        x = x.contiguous(memory_format=torch.channels_last)
    qx = torch.quantize_per_tensor(x, 0.03, 120, torch.quint8)
    y = qx.dequantize()
    expected = lam * y + (1 - lam) * F.instance_norm(y, eps=1e-5)
    scale = float(expected.abs().max()) / 120
    out = FloatIslandResidualNorm(lam, 1e-5, scale, 128)(qx)
    reference = torch.quantize_per_tensor(expected, scale, 128, torch.quint8)
    steps = (out.int_repr().int() - reference.int_repr().int()).abs()
    assert out.is_quantized and int(steps.max()) <= 1 and float((steps > 0).float().mean()) < 0.01


def test_converted_dsflexinet_rn_float_island_or_all_int8() -> None:
    """The shipped conversion keeps RN a float island (measured faster at batch 1); the all-int8 form, when
    chosen, leaves one dequantise in the traced model: the logits'."""
    import warnings

    from asc_dist.nets.quantize import convert_int8, prepare_qat
    from students.dsflexinet import FloatIslandResidualNorm, QuantizedResidualNorm

    torch.manual_seed(0)
    qat = prepare_qat(build_student("dsflexinet", "sm1", norm="rn").eval())
    with torch.no_grad():
        qat(torch.randn(8, 1, 256, 64))
    x = torch.randn(2, 1, 256, 64)
    shipped, all_int8 = convert_int8(qat), convert_int8(qat, overrides={ResidualNorm: QuantizedResidualNorm})
    assert sum(type(m) is FloatIslandResidualNorm for m in shipped.modules()) == 4
    assert sum(type(m) is QuantizedResidualNorm for m in all_int8.modules()) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.jit.trace(all_int8, x).inlined_graph
    kinds = [n.kind() for n in graph.nodes()]
    assert kinds.count("aten::dequantize") == 1 and "aten::instance_norm" not in kinds
    with torch.no_grad():
        assert (shipped(x) - all_int8(x)).abs().max() < 0.5  # the same network, rounded in other places


def test_banded_mel_product_equals_the_dense_one() -> None:
    from asc_dist.nets.features import STUDENT_MEL, LogMel

    x = torch.randn(3, 32000) * 0.1
    dense, banded = LogMel(STUDENT_MEL, band_groups=0).eval(), LogMel(STUDENT_MEL).eval()
    torch.testing.assert_close(banded(x), dense(x), atol=1e-5, rtol=1e-5)
    assert banded.mel_macs(64) * 10 < dense.mel_macs(64)
    banded.train()  # training jitters the band edges: the dense product with fresh banks
    assert banded(x).shape == dense(x).shape
