"""Benchmark the students: KD training throughput and data-wait share, fp32 against int8 latency per clip,
int8 size; prints one JSON object on stdout with one entry per preset (progress on stderr).

Per preset, through the project's own code:
- training: `asc_dist.distill.recipe.student_trainer` (the student recipe's augmentations and the KD loss against
  fused targets written for the synthetic store) for one epoch after a one-batch warm-up: `clips_per_s` and
  `data_wait_share` (share of the epoch the step waited for the next batch; goal <= 5 %). The log-mel front end
  alone is timed once (`front_end_clips_per_s`), so its share of a student's step is visible.
- latency: `asc_dist.nets.quantize.latency_per_clip_ms` on one real 1x1x256x64 log-mel, batch 1, one thread, of the
  fp32 model in eval mode and of its int8 conversion (`prepare_qat`, forward passes in train mode on real
  log-mels for the observers, `convert_int8`). fp32 and int8 are timed in alternating rounds; the ratio is the
  median of the per-round ratios (goal <= 0.5). The same is measured in thread CPU time, which a shared machine
  disturbs less than wall time, and for the TorchScript files `export_torchscript` writes (the shipped artefact,
  reloaded with `torch.jit.load`; fp32 traced the same way), where eager mode's per-module Python cost is gone.
- why: `int8_by_engine` converts again with each quantised engine (torch's default "x86" picks oneDNN or
  fbgemm per conv layer; "onednn" and "fbgemm" force one), and `int8_profile` lists the slowest modules and ops
  of the int8 model (torch.profiler, module labels from forward hooks) beside the fp32 time of the same module;
  for DS-FlexiNet with Residual Normalization, `residual_norm` times the shipped float island (dequantise,
  instance norm, requantise) against RN's all-int8 form and against BN in RN's place (the floor).
- shipped: `shipped_waveform_in`, the exported form (waveform in, logits out) fp32 vs int8 with the front end's
  share, beside onnxruntime fp32 and its own int8: the whole file, the model alone on log-mels, and the torch front
  end feeding onnxruntime's model; per clip in a batch of 64 (as `asc_dist.predict` feeds the file), the int8 file
  against the same file traced with its front end in one pass over the batch; `front_end_1_clip`: the dense mel
  product against the banded one, and the STFT that both pay.
- size: `int8_size_bytes` (serialised int8 state dict) and the DCASE parameter memory (`complexity.measure`).
- step: `step_profile`, one training step of the default recipe part by part (`ops/step_profile.py`: front end,
  each augmentation, forward, loss, optimiser, backward, data wait, page faults) with the model's forward+backward
  alone as the limit; with `--baseline-src OLD_CHECKOUT` the same profile of that checkout in alternating rounds
  (child processes, one thread each), and the speed-up of this checkout over it; `qat_after`, the same step in
  the int8 QAT phase (fake-quantised model).

    OMP_NUM_THREADS=1 python ops/bench_students.py [--presets sm1,sm2,sm3,sm4,serfr:w24,sp4sc:default] [--quick]
        [--dirs IR_DIR] [--baseline-src OLD_CHECKOUT] [--step-only]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import unittest.mock
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from asc_dist.data.prepare import DataConfig, prepare_store
from asc_dist.data.store import WaveformStore
from asc_dist.distill.config import StudentConfig, build_student_model
from asc_dist.distill.recipe import student_trainer
from asc_dist.nets.complexity import measure
from asc_dist.nets.features import STUDENT_MEL, LogMel, stft
from asc_dist.nets.quantize import convert_int8, export_torchscript, int8_size_bytes, latency_per_clip_ms, prepare_qat
from asc_dist.run.logits import write_targets
from asc_dist.training.batches import BatchLoader
from students.dsflexinet import FloatIslandResidualNorm

log = logging.getLogger("bench_students")
DEFAULT_PRESETS = "sm1,sm2,sm3,sm4,serfr:w24,sp4sc:default"


def parse_preset(spec: str) -> tuple[str, str]:
    """`sm2` (DS-FlexiNet) or `MODEL:PRESET`."""
    model, _, preset = spec.partition(":")
    return ("dsflexinet", model) if not preset else (model, preset)


def write_fake_targets(run_dir: Path, store: WaveformStore) -> None:
    """Fused targets in the real schema: a confident but noisy teacher (one-hot x 4 + noise), so KD runs as in use."""
    table = store.table()
    rng = np.random.default_rng(0)
    logits = 4.0 * np.eye(len(store.classes), dtype=np.float32)[table.label]
    logits += rng.normal(0, 1, logits.shape).astype(np.float32)
    write_targets(run_dir, table.filename, table.split, table.device, table.label, logits, logits, store.classes,
                  ["bench-teacher"], store.fingerprint)


def real_mels(store: WaveformStore, n: int) -> torch.Tensor:
    """Log-mels [n, 1, 256, 64] of the first `n` training clips (eval-mode front end)."""
    batch = next(iter(BatchLoader(store.split("train"), n, shuffle=False)))
    with torch.no_grad():
        return LogMel(STUDENT_MEL).eval()(torch.from_numpy(batch.waves))


def front_end_rate(store: WaveformStore, batch_size: int, device: torch.device, repeats: int) -> float:
    """Clips/s of the student log-mel alone (train mode, as in a training step), after one warm-up batch."""
    train = store.split("train")
    waves = torch.from_numpy(train.waves(np.arange(min(batch_size, len(train))))).to(device)
    front = LogMel(STUDENT_MEL).to(device).train()
    with torch.no_grad():
        front(waves)
        start = time.perf_counter()
        for _ in range(repeats):
            front(waves)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return repeats * len(waves) / (time.perf_counter() - start)


def cpu_isa() -> dict:
    """What the int8 and fp32 kernels can use here: torch's CPU capability and the CPU's int8 extensions (oneDNN
    runs the 1x1 int8 convolutions on AMX where it has it: runs on machines that differ here do not compare)."""
    flags = set()
    with contextlib.suppress(OSError):
        flags = set(next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "").split())
    return {"torch_capability": torch.backends.cpu.get_cpu_capability(),
            "int8_extensions": [f for f in ("avx512_vnni", "avx_vnni", "amx_int8") if f in flags]}


def cpu_ms_per_clip(model: nn.Module, x: torch.Tensor, repeats: int, warmup: int = 3) -> float:
    """Median thread CPU time per forward (ms): what wall time would be on an idle core."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.thread_time()
            model(x)
            if i >= warmup:
                times.append(time.thread_time() - start)
    return 1000.0 * statistics.median(times) / x.shape[0]


def calibrated_int8(model: nn.Module, calib: torch.Tensor, overrides: dict | None = None) -> nn.Module:
    qat = prepare_qat(model)
    with torch.no_grad():
        for chunk in calib.split(16):
            qat(chunk)
    return convert_int8(qat, overrides)


@contextlib.contextmanager
def quantized_engine(name: str) -> Iterator[None]:
    saved = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = saved


def _labelled(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules, and float islands (a module that dequantises its own input, e.g. Residual Normalization)
    as one unit instead of their stubs."""
    islands = [n for n, m in model.named_modules() if n and any("DeQuant" in type(c).__name__ for c in m.children())]
    out = []
    for name, module in model.named_modules():
        if not name:
            continue
        inside = any(name.startswith(i + ".") for i in islands)
        leaf = next(module.children(), None) is None and not isinstance(module, nn.Identity)  # fused-away ReLUs
        if name in islands or (not inside and leaf):
            out.append((name, module))
    return out


def module_profile(model: nn.Module, x: torch.Tensor, repeats: int) -> tuple[dict[str, tuple[str, float]], list[dict], float]:
    """Per labelled module (name -> (type, inclusive ms per forward)), top ops by self time, and total ms."""
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    handles = []

    def pre(module, _inputs):
        module._bench_rf = record_function(f"mod:{module._bench_name}")
        module._bench_rf.__enter__()

    def post(module, _inputs, _output):
        module._bench_rf.__exit__(None, None, None)

    types = {}
    for name, module in _labelled(model):
        module._bench_name = name
        types[name] = type(module).__name__
        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        with torch.inference_mode():
            for _ in range(3):
                model(x)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                start = time.perf_counter()
                for _ in range(repeats):
                    model(x)
                total_ms = 1000 * (time.perf_counter() - start) / repeats  # wall, as the profiler's times
    finally:
        for h in handles:
            h.remove()
    events = prof.key_averages()
    modules = {e.key[4:]: (types[e.key[4:]], e.cpu_time_total / 1000 / repeats) for e in events if e.key.startswith("mod:")}
    ops = sorted((e for e in events if not e.key.startswith("mod:")), key=lambda e: -e.self_cpu_time_total)[:5]
    top_ops = [{"op": e.key, "self_ms": round(e.self_cpu_time_total / 1000 / repeats, 3), "calls": e.count // repeats} for e in ops]
    return modules, top_ops, total_ms


def int8_profile(fp32: nn.Module, int8: nn.Module, x: torch.Tensor, repeats: int, top: int = 6) -> dict:
    q_mods, q_ops, q_total = module_profile(int8, x, repeats)
    f_mods, _, f_total = module_profile(fp32, x, repeats)
    rows = sorted(q_mods.items(), key=lambda kv: -kv[1][1])[:top]
    by_type: dict[str, float] = {}
    for kind, ms in q_mods.values():
        by_type[kind] = by_type.get(kind, 0.0) + ms
    return {
        "profiled_int8_wall_ms": round(q_total, 3), "profiled_fp32_wall_ms": round(f_total, 3),
        "top_int8_modules": [
            {"module": name, "type": kind, "int8_ms": round(ms, 3),
             "fp32_ms": round(f_mods[name][1], 3) if name in f_mods else None}
            for name, (kind, ms) in rows
        ],
        "int8_ms_by_module_type": {k: round(v, 3) for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])[:6]},
        "top_int8_ops": q_ops,
    }


class InstanceNormIsland(FloatIslandResidualNorm):
    """The float island as it shipped before commit a0da621 (`F.instance_norm` on the dequantised tensor): the
    baseline beside the shipped two-pass island, whose int8 output is the same."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.dequantize()
        y = self.lam * y + (1.0 - self.lam) * torch.nn.functional.instance_norm(y, eps=self.eps)
        return torch.quantize_per_tensor(y, self.scale, self.zero_point, x.dtype)


def rn_cost(fp32: nn.Module, shipped: nn.Module, preset: str, n_classes: int, calib: torch.Tensor, a: argparse.Namespace) -> dict:
    """Residual Normalization in int8 four ways, traced, in alternating rounds: the shipped float island
    (dequantise, two-pass instance norm in the tensor's own order, requantise), the island before it
    (`InstanceNormIsland`), the all-int8 form (statistics from the int8 values, one int8 per-channel affine kernel)
    and BN at the stage entries (folds into an int8 kernel: the floor)."""
    from students.dsflexinet import QuantizedResidualNorm, ResidualNorm
    from students.presets import build_student

    torch.manual_seed(0)
    x = calib[:1]
    island, int8_rn = shipped, calibrated_int8(fp32, calib, overrides={ResidualNorm: QuantizedResidualNorm})
    before = calibrated_int8(fp32, calib, overrides={ResidualNorm: InstanceNormIsland})
    int8_bn = calibrated_int8(build_student("dsflexinet", preset, n_classes=n_classes, norm="bn").eval(), calib)
    variants = {k: traced(m, x) for k, m in {"int8_rn": int8_rn, "float_island_rn": island, "bn": int8_bn,
                                              "float_island_before": before}.items()}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(a.latency_rounds):
        for k, m in variants.items():
            times[k].append(cpu_ms_per_clip(m, x, a.latency_repeats))
    ms = {k: statistics.median(v) for k, v in times.items()}
    with torch.no_grad():
        agree = float((int8_rn(calib).argmax(1) == island(calib).argmax(1)).float().mean())
    return {"int8_rn_cpu_ms": round(ms["int8_rn"], 3), "float_island_rn_cpu_ms": round(ms["float_island_rn"], 3),
            "bn_instead_cpu_ms": round(ms["bn"], 3), "int8_rn_vs_float_island": round(ms["int8_rn"] / ms["float_island_rn"], 3),
            "float_island_before_cpu_ms": round(ms["float_island_before"], 3),
            "same_int8_logits_as_before": bool(torch.equal(island(calib), before(calib))),
            "argmax_agreement_with_float_island": round(agree, 3)}


def traced(model: nn.Module, x: torch.Tensor) -> torch.jit.ScriptModule:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(model.eval(), x, check_trace=False)


class RealFFT(nn.Module):
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.fft.rfft(frames)


class STFT(nn.Module):
    """The front end's STFT alone (`asc_dist.nets.features.stft` with its window)."""

    def __init__(self, front: LogMel):
        super().__init__()
        self.front = front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.front.cfg
        return stft(x, self.front.window, cfg.n_fft, cfg.hop_length, cfg.win_length)


def front_end_cost(x: torch.Tensor, a: argparse.Namespace) -> dict:
    """The student front end (waveform -> log-mel), traced, 1 clip: the dense mel product against the banded one
    (the same result within float rounding), the STFT alone, which neither changes, and inside it the real FFTs
    alone on frames already cut and windowed (`fft_only_ms`: 64 transforms of 4,096 points, the floor of any front
    end that keeps these features on this core)."""
    dense, banded = LogMel(STUDENT_MEL, band_groups=0).eval(), LogMel(STUDENT_MEL).eval()
    frames = STUDENT_MEL.frames(x.shape[1])
    cfg = STUDENT_MEL
    window = torch.nn.functional.pad(torch.hann_window(cfg.win_length, periodic=False), ((cfg.n_fft - cfg.win_length) // 2,) * 2)
    padded = torch.nn.functional.pad(x[:, 1:].unsqueeze(1), (cfg.n_fft // 2,) * 2, mode="reflect").squeeze(1)
    cut = (padded.unfold(-1, cfg.n_fft, cfg.hop_length) * window).contiguous()
    inputs = {"dense": x, "banded": x, "stft": x[:, 1:], "fft_only": cut}
    variants = {"dense": traced(dense, x), "banded": traced(banded, x), "stft": traced(STFT(dense), x[:, 1:]),
                "fft_only": traced(RealFFT(), cut)}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(a.latency_rounds):
        for k, m in variants.items():
            times[k].append(cpu_ms_per_clip(m, inputs[k], a.latency_repeats))
    with torch.no_grad():
        diff = float((dense(x) - banded(x)).abs().max())
    return {"dense_ms": round(statistics.median(times["dense"]), 3), "banded_ms": round(statistics.median(times["banded"]), 3),
            "stft_ms": round(statistics.median(times["stft"]), 3), "fft_only_ms": round(statistics.median(times["fft_only"]), 3),
            "fft_frames": int(cut.shape[1]), "dense_mel_macs": dense.mel_macs(frames),
            "banded_mel_macs": banded.mel_macs(frames), "max_abs_diff": diff}


class OrtRunner:
    """An onnxruntime session on one thread, called like a module on its one input."""

    def __init__(self, path: Path, input_name: str = "waves"):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = input_name

    def __call__(self, x: torch.Tensor):
        return self.session.run(None, {self.input_name: x.numpy()})[0]


class FrontThenOrt:
    """The traced torch front end, then the model alone (log-mel in) in onnxruntime: waveform in, logits out."""

    def __init__(self, front: torch.jit.ScriptModule, model: OrtRunner):
        self.front, self.model = front, model

    def __call__(self, waves: torch.Tensor):
        return self.model(self.front(waves))


def onnx_variants(fp32: nn.Module, clips: np.ndarray, front: torch.jit.ScriptModule, out: Path) -> dict[str, tuple]:
    """The same fp32 student through onnxruntime, and onnxruntime's own static int8 (calibrated on training clips):
    the whole file (front end included: ONNX's STFT), the model alone on log-mels, and the torch front end feeding
    the model alone. Name -> (callable, "wave" or "mel": what it takes)."""
    try:
        from asc_dist.ship.export import quantize_onnx, write_onnx
        from asc_dist.ship.format import WaveToLogits

        path, model_path, front_eager = out / "student.onnx", out / "student_model.onnx", LogMel(STUDENT_MEL).eval()
        write_onnx(WaveToLogits(front_eager, fp32), clips, {}, path)
        with torch.no_grad():
            mels = front_eager(torch.from_numpy(clips)).numpy()
        write_onnx(fp32, mels, {}, model_path, input_name="mel")
        model = {"fp32": OrtRunner(model_path, "mel"), "int8": OrtRunner(Path(quantize_onnx(model_path, mels, {}, "mel")["onnx_int8"]), "mel")}
        return {"onnxruntime_fp32": (OrtRunner(path), "wave"), "onnxruntime_int8": (OrtRunner(Path(quantize_onnx(path, clips, {})["onnx_int8"])), "wave"),
                **{f"onnxruntime_model_alone_{k}": (m, "mel") for k, m in model.items()},
                **{f"torch_front_onnxruntime_model_{k}": (FrontThenOrt(front, m), "wave") for k, m in model.items()}}
    except Exception as exc:  # noqa: BLE001 - no onnx extra, or an export failure: measured without it, said so
        log.warning("onnxruntime variants skipped: %s", str(exc).splitlines()[0][:200])
        return {}


def shipped_cost(fp32: nn.Module, int8: nn.Module, wave: torch.Tensor, clips: np.ndarray, out: Path, a: argparse.Namespace) -> dict:
    """What a device pays per 1-s clip for the shipped file (waveform in, logits out), fp32 against int8, with
    the front end's share; in the same alternating rounds onnxruntime fp32 and its own static int8 (calibrated on
    training clips): the whole file, the model alone, and the torch front end feeding onnxruntime's model. Per
    clip in a batch of `clips` (as `asc_dist.predict` feeds it): the int8 file against the same file traced with
    its front end in one pass over the batch (before the trace kept the chunk loop)."""
    import asc_dist.nets.features as features
    from asc_dist.ship.format import WaveToLogits

    front = LogMel(STUDENT_MEL).eval()
    traced_front = traced(front, wave)
    with torch.no_grad():
        mel = front(wave)
    with unittest.mock.patch.object(features, "CHUNK_BYTES", 2**40):  # the trace's chunk: the whole batch
        one_pass = traced(WaveToLogits(front, int8), wave)
    variants = {"fp32": (traced(WaveToLogits(front, fp32), wave), "wave"), "int8": (traced(WaveToLogits(front, int8), wave), "wave"),
                "front": (traced_front, "wave"), **onnx_variants(fp32, clips, traced_front, out)}
    batched = {"int8_batch": variants["int8"][0], "int8_batch_one_pass": one_pass}
    inputs = {"wave": wave, "mel": mel, "batch": torch.from_numpy(clips)}
    times: dict[str, list[float]] = {k: [] for k in [*variants, *batched]}
    for _ in range(a.latency_rounds):
        for k, (m, takes) in variants.items():
            times[k].append(cpu_ms_per_clip(m, inputs[takes], a.latency_repeats))
        for k, m in batched.items():
            times[k].append(cpu_ms_per_clip(m, inputs["batch"], max(1, a.latency_repeats // 10)))
    ms = {k: statistics.median(v) for k, v in times.items()}
    return {"fp32_ms": round(ms["fp32"], 3), "int8_ms": round(ms["int8"], 3), "ratio_int8_vs_fp32": round(ms["int8"] / ms["fp32"], 3),
            "front_end_ms": round(ms["front"], 3), "front_end_share_of_int8": round(ms["front"] / ms["int8"], 3),
            **{f"{k}_ms": round(v, 3) for k, v in ms.items() if "onnxruntime" in k},
            "batch_clips": len(clips), "int8_batch_ms_per_clip": round(ms["int8_batch"], 3),
            "int8_batch_one_pass_ms_per_clip": round(ms["int8_batch_one_pass"], 3)}


def bench_preset(spec: str, store: WaveformStore, run_dir: Path, data: DataConfig, a: argparse.Namespace, calib: torch.Tensor,
                 wave: torch.Tensor) -> dict:
    model_name, preset = parse_preset(spec)
    cfg = StudentConfig(run_dir=str(run_dir), data=data, model=model_name, preset=preset, norm=a.norm, targets="fused",
                        epochs=1, batch_size=a.batch_size, device=a.device, threads=a.threads)
    cfg.validate()
    torch.manual_seed(0)
    model = build_student_model(cfg, len(store.classes))
    cx = measure(model)
    trainer = student_trainer(cfg, store, model, epochs=1, lr=cfg.lr)
    # The first `train_clips` of the split: positions stay those of the full split, which the KD loss indexes by.
    train = trainer.train_data
    n = min(a.train_clips, len(train))
    trainer.train_data = replace(train, table=train.table.take(slice(0, n)), rows=train.rows[:n])
    trainer.loader = BatchLoader(trainer.train_data, cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=n > cfg.batch_size)
    warm = torch.from_numpy(trainer.train_data.waves(np.arange(min(a.batch_size, n)))).to(trainer.device)
    trainer.model.train()
    trainer.model(trainer.front_end(warm)).sum().backward()  # first-step set-up (kernels, allocator) not timed
    trainer.optimizer.zero_grad(set_to_none=True)
    m = trainer.train_epoch()
    log.info("%s: %.1f clips/s, data wait %.1f %%", spec, m["clips_per_s"], 100 * m["data_wait_share"])

    fp32 = copy.deepcopy(trainer.model).cpu().eval()
    x = calib[:1]
    int8 = calibrated_int8(fp32, calib)
    # The shipped artefact is the TorchScript export; fp32 goes through the same trace for a like-for-like pair.
    fp32_ts = torch.jit.load(str(export_torchscript(fp32, run_dir / f"{spec.replace(':', '-')}-fp32.pt", x)))
    int8_ts = torch.jit.load(str(export_torchscript(int8, run_dir / f"{spec.replace(':', '-')}-int8.pt", x)))
    variants = {"fp32": fp32, "int8": int8, "fp32_torchscript": fp32_ts, "int8_torchscript": int8_ts}
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(a.latency_rounds):  # alternating, so load changes hit every variant
        for k, model_k in variants.items():
            wall[k].append(latency_per_clip_ms(model_k, x, repeats=a.latency_repeats))
            cpu[k].append(cpu_ms_per_clip(model_k, x, a.latency_repeats))

    def ratio(times: dict[str, list[float]], num: str, den: str) -> float:
        return round(statistics.median(q / f for q, f in zip(times[num], times[den])), 3)

    cpu_q = cpu["int8"]
    by_engine = {}
    for engine in ("onednn", "fbgemm"):
        if engine in torch.backends.quantized.supported_engines:
            with quantized_engine(engine):
                q = calibrated_int8(fp32, calib)
                by_engine[engine] = {"int8_cpu_ms": round(cpu_ms_per_clip(q, x, a.latency_repeats), 3)}
    by_engine[torch.backends.quantized.engine] = {"int8_cpu_ms": round(statistics.median(cpu_q), 3)}
    row = {
        "preset": spec, "model": model_name, "norm": a.norm if model_name == "dsflexinet" else "bn",
        "params": cx.params, "macs": cx.macs, "dcase_int8_param_bytes": cx.int8_bytes,
        "int8_state_dict_bytes": int8_size_bytes(int8),
        "train_clips": int(round(m["clips_per_s"] * m["epoch_s"])), "clips_per_s": round(m["clips_per_s"], 1),
        "data_wait_share": round(m["data_wait_share"], 4), "epoch_s": round(m["epoch_s"], 2),
        "fp32_latency_ms": round(statistics.median(wall["fp32"]), 3), "int8_latency_ms": round(statistics.median(wall["int8"]), 3),
        "ratio_int8_vs_fp32": ratio(wall, "int8", "fp32"),
        "fp32_cpu_ms": round(statistics.median(cpu["fp32"]), 3), "int8_cpu_ms": round(statistics.median(cpu["int8"]), 3),
        "ratio_int8_vs_fp32_cpu": ratio(cpu, "int8", "fp32"),
        "torchscript": {
            "fp32_latency_ms": round(statistics.median(wall["fp32_torchscript"]), 3),
            "int8_latency_ms": round(statistics.median(wall["int8_torchscript"]), 3),
            "ratio_int8_vs_fp32": ratio(wall, "int8_torchscript", "fp32_torchscript"),
            "ratio_int8_vs_fp32_eager": ratio(wall, "int8_torchscript", "fp32"),
            "ratio_int8_vs_fp32_cpu": ratio(cpu, "int8_torchscript", "fp32_torchscript"),
            "int8_file_bytes": int8_size_bytes(run_dir / f"{spec.replace(':', '-')}-int8.pt"),
        },
        "int8_by_engine": by_engine,
    }
    if model_name == "dsflexinet" and a.norm == "rn":
        row["residual_norm"] = rn_cost(fp32, int8, preset, len(store.classes), calib, a)
    row["shipped_waveform_in"] = shipped_cost(fp32, int8, wave, store.split("train").waves(np.arange(64)), run_dir, a)
    if not a.no_profile:
        row["int8_profile"] = int8_profile(fp32, int8, x, a.profile_repeats)
    log.info("%s: fp32 %.2f ms, int8 %.2f ms (ratio %.2f; cpu ratio %.2f)", spec, row["fp32_latency_ms"],
             row["int8_latency_ms"], row["ratio_int8_vs_fp32"], row["ratio_int8_vs_fp32_cpu"])
    return row


def step_profiles(run_dir: Path, data: DataConfig, a: argparse.Namespace) -> dict:
    """The default recipe's step, part by part (ops/step_profile.py), this checkout beside `--baseline-src`."""
    from step_profile import profile_sources

    args = ["--run", str(run_dir), "--store", str(data.store), "--preset", a.step_preset, "--batch-size", str(a.batch_size),
            "--steps", str(a.step_steps), *(["--dirs", a.dirs] if a.dirs else []), *(["--data", a.data] if a.data else [])]
    result = profile_sources(a.baseline_src, args, a.step_rounds)
    if "before" in result:  # the goal's yardstick: this step against the old step's own limit
        result["after_vs_before_model_alone"] = round(result["after"]["clips_per_s"] / result["before"]["model_alone"]["clips_per_s"], 3)
    result["qat_after"] = profile_sources(None, [*args, "--qat"], a.step_rounds)["after"]  # the QAT phase's step
    result["preset"], result["batch_size"] = a.step_preset, a.batch_size
    result["goals"] = {"speedup_whole_step": 2.0, "step_vs_model_alone": 0.7}
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="TAU-layout dataset (default: generate the synthetic one in a temp dir)")
    p.add_argument("--clips-per-device", type=int, default=100, help="synthetic train clips per seen device")
    p.add_argument("--presets", default=DEFAULT_PRESETS, help="comma list: sm1..sm4 (DS-FlexiNet) or MODEL:PRESET")
    p.add_argument("--norm", default="rn", help="DS-FlexiNet normalisation: rn or bn")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--train-clips", type=int, default=256, help="clips in the timed training epoch (a prefix of the split)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (latency is always measured at this count)")
    p.add_argument("--device", default="cpu", help="training device: cpu or cuda (latency is always CPU)")
    p.add_argument("--latency-repeats", type=int, default=30)
    p.add_argument("--latency-rounds", type=int, default=5)
    p.add_argument("--profile-repeats", type=int, default=20)
    p.add_argument("--no-profile", action="store_true", help="skip the per-module int8 profile")
    p.add_argument("--dirs", default=None, help="impulse responses for Auto-DIR (e.g. ../shared/data/micirp; default: generated)")
    p.add_argument("--baseline-src", default=None, help="an older checkout (git worktree) profiled beside this one")
    p.add_argument("--step-preset", default="sm2", help="the student of the step profile")
    p.add_argument("--step-steps", type=int, default=10, help="timed steps per step-profile round")
    p.add_argument("--step-rounds", type=int, default=3, help="step-profile rounds (alternating with the baseline)")
    p.add_argument("--step-only", action="store_true", help="only the step profile")
    p.add_argument("--quick", action="store_true", help="smallest settings (smoke test)")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
    if a.quick:
        a.clips_per_device, a.train_clips, a.batch_size = 4, 32, 16
        a.latency_repeats, a.latency_rounds, a.profile_repeats = 3, 1, 2
        a.step_preset, a.step_steps, a.step_rounds = "sm1", 2, 1
        a.presets = a.presets if a.presets != DEFAULT_PRESETS else "sm1"
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench_students_"))
    try:
        # no --data: prepare_store generates the synthetic dataset into tmp/data first
        data = DataConfig(root=a.data, store=str(tmp / "store"), synth_clips_per_device=a.clips_per_device, dirs=a.dirs)
        store = prepare_store(data, tmp)
        write_fake_targets(tmp, store)
        steps = step_profiles(tmp, data, a)
        if a.step_only:
            print(json.dumps({"step_profile": steps, "cpus": os.cpu_count(), "load_average_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)]}, indent=2))
            return
        calib = real_mels(store, 32)
        front_rate = front_end_rate(store, a.batch_size, device, repeats=3)
        wave = torch.from_numpy(store.split("test").waves(np.arange(1)))
        front = front_end_cost(wave, a)
        rows = [bench_preset(spec, store, tmp, data, a, calib, wave) for spec in a.presets.split(",")]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({
        "train_clips_available": len(store.split("train")), "batch_size": a.batch_size, "device": str(device),
        "torch_threads": torch.get_num_threads(), "quantized_engine": torch.backends.quantized.engine,
        "cpus": os.cpu_count(), "cpu_isa": cpu_isa(), "front_end_clips_per_s": round(front_rate, 1), "front_end_1_clip": front,
        "goals": {"data_wait_share": 0.05, "ratio_int8_vs_fp32": 0.5},
        "presets": rows, "step_profile": steps,
        "load_average_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    }, indent=2))


if __name__ == "__main__":
    main()
