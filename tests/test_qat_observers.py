"""Scoring a QAT student never moves its quantisation ranges (FakeQuantize observes in eval mode too)."""

from __future__ import annotations

import torch
from torch.ao.quantization import FakeQuantizeBase

from asc_dist.nets.features import FRONT_ENDS, LogMel
from asc_dist.nets.quantize import prepare_qat
from asc_dist.training.trainer import predict
from students.presets import build_student


def _ranges(model):
    return [(m.scale.clone(), m.zero_point.clone(), m.activation_post_process.min_val.clone(), m.activation_post_process.max_val.clone())
            for m in model.modules() if isinstance(m, FakeQuantizeBase) and hasattr(m.activation_post_process, "min_val")]


def test_validation_does_not_update_observers(synth_store):
    torch.manual_seed(0)
    model = prepare_qat(build_student("dsflexinet", "sm1", n_classes=len(synth_store.classes)))
    front = LogMel(FRONT_ENDS["student"])
    with torch.no_grad():  # one training-mode pass so the observers hold ranges
        model.train()(front(torch.from_numpy(synth_store.split("train").waves(torch.arange(8).numpy())) * 0.1))
    before = _ranges(model)
    predict(model, front, synth_store.split("val"))  # louder clips than the calibration pass
    after = _ranges(model)
    assert len(before) > 5
    for b, a in zip(before, after):
        for x, y in zip(b, a):
            assert torch.equal(x, y)
    # observers are back on for the next training epoch
    assert all(bool(m.observer_enabled[0]) for m in model.modules() if isinstance(m, FakeQuantizeBase))
