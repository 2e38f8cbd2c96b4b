"""Teacher models: real networks on real log-mels of 1-s clips, small sizes so the file runs in seconds."""

from __future__ import annotations

import logging
import socket

import hear21passt.models.passt as hear21
import pytest
import torch

from asc_dist.errors import ConfigError
from asc_dist.nets.features import FRONT_ENDS, LogMel
from teachers import TEACHER_FAMILIES, TeacherSpec, build_teacher, teacher_sizes
from teachers.cpresnet import CPResNet

# Sensible parameter ranges for the "tiny" size of each family.
TINY_PARAMS = {
    "passt": (100_000, 1_000_000),
    "cpresnet": (10_000, 100_000),
    "mobilenetv2": (100_000, 1_000_000),
    "bcresnet": (5_000, 100_000),
    "cnn": (20_000, 200_000),
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def log_mel(front_end: str, batch: int = 8) -> torch.Tensor:
    torch.manual_seed(0)
    waves = 0.1 * torch.randn(batch, 32000)
    return LogMel(FRONT_ENDS[front_end]).eval()(waves)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network (any connect fails), HF offline, TORCH_HOME an empty directory; yields it."""
    torch_home = tmp_path / "torch_home"
    torch_home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return torch_home


@pytest.mark.parametrize("family", TEACHER_FAMILIES)
def test_tiny_forward_backward(family):
    torch.manual_seed(0)
    model = build_teacher(family, "tiny", n_classes=10).train()
    x = log_mel(model.front_end)
    logits = model(x)
    assert logits.shape == (8, 10)
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.arange(8) % 10).backward()
    # hear21passt keeps a distillation head but its forward never uses it: logits = head((cls + dist) / 2).
    unused = {name for name, p in model.named_parameters() if p.grad is None}
    assert unused <= {"net.head_dist.weight", "net.head_dist.bias"}
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    low, high = TINY_PARAMS[family]
    assert low <= n_params(model) <= high


@pytest.mark.parametrize("family", ["cpresnet", "mobilenetv2", "bcresnet", "cnn"])
def test_default_sizes_eval_shape(family):
    model = build_teacher(family, "default", n_classes=10).eval()
    with torch.no_grad():
        assert model(log_mel(model.front_end, batch=2)).shape == (2, 10)


def test_default_param_counts():
    assert abs(n_params(build_teacher("cpresnet")) - 128_000) <= 0.15 * 128_000  # CP-JKU's 128 K teacher
    assert 4_000_000 < n_params(build_teacher("cnn")) < 5_000_000  # CNN6: 4.57 M at 10 classes
    assert 2_000_000 < n_params(build_teacher("mobilenetv2")) < 2_500_000  # mobilenetv2_100


def test_cpresnet_rho_bounds_the_receptive_field():
    small, default, large = (CPResNet(rho=rho).kernel_sizes() for rho in (4, 8, 12))
    assert default == [(3, 1), (3, 3), (3, 3), (3, 1)]
    threes = [sum(k == 3 for pair in ks for k in pair) for ks in (small, default, large)]
    assert threes[0] < threes[1] < threes[2]


def test_passt_builds_offline_and_silently(offline, capfd, monkeypatch):
    monkeypatch.setattr(hear21, "first_RUN", True)  # the library prints shapes on its first forward
    tiny = build_teacher("passt", "tiny").eval()
    with torch.no_grad():
        assert tiny(log_mel("passt", batch=2)).shape == (2, 10)
    full = build_teacher("passt", "full").eval()
    assert 80_000_000 < n_params(full) < 90_000_000
    assert capfd.readouterr().out == ""
    assert list(offline.iterdir()) == []


def test_passt_without_weights_logs_random_init(caplog):
    with caplog.at_level(logging.INFO, logger="teachers.passt"):
        build_teacher("passt", "tiny")
    assert "PaSST starts from random initialisation (no --passt-weights given)" in caplog.text


def test_passt_weights_round_trip(offline, tmp_path):
    torch.manual_seed(1)
    source = build_teacher("passt", "tiny").eval()
    x = log_mel("passt", batch=2)
    for state in (source.state_dict(), source.net.state_dict()):  # our wrapper's keys and hear21passt's
        path = tmp_path / "passt.pt"
        torch.save(state, path)
        torch.manual_seed(2)
        loaded = build_teacher("passt", "tiny", weights=str(path)).eval()
        with torch.no_grad():
            assert torch.equal(loaded(x), source(x))
    assert list(offline.iterdir()) == []


def test_passt_weights_with_other_class_count_drop_the_head(tmp_path, caplog):
    source = build_teacher("passt", "tiny", n_classes=527)
    path = tmp_path / "audioset.pt"
    torch.save(source.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="teachers.passt"):
        model = build_teacher("passt", "tiny", n_classes=10, weights=str(path))
    assert model.net.head[1].out_features == 10
    assert torch.equal(model.net.blocks[0].attn.qkv.weight, source.net.blocks[0].attn.qkv.weight)
    assert torch.equal(model.net.head[0].weight, source.net.head[0].weight)  # head LayerNorm fits, kept
    assert "dropped classifier head" in caplog.text and "net.head_dist.weight" in caplog.text


def test_missing_or_mismatched_weights_raise_config_error(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(ConfigError, match=str(missing)):
        build_teacher("passt", "tiny", weights=str(missing))
    other = tmp_path / "other.pt"
    torch.save(build_teacher("passt", "tiny", input_tdim=100).state_dict(), other)
    with pytest.raises(ConfigError, match="time_new_pos_embed"):
        build_teacher("passt", "tiny", weights=str(other))


def test_weights_for_cnn_families_round_trip(tmp_path):
    source = build_teacher("mobilenetv2", "tiny").eval()
    path = tmp_path / "mnv2.pt"
    torch.save(source.net.state_dict(), path)  # a plain timm state dict
    loaded = build_teacher("mobilenetv2", "tiny", weights=str(path)).eval()
    x = log_mel("cnn", batch=2)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))


def test_passt_structured_patchout():
    model = build_teacher("passt", "tiny", s_patchout_f=6, s_patchout_t=2).train()
    assert model(log_mel("passt", batch=2)).shape == (2, 10)
    with pytest.raises(ConfigError, match="s_patchout_f"):
        build_teacher("passt", "tiny", s_patchout_f=12)
    with pytest.raises(ConfigError, match="s_patchout_t"):
        build_teacher("passt", "tiny", s_patchout_t=9).train()(log_mel("passt", batch=2))


def test_unknown_family_size_or_option_raise_config_error():
    with pytest.raises(ConfigError, match="cpresnet"):
        build_teacher("resnet50")
    with pytest.raises(ConfigError, match="tiny"):
        build_teacher("cnn", "huge")
    with pytest.raises(ConfigError, match="base_channels"):
        build_teacher("cpresnet", "tiny", depth=3)
    with pytest.raises(ConfigError, match="mobilenetv2"):
        teacher_sizes("mobilenet")


def test_teacher_spec():
    spec = TeacherSpec.from_dict({"family": "cpresnet", "size": "tiny", "rho": 5})
    model = spec.build(n_classes=4)
    assert spec.front_end == "cpresnet" and model.rho == 5
    assert model(log_mel("cpresnet", batch=2)).shape == (2, 4)
    assert TeacherSpec.from_dict(spec.to_dict()) == spec
    assert TeacherSpec("passt", "tiny", s_patchout_f=6).build().net.s_patchout_f == 6
    with pytest.raises(ConfigError, match="PaSST only"):
        TeacherSpec("cnn", s_patchout_f=6)
    with pytest.raises(ConfigError, match="valid fields"):
        TeacherSpec.from_dict({"family": "cnn", "colour": "red"})
    with pytest.raises(ConfigError, match="tiny"):
        TeacherSpec("bcresnet", "medium")
