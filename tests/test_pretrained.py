"""Pretrained weights from local files in the released formats: PaSST's AudioSet checkpoint, timm's MobileNetV2."""

from __future__ import annotations

import logging

import hear21passt.models.passt as hear21
import pytest
import timm
import torch

from asc_dist.errors import ConfigError
from asc_dist.teach.driver import parse_weights, with_weights
from asc_dist.teach.roster import TeacherConfig
from teachers.families import build_teacher


def test_passt_audioset_checkpoint_loads_with_head_dropped(tmp_path, caplog):
    # A stand-in for passt-s-f128-p16-s10-ap.476-swa.pt: the released file is the state dict of hear21passt's
    # passt_s_swa_p16_128_ap476 with its 527-class AudioSet head, with no wrapper prefix; same keys, same shapes.
    released = hear21.get_model(arch="passt_s_swa_p16_128_ap476", pretrained=False, n_classes=527).state_dict()
    assert released["head.1.weight"].shape == (527, 768) and "time_new_pos_embed" in released
    path = tmp_path / "passt-s-f128-p16-s10-ap.476-swa.pt"
    torch.save(released, path)
    with caplog.at_level(logging.INFO, logger="teachers.passt"):
        model = build_teacher("passt", "full", n_classes=10, weights=str(path))
    own = model.state_dict()
    head = {"net.head.1.weight", "net.head.1.bias", "net.head_dist.weight", "net.head_dist.bias"}
    assert {"net." + k for k in released} == set(own)  # exactly the same key set
    for key, value in released.items():
        if "net." + key in head:
            assert own["net." + key].shape[0] == 10  # the data's class count, freshly initialised
        else:
            assert torch.equal(own["net." + key], value), key  # positional embeddings included
    assert "dropped classifier head" in caplog.text and f"loaded {len(released) - 4} of {len(own)}" in caplog.text
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 1, 128, 100)).shape == (1, 10)


def test_timm_mobilenetv2_rgb_state_dict_loads(tmp_path, caplog):
    released = timm.create_model("mobilenetv2_100", pretrained=False).state_dict()  # 3 channels, 1000 classes
    path = tmp_path / "mobilenetv2_100.pt"
    torch.save(released, path)
    with caplog.at_level(logging.INFO, logger="teachers.passt"):
        model = build_teacher("mobilenetv2", "default", n_classes=10, weights=str(path))
    own = model.state_dict()
    assert torch.allclose(own["net.conv_stem.weight"], released["conv_stem.weight"].sum(1, keepdim=True))
    assert own["net.classifier.weight"].shape == (10, 1280)
    assert torch.equal(own["net.blocks.1.0.conv_pw.weight"], released["blocks.1.0.conv_pw.weight"])
    assert "folded to one channel" in caplog.text


def test_weights_option_per_family():
    assert parse_weights(["passt=a.pt", "mobilenetv2=b.pt"]) == {"passt": "a.pt", "mobilenetv2": "b.pt"}
    for bad in ("passt", "resnet=x.pt", "cnn="):
        with pytest.raises(ConfigError, match="FAMILY=FILE"):
            parse_weights([bad])
    roster = [TeacherConfig("p", "passt"), TeacherConfig("m", "mobilenetv2"), TeacherConfig("c", "cnn")]
    assert [t.weights for t in with_weights(roster, {"mobilenetv2": "b.pt"})] == [None, "b.pt", None]
