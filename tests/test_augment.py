"""Augmentations on real impulse responses and real audio: what each one may touch, and nothing more."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from asc_dist.errors import ConfigError
from asc_dist.training.augment import (
    AUGMENT_PRESETS,
    AugmentConfig,
    AutoDeviceIR,
    DeviceIR,
    FreqMixStyle,
    FrequencyMasking,
    ImpulseResponseBank,
    Mixup,
    TimeMasking,
    TimeRoll,
    TimeStretch,
    build_augmentations,
    clip_energy,
    mix_targets,
)
from tests.conftest import MICIRP, REAL_SCENES, need

SR = 32000


@pytest.fixture(scope="module")
def bank() -> ImpulseResponseBank:
    return ImpulseResponseBank.load(need(MICIRP), SR)


def one_ir_bank(bank: ImpulseResponseBank, row: int) -> ImpulseResponseBank:
    n = int(bank.lengths[row])
    return ImpulseResponseBank(bank.irs[row : row + 1, :n], bank.lengths[row : row + 1], bank.names[row : row + 1], SR)


def noise(rows: int, n: int, rms: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, n, generator=g) * rms


# ---------------------------------------------------------------- impulse-response bank


def test_bank_loads_all_66_resampled_once(bank):
    paths = sorted(need(MICIRP).glob("*.wav"))
    assert len(bank) == len(paths) == 66
    assert list(bank.names) == [p.name for p in paths]
    assert bank.irs.dtype == torch.float32 and bank.irs.shape == (66, int(bank.lengths.max()))
    rates = {}
    for row, path in enumerate(paths):
        info = sf.info(path)
        rates[path.name] = info.samplerate
        assert int(bank.lengths[row]) == math.ceil(info.frames * SR / info.samplerate), path.name
        assert torch.all(bank.irs[row, int(bank.lengths[row]) :] == 0)
    assert sorted(set(rates.values())) == [44100, 48000]
    # A 48 kHz file matches its own per-file resampling (the batched path changes nothing).
    name = next(n for n, r in rates.items() if r == 48000)
    row = bank.names.index(name)
    audio, sr = sf.read(MICIRP / name, dtype="float32")
    direct = torchaudio.functional.resample(torch.from_numpy(audio), sr, SR)
    assert torch.allclose(bank.irs[row, : len(direct)], direct, atol=1e-6)


def test_bank_empty_or_missing_folder_raises(tmp_path):
    with pytest.raises(ConfigError, match=str(tmp_path)):
        ImpulseResponseBank.load(tmp_path, SR)
    with pytest.raises(ConfigError, match="does not exist"):
        ImpulseResponseBank.load(tmp_path / "nowhere", SR)


def test_bank_corrupt_wavs_raise(tmp_path):
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wave file")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(ConfigError, match="broken.wav") as info:
        ImpulseResponseBank.load(tmp_path, SR)
    assert "2 of 2" in str(info.value) and str(tmp_path) in str(info.value)


# ---------------------------------------------------------------- DIR / Auto-DIR


def test_dir_touches_only_device_a_rows(bank):
    devices = ["a", "b", "a", "s1", "c", "a"]
    waves = noise(len(devices), 8000, 0.1)
    out = DeviceIR(bank, p=1.0)(waves, devices)
    assert out.shape == waves.shape and out.dtype == waves.dtype
    for row, device in enumerate(devices):
        assert torch.equal(out[row], waves[row]) == (device != "a"), (row, device)
    assert torch.equal(DeviceIR(bank, p=0.0)(waves, devices), waves)
    assert torch.equal(DeviceIR(bank, p=1.0).eval()(waves, devices), waves)


def test_dir_is_full_convolution_truncated(bank):
    single = one_ir_bank(bank, bank.names.index("Altec_639.wav"))
    waves = noise(2, 4000, 0.1)
    out = DeviceIR(single, p=1.0)(waves, ["a", "a"])
    ir = single.irs[0].double().numpy()
    for row in range(2):
        expected = np.convolve(waves[row].double().numpy(), ir, mode="full")[:4000]
        np.testing.assert_allclose(out[row].numpy(), expected, atol=1e-5)


def test_clip_energy_matches_paper_scale_on_real_tau_clip():
    path = need(REAL_SCENES / "tau2022_mobile_dev" / "audio" / "airport-lisbon-1000-40000-0-a.wav")
    audio, sr = sf.read(path, dtype="float32")
    native = torch.from_numpy(audio).unsqueeze(0)
    at_32k = torchaudio.functional.resample(native, sr, SR)
    e_native = float(clip_energy(native, sr)[0])
    assert e_native == pytest.approx(float((native.double() ** 2).sum()), rel=1e-5)
    assert 250 < e_native < 400  # the paper's average tau is 323
    assert float(clip_energy(at_32k, SR)[0]) == pytest.approx(e_native, rel=0.02)


def test_adir_gates_on_energy(bank):
    n = SR  # 1-s clips
    loud, quiet = 0.2, 0.02  # energies about 1764 and 17.6 at the 44.1 kHz scale
    waves = torch.cat([noise(2, n, loud, 1), noise(2, n, quiet, 2), noise(1, n, loud, 3)])
    devices = ["a", "a", "a", "a", "b"]
    adir = AutoDeviceIR(bank, p=1.0, tau=323.0, sample_rate=SR)
    energy = adir.clip_energy(waves)
    assert (energy[:2] > 323).all() and (energy[2:4] < 323).all()
    for seed in range(3):
        torch.manual_seed(seed)
        out = adir(waves, devices)
        assert not torch.equal(out[0], waves[0]) and not torch.equal(out[1], waves[1])
        assert torch.equal(out[2:], waves[2:])
    # A clip just below tau is never touched; raising tau above every clip makes ADIR the identity.
    just_below = waves[:1] * math.sqrt(322.0 / float(energy[0]))
    assert float(adir.clip_energy(just_below)[0]) < 323
    assert torch.equal(adir(just_below, ["a"]), just_below)
    assert torch.equal(AutoDeviceIR(bank, p=1.0, tau=1e6)(waves, devices), waves)


# ---------------------------------------------------------------- roll, stretch, mixup


def test_time_roll_is_a_bounded_circular_shift():
    torch.manual_seed(0)
    waves = noise(6, 500, 1.0)
    out = TimeRoll(max_shift=20)(waves)
    for row in range(6):
        shifts = [s for s in range(-20, 21) if torch.equal(out[row], torch.roll(waves[row], s))]
        assert len(shifts) == 1
    assert torch.equal(TimeRoll(0)(waves), waves)


def test_time_stretch_resamples_then_crops_or_pads():
    waves = noise(3, 2000, 0.1)
    slower = TimeStretch(p=1.0, rates=(0.8, 0.8))(waves)
    expected = torchaudio.functional.resample(waves, 80, 100)[:, :2000]
    assert slower.shape == waves.shape and torch.allclose(slower, expected)
    faster = TimeStretch(p=1.0, rates=(1.25, 1.25))(waves)
    assert faster.shape == waves.shape
    assert torch.all(faster[:, math.ceil(2000 / 1.25) :] == 0) and faster[:, :1500].abs().sum() > 0
    assert torch.equal(TimeStretch(p=0.0)(waves), waves)
    torch.manual_seed(1)
    per_row = TimeStretch(p=1.0, rates=(0.8, 1.2), per_row=True)(waves)
    assert per_row.shape == waves.shape and not torch.equal(per_row, waves)


def test_mixup_mixes_inputs_and_targets_consistently():
    torch.manual_seed(0)
    waves = noise(8, 100, 1.0)
    mixed, mix = Mixup(alpha=0.3)(waves)
    assert mix is not None and torch.all(mix.lam >= 0.5) and torch.all(mix.lam <= 1.0)
    assert sorted(mix.perm.tolist()) == list(range(8))
    lam = mix.lam.unsqueeze(1)
    assert torch.allclose(mixed, lam * waves + (1 - lam) * waves[mix.perm])
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    soft = mix_targets(labels, mix, n_classes=3)
    assert torch.allclose(soft.sum(1), torch.ones(8))
    for i in range(8):
        expected = torch.zeros(3)
        expected[labels[i]] += mix.lam[i]
        expected[labels[mix.perm[i]]] += 1 - mix.lam[i]
        assert torch.allclose(soft[i], expected)
    assert torch.equal(mix_targets(labels, None, 3), torch.nn.functional.one_hot(labels, 3).float())


# ---------------------------------------------------------------- spectrogram level


def per_freq_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(dim=[1, 3], keepdim=True), x.std(dim=[1, 3], keepdim=True)


def test_freq_mixstyle_changes_only_per_frequency_statistics():
    torch.manual_seed(0)
    batch, freqs = 6, 16
    profile = torch.randn(batch, 1, freqs, 1) * 3  # a per-instance, per-frequency "device style"
    x = torch.randn(batch, 1, freqs, 20) * (1 + torch.rand(batch, 1, freqs, 1)) + profile
    assert torch.equal(FreqMixStyle(p=0.0)(x), x)
    assert torch.equal(FreqMixStyle(p=1.0).eval()(x), x)
    out = FreqMixStyle(p=1.0, alpha=0.3)(x)
    assert out.shape == x.shape
    mu, sig = per_freq_stats(x)
    mu_out, sig_out = per_freq_stats(out)
    # The normalised pattern of every instance is untouched ...
    assert torch.allclose((out - mu_out) / sig_out, (x - mu) / sig, atol=1e-4)
    assert not torch.allclose(mu_out, mu, atol=1e-3)
    # ... and its statistics are a convex mix of its own and one partner's (the same lam for mean and std).
    for i in range(batch):
        fits = []
        for j in range(batch):
            d = (mu[i] - mu[j]).flatten()
            lam = 1.0 if j == i else float(((mu_out[i] - mu[j]).flatten() @ d) / (d @ d))
            mu_ok = torch.allclose(mu_out[i], lam * mu[i] + (1 - lam) * mu[j], atol=1e-4)
            sig_ok = torch.allclose(sig_out[i], lam * sig[i] + (1 - lam) * sig[j], atol=1e-3)
            fits.append(mu_ok and sig_ok and -1e-4 <= lam <= 1 + 1e-4)
        assert any(fits), i


def test_masks_are_iid_bands_and_off_in_eval():
    torch.manual_seed(0)
    x = torch.ones(8, 1, 32, 20)
    freq = FrequencyMasking(12)(x)
    masked_bins = (freq == 0).all(dim=3).squeeze(1)  # [B, F]
    assert ((freq == 0) | (freq == 1)).all()
    assert len({tuple(row.tolist()) for row in masked_bins}) > 1  # independent per instance
    for row in masked_bins:
        idx = row.nonzero().flatten()
        assert len(idx) < 12 and (len(idx) == 0 or idx.max() - idx.min() + 1 == len(idx))
    time = TimeMasking(8)(x)
    assert ((time == 0).all(dim=2) | (time == 1).all(dim=2)).all()
    assert torch.equal(FrequencyMasking(12).eval()(x), x) and torch.equal(TimeMasking(0)(x), x)


# ---------------------------------------------------------------- config and pipelines


def test_default_config_builds_identity_pipelines():
    waves_aug, spec_aug = build_augmentations(AugmentConfig(), None, SR)
    waves = noise(2, 100, 1.0)
    out, mix = waves_aug(waves, ["a", "b"])
    assert torch.equal(out, waves) and mix is None
    spec = torch.randn(2, 1, 8, 5)
    assert torch.equal(spec_aug(spec), spec)


def test_config_errors():
    with pytest.raises(ConfigError, match="outside"):
        AugmentConfig(dir_p=1.5)
    with pytest.raises(ConfigError, match="adir_p"):
        AugmentConfig(dir_p=0.5, adir_p=0.5)
    with pytest.raises(ConfigError, match="stretch_rates"):
        AugmentConfig(stretch_rates=(1.1, 0.9))
    with pytest.raises(ConfigError, match="impulse responses"):
        build_augmentations(AugmentConfig(dir_p=0.5), None, SR)


def test_presets_build_and_reproduce_under_manual_seed(bank):
    with pytest.raises(ConfigError, match="44100"):
        build_augmentations(AUGMENT_PRESETS["cpjku_student"], bank, 44100)
    cfg = AugmentConfig(adir_p=1.0, roll_max_s=0.01, stretch_p=0.5, mixup_alpha=0.3, freqm=4, timem=2, fms_p=1.0)
    waves_aug, spec_aug = build_augmentations(cfg, bank, SR)
    assert [type(m).__name__ for m in waves_aug.steps] == ["AutoDeviceIR", "TimeStretch", "TimeRoll"]
    assert waves_aug.steps[2].max_shift == 320 and waves_aug.mixup is not None
    assert [type(m).__name__ for m in spec_aug] == ["FrequencyMasking", "TimeMasking", "FreqMixStyle"]
    waves, devices = noise(4, 4000, 0.5), ["a", "b", "a", "c"]
    spec = torch.randn(4, 1, 16, 10)
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        w, mix = waves_aug(waves, devices)
        runs.append((w, mix.perm, mix.lam, spec_aug(spec)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    for name, preset in AUGMENT_PRESETS.items():
        w_aug, s_aug = build_augmentations(preset, bank, SR)
        out, _ = w_aug(waves, devices)
        assert out.shape == waves.shape and s_aug(spec).shape == spec.shape, name
