"""DCASE complexity counting: hand-computed counts on a tiny model, limits, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torchinfo
from torch import nn

from asc_dist.complexity import main, resolve
from asc_dist.nets.complexity import MAX_MACS, MAX_PARAM_BYTES, measure


def tiny_reference() -> nn.Module:
    """Conv 3x3 (1 -> 4, bias, padding 1) on 8x8, flatten, linear 256 -> 10."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))


def test_counts_match_formula_and_torchinfo() -> None:
    conv_params = 1 * 4 * 3 * 3 + 4  # weights + bias
    linear_params = 256 * 10 + 10
    # NeSsi/torchinfo rule: a conv costs (weights + bias) per output position, a linear layer its parameter count
    conv_macs = conv_params * 8 * 8
    cx = measure(tiny_reference(), (1, 1, 8, 8))
    assert cx.params == conv_params + linear_params == 2_610
    assert cx.macs == conv_macs + linear_params == 5_130
    stats = torchinfo.summary(tiny_reference(), input_size=(1, 1, 8, 8), verbose=0)
    assert (cx.params, cx.macs) == (stats.total_params, stats.total_mult_adds)
    assert (cx.int8_bytes, cx.fp16_bytes, cx.fp32_bytes) == (2_610, 5_220, 10_440)
    assert cx.within_limits


def test_limits_are_dcase_limits() -> None:
    assert (MAX_PARAM_BYTES, MAX_MACS) == (128_000, 30_000_000)
    big = measure(nn.Sequential(nn.Flatten(), nn.Linear(64, 2_000)), (1, 64))  # 130,000 params
    assert not big.within_limits and "OVER" in big.limits
    heavy = measure(nn.Conv2d(1, 256, 3, padding=1), (1, 1, 256, 64))  # 2,560 params x 16,384 positions
    assert heavy.macs > MAX_MACS and not heavy.within_limits


def test_measure_keeps_training_mode() -> None:
    model = tiny_reference().train()
    measure(model, (1, 1, 8, 8))
    assert model.training


def test_cli_json_for_a_student(capsys) -> None:
    assert main(["dsflexinet:sm1", "--json", "--classes", "7"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"params", "macs", "param_kb", "param_kb_fp16", "param_kb_fp32", "within_limits"}
    assert out["param_kb"] == pytest.approx(out["params"] / 1000) and out["within_limits"] is True
    assert out["param_kb_fp32"] == pytest.approx(4 * out["param_kb"])


def test_cli_bad_model_is_one_line_and_exit_2() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "asc_dist.complexity", "nosuchnet:sm1"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "dsflexinet" in lines[0]


def test_resolve_teacher_families_when_present() -> None:
    registry = pytest.importorskip("teachers.families")
    family = registry.TEACHER_FAMILIES[1] if len(registry.TEACHER_FAMILIES) > 1 else registry.TEACHER_FAMILIES[0]
    sizes = registry.teacher_sizes(family)
    size = "tiny" if "tiny" in sizes else sizes[0]
    model, input_size = resolve(f"{family}:{size}")
    assert isinstance(model, nn.Module) and len(input_size) == 4 and input_size[:2] == (1, 1)
