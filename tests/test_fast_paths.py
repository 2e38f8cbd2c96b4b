"""The faster training step computes what the plain one did: chunked front end, batched augmentations on real
impulse responses and real audio, channels-last training, malloc kept mapped. Behaviour only, no timings."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

import asc_dist.nets.features as features
from asc_dist.nets.features import CPRESNET_MEL, STUDENT_MEL, LogMel
from asc_dist.training.augment import DeviceIR, FreqMixStyle, ImpulseResponseBank, TimeRoll, fast_fft_length
from tests.conftest import MICIRP, REAL_SCENES, need

SR = 32000


def real_clips(n_clips: int, seconds: float = 1.0) -> torch.Tensor:
    """`n_clips` distinct 1-s (or longer) mono excerpts of the real TUT 2018 scene recordings, at 32 kHz."""
    out = []
    for path in sorted(need(REAL_SCENES / "tut2018").glob("*.wav")):
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        mono = torchaudio.functional.resample(torch.from_numpy(audio.mean(axis=1)), rate, SR)
        size = int(seconds * SR)
        out += [mono[i : i + size] for i in range(0, len(mono) - size + 1, size)]
    assert len(out) >= n_clips
    return torch.stack(out[:n_clips])


def reference_log_mel(cfg, waves: torch.Tensor) -> torch.Tensor:
    """The front end written out once, plainly (CP-JKU's AugmentMelSTFT in eval mode): pre-emphasis, |STFT|^2
    with a symmetric Hann window, the dense Kaldi mel matrix, log, scaling; the whole batch at once."""
    x = waves[:, 1:] - 0.97 * waves[:, :-1]
    window = torch.hann_window(cfg.win_length, periodic=False)
    spec = torch.stft(x, cfg.n_fft, cfg.hop_length, cfg.win_length, window, center=True, pad_mode="reflect", return_complex=True)
    banks, _ = torchaudio.compliance.kaldi.get_mel_banks(cfg.n_mels, cfg.n_fft, float(cfg.sample_rate), cfg.fmin, cfg.fmax, 100.0, -500.0, 1.0)
    banks = torch.nn.functional.pad(banks, (0, 1))
    mel = banks @ spec.abs().pow(2)
    return ((torch.log(mel + 1e-5) + 4.5) / 5.0).unsqueeze(1)


@pytest.mark.parametrize("cfg, seconds", [(STUDENT_MEL, 1.0), (CPRESNET_MEL, 4.0)])
def test_chunked_front_end_equals_the_plain_one(cfg, seconds):
    waves = real_clips(10 if seconds == 1.0 else 5, seconds)
    front = LogMel(cfg).eval()
    assert front.chunk_rows(waves.shape[1]) < len(waves)  # the batch really is cut into passes
    with torch.no_grad():
        torch.testing.assert_close(front(waves), reference_log_mel(cfg, waves), atol=1e-5, rtol=0)


def test_chunks_share_one_fmax_jitter_per_batch(monkeypatch):
    waves = real_clips(10)
    front = LogMel(STUDENT_MEL).train()
    with torch.no_grad():
        torch.manual_seed(3)
        chunked = front(waves)
        monkeypatch.setattr(features, "CHUNK_BYTES", 2**40)  # one pass over the batch
        torch.manual_seed(3)
        whole = front(waves)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)


def test_traced_front_end_takes_any_batch_size():
    """The shipped front end is traced on one clip; its graph keeps the chunk loop (a scripted function), so it
    takes any batch size in passes of `chunk_rows` clips."""
    waves = real_clips(10)
    front = LogMel(STUDENT_MEL).eval()
    traced = torch.jit.trace(front, waves[:1], check_trace=False)
    assert front.chunk_rows(waves.shape[1]) < len(waves) and "prim::Loop" in str(traced.inlined_graph)  # chunked in the file too
    with torch.no_grad():
        torch.testing.assert_close(traced(waves), front(waves), atol=1e-5, rtol=0)
        torch.testing.assert_close(traced(waves), reference_log_mel(STUDENT_MEL, waves), atol=1e-5, rtol=0)


def test_fast_fft_length_is_the_next_5_smooth_number():
    def smooth(m: int) -> bool:
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in list(range(1, 3000)) + [34999, 39999, 51999, 65537]:
        m = fast_fft_length(n)
        assert m >= n and smooth(m) and not any(smooth(k) for k in range(n, m))


def test_batched_dir_equals_per_clip_convolution():
    """One FFT convolution for the batch (at a fast transform length) gives each picked clip its own response's
    full convolution, truncated; other rows and other devices stay untouched. Same random draws replayed."""
    bank = ImpulseResponseBank.load(need(MICIRP), SR)
    waves = real_clips(12)
    devices = ["a", "b", "a", "a", "c", "a", "a", "s1", "a", "a", "a", "b"]
    aug = DeviceIR(bank, p=0.7).train()
    torch.manual_seed(11)
    out = aug(waves, devices)
    torch.manual_seed(11)
    rows = torch.tensor([d == "a" for d in devices]) & (torch.rand(len(devices)) < 0.7)
    ir_idx = torch.randint(len(bank), (len(devices),))
    assert 0 < int(rows.sum()) < len(devices)
    for i in range(len(devices)):
        if rows[i]:
            ir = bank.irs[ir_idx[i], : int(bank.lengths[ir_idx[i]])].double().numpy()
            expected = np.convolve(waves[i].double().numpy(), ir)[: waves.shape[1]]
            np.testing.assert_allclose(out[i].numpy(), expected, atol=1e-5)
        else:
            assert torch.equal(out[i], waves[i])


def test_batched_roll_equals_torch_roll_per_clip():
    waves = real_clips(12)
    torch.manual_seed(5)
    out = TimeRoll(4000).train()(waves)
    torch.manual_seed(5)
    shifts = torch.randint(-4000, 4001, (len(waves),))
    for i, s in enumerate(shifts.tolist()):
        assert torch.equal(out[i], torch.roll(waves[i], s))


def test_freq_mixstyle_equals_cpjku_formula():
    """CP-JKU's mixstyle as written there (mean/var over channel and time, normalise, re-style) on real log-mels."""
    x = LogMel(STUDENT_MEL).eval()(real_clips(12)).detach()
    torch.manual_seed(2)
    fms = FreqMixStyle(p=1.0, alpha=0.3).train()
    out = fms(x)
    torch.manual_seed(2)
    torch.rand(())  # the batch's coin flip
    f_mu, f_var = x.mean(dim=[1, 3], keepdim=True), x.var(dim=[1, 3], keepdim=True)
    f_sig = (f_var + 1e-6).sqrt()
    lmda = torch.distributions.Beta(0.3, 0.3).sample((len(x), 1, 1, 1))
    perm = torch.randperm(len(x))
    expected = (x - f_mu) / f_sig * (f_sig * lmda + f_sig[perm] * (1 - lmda)) + (f_mu * lmda + f_mu[perm] * (1 - lmda))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_channels_last_training_step_matches_contiguous(synth_store):
    """The trainer's step in NHWC and in NCHW order: the same logits and loss, up to float rounding."""
    from asc_dist.training.trainer import OptimConfig, Trainer
    from students.presets import build_student

    train = synth_store.split("train")
    results = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = build_student("dsflexinet", "sm1", n_classes=len(synth_store.classes))
        trainer = Trainer(model, LogMel(STUDENT_MEL), train, None, OptimConfig(epochs=1, batch_size=16, channels_last=channels_last), device="cpu")
        assert model.stem[1].conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
        trainer.model.train()
        trainer.front_end.train()
        batch = next(iter(trainer.loader))
        torch.manual_seed(1)
        loss, logits, _, _ = trainer.step(batch)
        results.append((loss, logits))
    (loss_a, logits_a), (loss_b, logits_b) = results
    torch.testing.assert_close(logits_b, logits_a, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(loss_b, loss_a, atol=1e-5, rtol=1e-5)


def test_channels_last_gradients_differ_by_float_rounding_only():
    """Gradients in fp32 against the same step in fp64, per tensor. How close fp32 gets depends on the order the
    CPU's kernels sum in: NCHW was within 1e-5 on one machine and within 0.15 % on another (oneDNN's weight
    gradients on an AVX-512/AMX Xeon; 6e-6 there with oneDNN off); NHWC lands within 2 % on the gradients that are
    sums of cancelling terms (measured: RN's lambda 1.5 %, the stem 0.8 %), far inside a gradient's batch-to-batch
    noise. A wrong gradient is off by its own size. The end-to-end check is the 3-seed accuracy comparison of the
    closing note."""
    from students.presets import build_student

    x = LogMel(STUDENT_MEL).eval()(real_clips(12)).detach()
    y = torch.arange(12) % 10

    def grads(dtype: torch.dtype, channels_last: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = build_student("dsflexinet", "sm1", n_classes=10).train().to(dtype)
        inputs = x.to(dtype)
        if channels_last:
            model, inputs = model.to(memory_format=torch.channels_last), inputs.contiguous(memory_format=torch.channels_last)
        torch.nn.functional.cross_entropy(model(inputs), y).backward()
        return {k: p.grad.double() for k, p in model.named_parameters()}

    exact = grads(torch.float64, False)
    largest = max(float(g.norm()) for g in exact.values())

    def worst_error(g: dict[str, torch.Tensor]) -> float:  # gradients that are not ~0 by cancellation
        return max(float((g[k] - exact[k]).norm() / exact[k].norm()) for k in exact if exact[k].norm() > 1e-3 * largest)

    nchw, nhwc = worst_error(grads(torch.float32, False)), worst_error(grads(torch.float32, True))
    assert nchw < 0.005 and nhwc < 0.03, (nchw, nhwc)


@pytest.mark.parametrize("channels_last", [False, True])
def test_residual_norm_training_path_equals_torch_instance_norm(channels_last):
    """RN's two-pass instance norm (CPU training) against `F.instance_norm`: the same output, input gradient and
    lambda gradient within 1e-5 on a real log-mel batch's stage-entry activations, in either memory order."""
    from students.dsflexinet import ResidualNorm

    torch.manual_seed(0)
    stem = torch.nn.Conv2d(1, 16, 3, stride=4, padding=1)
    with torch.no_grad():  # a real activation: offsets and spreads that differ per clip and channel
        x = stem(LogMel(STUDENT_MEL).eval()(real_clips(6))) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grad_out = torch.randn_like(x)
    results = []
    for train in (True, False):  # train mode takes the two-pass path, eval mode torch's kernel
        rn = ResidualNorm(lam=0.3).train(train)
        inputs = x.clone().requires_grad_()
        out = rn(inputs)
        out.backward(grad_out)
        results.append((out.detach(), inputs.grad, rn.lam.grad))
    (out_a, dx_a, dlam_a), (out_b, dx_b, dlam_b) = results
    torch.testing.assert_close(out_a, out_b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dx_a, dx_b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dlam_a, dlam_b, atol=1e-3, rtol=1e-5)  # a sum over every value: relative 1e-5
    assert out_a.is_contiguous(memory_format=torch.channels_last) == channels_last


FAULTS = """
import json, resource, torch
from asc_dist.infra.allocator import tune_allocator
from students.presets import build_student
tuned = tune_allocator()
torch.manual_seed(0)
model = build_student("dsflexinet", "sm2", n_classes=10).train().to(memory_format=torch.channels_last)
x = torch.randn(64, 1, 256, 64).contiguous(memory_format=torch.channels_last)
for _ in range(3):  # warm up: malloc's own threshold adapts to the first frees
    model(x).sum().backward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    model(x).sum().backward()
print(json.dumps({"tuned": tuned, "faults_per_step": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning is glibc's; elsewhere malloc stays as it is")
def test_tuned_allocator_stops_refaulting_freed_activations():
    def run(setting: str) -> dict:
        env = {"ASC_DIST_ALLOCATOR": setting, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    default, tuned = run("default"), run("tuned")
    assert default["tuned"] is False and tuned["tuned"] is True
    # the default gives the step's freed activations back to the kernel and faults them in again (measured
    # 38,000 pages a step for this one, 150 MB); the tuned malloc keeps them
    assert default["faults_per_step"] > 10000, default
    assert tuned["faults_per_step"] < default["faults_per_step"] / 10, (default, tuned)
