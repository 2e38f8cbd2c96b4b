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


@pytest.fixture
def local_server(tmp_path):
    """A plain HTTP server on 127.0.0.1 serving tmp_path/served (a stand-in for the libraries' release pages)."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_named_checkpoints_are_the_libraries_own_files():
    from asc_dist.teach.weights import named_url

    assert named_url("passt", "audioset") == hear21.default_cfgs["passt_s_swa_p16_128_ap476"]["url"]
    assert named_url("mobilenetv2", "imagenet") == timm.models.get_pretrained_cfg("mobilenetv2_100").url
    with pytest.raises(ConfigError, match="no named checkpoint"):
        named_url("cnn", "imagenet")


def test_a_url_is_downloaded_once_by_torch_into_its_hub_cache_and_loads(local_server, tmp_path, monkeypatch, caplog):
    from asc_dist.teach.weights import resolve

    served, base = local_server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    released = timm.create_model("mobilenetv2_100", pretrained=False).state_dict()
    name = "mobilenetv2_100_ra-b33bc2c4.pth"  # the file name of timm's release
    torch.save(released, served / name)
    with caplog.at_level(logging.INFO, logger="asc_dist.teach.weights"):
        local = resolve({"mobilenetv2": f"{base}/{name}", "cnn": "kept.pt"})
    assert local["cnn"] == "kept.pt"  # local paths pass through untouched
    cached = tmp_path / "torch-home" / "hub" / "checkpoints" / name
    assert local["mobilenetv2"] == str(cached) and "downloading pretrained weights" in caplog.text
    (served / name).unlink()  # the second time comes from the cache, not the server
    assert resolve({"mobilenetv2": f"{base}/{name}"})["mobilenetv2"] == str(cached)
    model = build_teacher("mobilenetv2", "default", n_classes=10, weights=local["mobilenetv2"])
    assert torch.equal(model.state_dict()["net.blocks.1.0.conv_pw.weight"], released["blocks.1.0.conv_pw.weight"])


def test_a_url_that_does_not_answer_is_one_line_and_exit_2(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch-home")}
    done = subprocess.run([sys.executable, "-m", "asc_dist.teachers", "--run", str(tmp_path / "run"), "--n", "1",
                           "--weights", "mobilenetv2=http://127.0.0.1:9/mnv2.pth"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2 and "could not download http://127.0.0.1:9/mnv2.pth" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
