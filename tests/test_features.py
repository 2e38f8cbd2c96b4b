"""Front ends: the shapes each model family expects, fp32 mel product under autocast, train-time fmax jitter."""

from __future__ import annotations

import pytest
import torch

from asc_dist.nets.features import CNN_MEL, CPRESNET_MEL, FRONT_ENDS, PASST_MEL, STUDENT_MEL, LogMel


@pytest.mark.parametrize(
    "cfg, shape",
    [(STUDENT_MEL, (3, 1, 256, 64)), (CPRESNET_MEL, (3, 1, 256, 43)), (PASST_MEL, (3, 1, 128, 100)), (CNN_MEL, (3, 1, 128, 64))],
)
def test_one_second_clip_shapes(cfg, shape):
    mel = LogMel(cfg).eval()
    out = mel(torch.randn(3, 32000) * 0.1)
    assert out.shape == shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert cfg.frames(32000) == shape[-1]


def test_every_family_front_end_is_registered():
    assert set(FRONT_ENDS) == {"student", "cpresnet", "passt", "cnn"}


def test_mel_product_stays_fp32_under_autocast():
    mel = LogMel(STUDENT_MEL).eval()
    x = torch.randn(2, 32000) * 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mel(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, mel(x))


def test_eval_is_deterministic_and_training_jitters_fmax():
    mel = LogMel(STUDENT_MEL)
    x = torch.randn(1, 32000) * 0.1
    mel.eval()
    torch.testing.assert_close(mel(x), mel(x))
    mel.train()
    torch.manual_seed(0)
    outs = [mel(x) for _ in range(4)]
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])  # upper band edge drawn per batch
    assert all(o.shape == outs[0].shape for o in outs)


def test_log_compression_and_scale():
    """(log(power + 1e-5) + 4.5) / 5: silence maps to (log(1e-5) + 4.5) / 5 everywhere."""
    out = LogMel(STUDENT_MEL).eval()(torch.zeros(1, 32000))
    torch.testing.assert_close(out, torch.full_like(out, (torch.log(torch.tensor(1e-5)).item() + 4.5) / 5))
