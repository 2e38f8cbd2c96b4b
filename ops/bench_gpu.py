"""Benchmark one GPU: bf16 autocast against fp32 for PaSST-S and a student, four teachers sharing the GPU
through Ray against one after the other, and the GPU's utilisation while each runs; prints one JSON object on
stdout (progress on stderr). Each timed run is bounded (steps, seconds) so the whole fits in 8 minutes on
one GPU; `--quick` is a smoke run (tiny models, two teachers).

(a) `passt`: full-size PaSST-S (85 M parameters, random initialisation, nothing downloaded) trained on 10-s
clips at 32 kHz (each recording's context window, `asc_dist.training.context`: 128 x 1000 log-mels, PaSST's real
input), set up the way a teacher trial does it (`asc_dist.teach.trial.teacher_trainer`: the roster's PaSST
recipe with its augmentations and structured patchout). `--steps` optimisation steps (and at least
`--min-seconds`) after `--warmup` untimed ones through `Trainer.step`, bf16 autocast then fp32
(`OptimConfig.amp`), on the same model. Batches are read from the store once and cycled, so the time is the
GPU step (host-to-device copy, front end, augmentations, forward, backward, AdamW) without the store's read
rate (ops/bench_scale.py measures that). The loss is read every step, as `train_epoch` does.
(b) Utilisation: `nvidia-smi` samples utilisation and memory every 0.5 s during each timed run (mean and max
per run). The physical ceiling is 100 % utilisation (a kernel running all the time); well below it, the step
waits on the host (Python, kernel launches, data).
(c) `teachers`: four CP-ResNet teachers through the project's own `asc_dist.teach.driver.run_teachers`, once with
`gpus_per_teacher=0.25` (all four on the GPU at once) and once with a whole GPU each (Ray then runs them one
after the other); same roster, seeds and CPUs per teacher. Each call's wall time includes Tune start, trial
start, training, scoring every clip, logits and MLflow (the helpers of ops/bench_teachers.py).
(d) `student`: DS-FlexiNet (`--student`, default sm2) through `asc_dist.distill.recipe.student_trainer` (KD loss against
fused targets written for the synthetic store, the student recipe's augmentations, the front end on the GPU),
bf16 then fp32 as in (a).

    python ops/bench_gpu.py [--parts passt,teachers,student] [--steps 20] [--out bench_gpu.json]
    python ops/bench_gpu.py --device cpu --quick [--parts student]     # smoke run without a GPU
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from bench_students import write_fake_targets
from bench_teachers import timed_run, trial_summary, write_roster

from asc_dist.cli import run_main
from asc_dist.data.prepare import DataConfig, prepare_store, synthetic_root
from asc_dist.data.store import WaveformStore
from asc_dist.errors import ConfigError
from asc_dist.training.batches import Batch
from asc_dist.training.context import context_parts
from asc_dist.training.trainer import Trainer

log = logging.getLogger("bench_gpu")
PARTS = ("passt", "teachers", "student")
SMI_QUERY = ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]


class GpuSampler:
    """`nvidia-smi` in its own process, one line every `interval_s`, read by a thread while a part runs."""

    def __init__(self, gpu: str | None, interval_s: float = 0.5):
        self.smi = shutil.which("nvidia-smi")
        self.gpu, self.interval_s = gpu, interval_s
        self.samples: list[tuple[float, float]] = []  # (utilisation %, memory used MiB)
        self.proc: subprocess.Popen | None = None
        self.reader: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        if self.smi is None:
            return self
        cmd = [self.smi, *SMI_QUERY, "-lms", str(int(self.interval_s * 1000)), *(["-i", self.gpu] if self.gpu else [])]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                util, mem = (float(x) for x in line.split(","))
            except ValueError:
                continue  # "[N/A]" or a partial line
            self.samples.append((util, mem))

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.reader.join(timeout=5)

    def summary(self) -> dict:
        if self.smi is None:
            return {"note": "nvidia-smi not found: utilisation not sampled"}
        if not self.samples:
            return {"samples": 0, "note": "nvidia-smi gave no readable sample in this run"}
        util, mem = np.array(self.samples).T
        return {"samples": len(util), "util_mean_pct": round(float(util.mean()), 1), "util_max_pct": round(float(util.max()), 1),
                "memory_used_max_mib": round(float(mem.max())), "interval_s": self.interval_s}


def gpu_id() -> str | None:
    """nvidia-smi's name for the GPU torch uses (its UUID, whatever CUDA_VISIBLE_DEVICES renumbers), if
    nvidia-smi knows it; None: sample every GPU nvidia-smi lists."""
    smi = shutil.which("nvidia-smi")
    try:
        raw = torch.cuda.get_device_properties(torch.cuda.current_device()).uuid
        name = f"GPU-{uuid.UUID(bytes=bytes(raw.bytes))}"
    except (AttributeError, RuntimeError, AssertionError, TypeError, ValueError):
        return None
    if smi is None:
        return None
    probe = subprocess.run([smi, "-i", name, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    return name if probe.returncode == 0 else None


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "ray": importlib.metadata.version("ray"),
           "python": platform.python_version(), "cpus": os.cpu_count(),
           "device": str(device), "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), capability=f"{props.major}.{props.minor}",
                   cudnn=torch.backends.cudnn.version(), bf16_supported=torch.cuda.is_bf16_supported())
        smi = shutil.which("nvidia-smi")
        if smi:
            out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
            env["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    return env


def host_batches(data, batch_size: int, n: int, seed: int = 0) -> list[Batch]:
    """`n` random batches of `data` read once into host memory (as the loader hands them out), cycled by the timed runs."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        index = np.sort(rng.choice(len(data), batch_size, replace=batch_size > len(data)))
        out.append(Batch(index, data.waves(index), data.table.label[index], data.table.device[index].tolist()))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(trainer: Trainer, batches: list[Batch], a: argparse.Namespace, gpu: str | None) -> dict:
    """`a.warmup` untimed steps, then at least `a.steps` steps and `a.min_seconds` (at most `a.max_seconds`)."""
    trainer.model.train()
    trainer.front_end.train()
    device = trainer.device
    for i in range(a.warmup):
        float(trainer.step(batches[i % len(batches)])[0])
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    done, clips = 0, 0
    with GpuSampler(gpu) as sampler:
        start = time.perf_counter()
        elapsed = 0.0
        while (done < a.steps or elapsed < a.min_seconds) and (done == 0 or elapsed < a.max_seconds):
            batch = batches[done % len(batches)]
            loss = float(trainer.step(batch)[0])  # a host sync every step, as train_epoch's bookkeeping does
            done, clips = done + 1, clips + len(batch.labels)
            elapsed = time.perf_counter() - start
        sync(device)
        elapsed = time.perf_counter() - start
    row = {"amp": trainer.cfg.amp, "steps": done, "clips": clips, "seconds": round(elapsed, 3),
           "clips_per_s": round(clips / elapsed, 2), "step_ms": round(1000 * elapsed / done, 2), "last_loss": round(loss, 4)}
    if device.type == "cuda":
        row["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    row["gpu_utilisation"] = sampler.summary()
    log.info("%s %s: %.1f clips/s (%d steps, %.1f s)", trainer.name, trainer.cfg.amp, row["clips_per_s"], done, elapsed)
    return row


def bf16_vs_fp32(trainer: Trainer, batches: list[Batch], a: argparse.Namespace, gpu: str | None) -> dict:
    """The same trainer timed with bf16 autocast, then with it off (`OptimConfig.amp` is read every step)."""
    runs = {}
    for amp in ("bf16", "off"):
        trainer.cfg.amp = amp
        runs["bf16" if amp == "bf16" else "fp32"] = timed_steps(trainer, batches, a, gpu)
    return {**runs, "speedup_bf16_vs_fp32": round(runs["bf16"]["clips_per_s"] / runs["fp32"]["clips_per_s"], 3),
            "autocast_active": trainer.device.type == "cuda"}  # on a CPU both runs are fp32


def passt_part(tmp: Path, data: DataConfig, store: WaveformStore, a: argparse.Namespace, gpu: str | None) -> dict:
    from asc_dist.teach.roster import load_roster
    from asc_dist.teach.trial import TeacherRunContext, teacher_trainer

    recipe = next(t for t in load_roster(None) if t.family == "passt")  # the built-in roster's PaSST recipe
    t = replace(recipe, name="bench-passt", size=a.passt_size, context_s=10, batch_size=a.passt_batch, epochs=1)
    ctx = TeacherRunContext(run_dir=str(tmp), store=str(store.path), val_fraction=data.val_fraction, val_seed=data.val_seed,
                            fingerprint=store.fingerprint, mlflow_uri="", experiment="bench", dirs=None,
                            device=a.device, threads=torch.get_num_threads())
    start = time.perf_counter()
    trainer = teacher_trainer(t, ctx, store)
    build_s = time.perf_counter() - start
    batches = host_batches(trainer.train_data, t.batch_size, a.host_batches)
    k = context_parts(t.context_s, int(store.manifest["samples"]), store.sample_rate)
    with torch.no_grad():
        spec = trainer.front_end(torch.from_numpy(batches[0].waves[:1]).to(trainer.device))
    return {
        "model": f"passt:{t.size}", "params": sum(p.numel() for p in trainer.model.parameters()), "init": "random",
        "clip_s": k * int(store.manifest["samples"]) / store.sample_rate, "sample_rate": store.sample_rate,
        "log_mel_shape": list(spec.shape[1:]), "batch_size": t.batch_size, "recipe": recipe.name,
        "s_patchout_f": t.s_patchout_f, "s_patchout_t": t.s_patchout_t, "windows_in_store": len(trainer.train_data),
        "build_s": round(build_s, 2), **bf16_vs_fp32(trainer, batches, a, gpu),
    }


def student_part(tmp: Path, data: DataConfig, store: WaveformStore, a: argparse.Namespace, gpu: str | None) -> dict:
    from asc_dist.distill.config import StudentConfig, build_student_model
    from asc_dist.distill.recipe import student_trainer

    write_fake_targets(tmp, store)
    cfg = StudentConfig(run_dir=str(tmp), data=data, preset=a.student, targets="fused", epochs=1, batch_size=a.student_batch,
                        device=a.device)
    cfg.validate()
    torch.manual_seed(0)
    model = build_student_model(cfg, len(store.classes))
    trainer = student_trainer(cfg, store, model, epochs=1, lr=cfg.lr)
    batches = host_batches(trainer.train_data, cfg.batch_size, a.host_batches)
    return {"model": f"dsflexinet:{cfg.preset}", "params": sum(p.numel() for p in model.parameters()), "batch_size": cfg.batch_size,
            "front_end": "on the training device", **bf16_vs_fp32(trainer, batches, a, gpu)}


def teachers_part(tmp: Path, data: DataConfig, store: WaveformStore, a: argparse.Namespace, gpu: str | None) -> dict:
    import ray

    from asc_dist.infra.cluster import connect
    from asc_dist.teach.driver import TeachersConfig

    cpus = os.cpu_count() or 1
    start = time.perf_counter()
    # One GPU for Ray; on a CPU machine it is a logical one and the trials train on the CPU (a smoke run only).
    connect(None, num_cpus=cpus, num_gpus=1)
    ray_start_s = time.perf_counter() - start
    names = [f"bench-t{i}" for i in range(1, a.teachers + 1)]
    roster = write_roster(tmp / "roster.yaml", names, "cpresnet", a.teacher_size, a.teacher_epochs, a.teacher_batch)
    cpus_per_teacher = cpus / a.teachers
    train_clips = len(store.split("train", data.val_fraction, data.val_seed))
    runs = {}
    try:
        for mode, gpus in (("shared", 1.0 / a.teachers), ("one_after_another", 1.0)):
            cfg = TeachersConfig(run_dir=str(tmp / mode), data=data, roster=roster, cpus_per_teacher=cpus_per_teacher, gpus_per_teacher=gpus,
                                 experiment="bench", max_failures=0)
            with GpuSampler(gpu) as sampler:
                wall, rows = timed_run(cfg)
            trials = [trial_summary(r, train_clips) for r in rows]
            runs[mode] = {"gpus_per_teacher": gpus, "wall_s": round(wall, 2), "trials": trials,
                          "train_s_sum": round(sum(t["train_s"] for t in trials), 2), "gpu_utilisation": sampler.summary()}
            log.info("teachers %s: %.1f s", mode, wall)
    finally:
        ray.shutdown()
    shared, serial = runs["shared"], runs["one_after_another"]
    return {
        "family": "cpresnet", "size": a.teacher_size, "teachers": a.teachers, "epochs": a.teacher_epochs, "batch_size": a.teacher_batch,
        "train_clips": train_clips, "cpus_per_teacher": round(cpus_per_teacher, 2), "amp": "bf16",
        "ray_start_s_excluded": round(ray_start_s, 2), **runs,
        "speedup": round(serial["wall_s"] / shared["wall_s"], 3),
        "train_slowdown_when_shared": round(shared["train_s_sum"] / serial["train_s_sum"], 3),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default; exit 2 without one) or cpu (a smoke run)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    p.add_argument("--steps", type=int, default=20, help="timed optimisation steps per model and precision (at least)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each timed run")
    p.add_argument("--min-seconds", type=float, default=8.0, help="each timed run lasts at least this long (utilisation samples)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="and stops after this long even short of --steps")
    p.add_argument("--data", default=None, help="TAU-layout dataset (default: generate the synthetic one in a temp dir)")
    p.add_argument("--clips-per-device", type=int, default=100, help="synthetic train clips per seen device")
    p.add_argument("--passt-size", default="full")
    p.add_argument("--passt-batch", type=int, default=32, help="10-s clips per PaSST step")
    p.add_argument("--student", default="sm2", help="DS-FlexiNet preset")
    p.add_argument("--student-batch", type=int, default=256)
    p.add_argument("--teachers", type=int, default=4, help="CP-ResNet teachers sharing the GPU")
    p.add_argument("--teacher-size", default="default")
    p.add_argument("--teacher-epochs", type=int, default=20)
    p.add_argument("--teacher-batch", type=int, default=64)
    p.add_argument("--host-batches", type=int, default=4, help="distinct batches read once and cycled")
    p.add_argument("--threads", type=int, default=4, help="torch CPU threads of this process")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few steps (smoke test)")
    a = p.parse_args(argv)
    a.parts = [x.strip() for x in a.parts.split(",") if x.strip()]
    unknown = sorted(set(a.parts) - set(PARTS))
    if unknown or not a.parts:
        raise ConfigError(f"--parts {','.join(unknown) or '(none)'} unknown; choose from {', '.join(PARTS)}")
    if a.device not in ("cuda", "cpu"):
        raise ConfigError(f"--device {a.device!r} is unknown; use cuda or cpu")
    if a.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"CUDA is not available (torch {torch.__version__}, CUDA build {torch.version.cuda}); "
                          "run on a machine with an NVIDIA GPU, or pass --device cpu for a smoke run")
    if min(a.steps, a.teachers, a.host_batches, a.passt_batch, a.student_batch) < 1 or a.warmup < 0:
        raise ConfigError("--steps, --teachers, --host-batches and batch sizes must be >= 1, --warmup >= 0")
    if a.quick:
        a.clips_per_device, a.steps, a.warmup, a.min_seconds, a.host_batches = 4, 2, 1, 0.0, 2
        a.passt_size, a.passt_batch, a.student_batch = "tiny", 2, 8
        a.teachers, a.teacher_size, a.teacher_epochs, a.teacher_batch = 2, "tiny", 1, 16
        a.threads = 1 if a.device == "cpu" else a.threads
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    gpu = gpu_id() if device.type == "cuda" else None
    result: dict = {"environment": environment(device), "parts": a.parts, "quick": a.quick,
                    "reference": "utilisation 100 % is the ceiling: the GPU runs a kernel all the time; "
                                 "well below it, the step waits on the host (Python, kernel launches, data)"}
    if shutil.which("nvidia-smi") is None:
        result["note"] = "nvidia-smi not found: GPU utilisation not sampled"
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    try:
        # no --data: prepare_store generates the synthetic dataset into tmp/data first
        data = DataConfig(root=a.data, store=str(tmp / "store"), synth_clips_per_device=a.clips_per_device)
        store = prepare_store(data, tmp)
        data = replace(data, root=str(synthetic_root(tmp))) if data.root is None else data  # generated once, not per teachers call
        result["clips"] = len(store.table())
        result["setup_s"] = round(time.perf_counter() - start, 2)
        for name, run in (("passt", passt_part), ("student", student_part), ("teachers", teachers_part)):
            if name in a.parts:
                log.info("part %s", name)
                part_start = time.perf_counter()
                result[name] = run(tmp, data, store, a, gpu)
                result[name]["part_s"] = round(time.perf_counter() - part_start, 2)
                gc.collect()  # the part's model and optimiser go, and with them its cached GPU memory
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["total_s"] = round(time.perf_counter() - start, 2)
    text = json.dumps(result, indent=2)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    run_main(main)
