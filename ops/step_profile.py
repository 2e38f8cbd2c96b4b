"""Where one training step goes: the default student recipe's `Trainer.step` (or a teacher's, `--teacher`) timed
part by part, beside the model's forward+backward alone on a ready batch of log-mels (the limit a step can
approach). Prints one JSON object.

The parts are timed from outside the trainer (forward hooks on each augmentation, the front end and the model;
the loss function and the optimiser wrapped), so the same script measures any checkout of the project: run it
with PYTHONPATH pointing at an older one for a before/after pair (`ops/bench_students.py --baseline-src`).
`backward_and_rest` is the step's time minus every timed part: the backward pass and the step's own glue.

    OMP_NUM_THREADS=1 python ops/step_profile.py --run RUN --store STORE [--preset sm2] [--dirs IR_DIR]
        [--teacher cpresnet:default --context-s 10]   # the demo roster's context teacher (batch 8, roll 10 s, FMS)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from asc_dist.data.prepare import DataConfig, prepare_store
from asc_dist.distill.config import StudentConfig, build_student_model
from asc_dist.distill.recipe import student_trainer
from asc_dist.training.batches import BatchLoader

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("step_profile")


def profile_sources(baseline: str | None, args: list[str], rounds: int) -> dict:
    """This script in a child process per checkout (PYTHONPATH = that checkout, one thread): "after" is this one,
    "before" the `baseline` checkout if given, alternating round by round so that load changes hit each; the median
    of every field, and with a baseline the speed-ups of "after" over it."""
    sources = {"before": Path(baseline).resolve(), "after": REPO} if baseline else {"after": REPO}
    runs: dict[str, list[dict]] = {k: [] for k in sources}
    for r in range(rounds):
        for name, src in sources.items():
            env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
            out = subprocess.run([sys.executable, str(REPO / "ops" / "step_profile.py"), *args], env=env, cwd=src,
                                 capture_output=True, text=True, check=False)
            if out.returncode != 0:
                raise SystemExit(f"step profile of {src} ({' '.join(args)}) failed:\n{out.stderr[-2000:]}")
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            log.info("step profile %s round %d: %.1f clips/s (model alone %.1f)", name, r + 1, runs[name][-1]["clips_per_s"],
                     runs[name][-1]["model_alone"]["clips_per_s"])
    result = {name: median_of(rows) | {"rounds": len(rows), "source": str(sources[name])} for name, rows in runs.items()}
    if "before" in result:
        before, after = result["before"], result["after"]
        result["speedup_whole_step"] = round(after["clips_per_s"] / before["clips_per_s"], 3)
        result["speedup_model_alone"] = round(after["model_alone"]["clips_per_s"] / before["model_alone"]["clips_per_s"], 3)
    return result


def median_of(rows: list[dict]) -> dict:
    """Field by field median of equally shaped JSON objects (non-numbers from the first)."""
    out = {}
    for key, first in rows[0].items():
        if isinstance(first, dict):
            out[key] = median_of([r[key] for r in rows if isinstance(r.get(key), dict)])
        elif isinstance(first, (int, float)) and not isinstance(first, bool):
            out[key] = round(statistics.median(r[key] for r in rows if key in r), 3)
        else:
            out[key] = first
    return out


def part_name(module: torch.nn.Module) -> str:
    return {"AutoDeviceIR": "adir", "DeviceIR": "dir", "TimeRoll": "roll", "TimeStretch": "stretch", "Mixup": "mixup",
            "FreqMixStyle": "freq_mixstyle", "FrequencyMasking": "freq_mask", "TimeMasking": "time_mask"}.get(type(module).__name__, type(module).__name__)


class PartClock:
    """Seconds per named part, from forward pre/post hooks and wrapped callables."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._open: dict[str, float] = {}
        self.handles = []

    def watch(self, name: str, module: torch.nn.Module) -> None:
        self.handles.append(module.register_forward_pre_hook(lambda *_: self._open.__setitem__(name, time.perf_counter())))
        self.handles.append(module.register_forward_hook(lambda *_: self._close(name)))

    def _close(self, name: str) -> None:
        self.seconds[name] += time.perf_counter() - self._open.pop(name)

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start
        return timed


def endless(loader: BatchLoader):
    while True:
        yield from loader


def profile_step(trainer, steps: int, warmup: int) -> dict:
    """Milliseconds per step for each part over `steps` real batches from the trainer's loader (after `warmup`)."""
    clock = PartClock()
    for step in (trainer.wave_aug.steps if trainer.wave_aug is not None else []):
        clock.watch(part_name(step), step)
    clock.watch("front_end", trainer.front_end)
    for step in (trainer.spec_aug if trainer.spec_aug is not None else []):
        clock.watch(part_name(step), step)
    clock.watch("forward", trainer.model)
    trainer.loss_fn = clock.wrap("loss", trainer.loss_fn)
    trainer.optimizer.step = clock.wrap("optimizer", trainer.optimizer.step)
    trainer.model.train()
    trainer.front_end.train()
    batches = endless(trainer.loader)
    for _ in range(warmup):
        trainer.step(next(batches))
    clock.seconds.clear()
    trainer.loader.wait_s = 0.0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step_s, clips = [], 0
    start = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        trainer.step(batch)
        step_s.append(time.perf_counter() - t1)
        clips += len(batch.labels)
        clock.seconds["data_wait"] += t1 - t0
    wall = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    for h in clock.handles:
        h.remove()
    parts = {k: 1000 * v / steps for k, v in clock.seconds.items()}
    parts["backward_and_rest"] = 1000 * sum(step_s) / steps - sum(v for k, v in parts.items() if k != "data_wait")
    return {"parts_ms_per_step": {k: round(v, 2) for k, v in sorted(parts.items(), key=lambda kv: -kv[1])},
            "step_ms": round(1000 * wall / steps, 2), "clips_per_s": round(clips / wall, 1), "steps": steps,
            "page_faults_per_step": round(faults / steps)}


def model_alone(trainer, waves: np.ndarray, repeats: int) -> dict:
    """The model's forward+backward on a ready batch of log-mels, in the memory order the trainer trains in."""
    with torch.no_grad():
        spec = trainer.front_end.eval()(torch.from_numpy(waves))
    if getattr(trainer.cfg, "channels_last", False):
        spec = spec.contiguous(memory_format=torch.channels_last)
    trainer.model.train()
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        trainer.model(spec).sum().backward()
        if i >= 2:
            times.append(time.perf_counter() - start)
    trainer.model.zero_grad(set_to_none=True)
    ms = 1000 * statistics.median(times)
    return {"forward_backward_ms": round(ms, 2), "clips_per_s": round(len(waves) / ms * 1000, 1)}


def teacher_trainer_for(spec: str, context_s: int, batch_size: int, run: str, data: DataConfig, store):
    """The trainer a teacher trial builds, for the demo roster's context teacher recipe (asc_dist/teach/rosters/
    demo.yaml: FMS 0.4/0.4, a roll over the whole window) at `context_s` seconds."""
    from asc_dist.teach.roster import TeacherConfig
    from asc_dist.teach.trial import TeacherRunContext, teacher_trainer

    family, _, size = spec.partition(":")
    t = TeacherConfig(name=f"bench-{family}-{context_s}s", family=family, size=size or "default", seed=1, epochs=1, batch_size=batch_size,
                      context_s=context_s, roll=context_s * store.sample_rate, fms_p=0.4, fms_alpha=0.4)
    ctx = TeacherRunContext(run_dir=run, store=str(data.store), val_fraction=data.val_fraction, val_seed=data.val_seed,
                            fingerprint=store.fingerprint, mlflow_uri="", experiment="bench", dirs=data.dirs, device="cpu")
    return teacher_trainer(t, ctx, store)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run folder holding fused targets (ops/bench_students.py writes one)")
    p.add_argument("--store", required=True, help="packed store of the dataset")
    p.add_argument("--data", default=None, help="the dataset root (default: the run's synthetic data)")
    p.add_argument("--dirs", default=None, help="impulse responses for Auto-DIR (default: the dataset's own)")
    p.add_argument("--preset", default="sm2")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--qat", action="store_true", help="the student's int8 QAT phase (fake-quantised, fp32 forward)")
    p.add_argument("--teacher", default=None, help="FAMILY:SIZE: profile that teacher's step instead of the student's")
    p.add_argument("--context-s", type=int, default=10, help="the teacher's window in seconds (asc_dist.training.context)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(1)
    data = DataConfig(root=a.data, store=a.store, dirs=a.dirs)
    store = prepare_store(data, a.run)
    if a.teacher:
        trainer = teacher_trainer_for(a.teacher, a.context_s, a.batch_size, a.run, data, store)
    else:
        cfg = StudentConfig(run_dir=a.run, data=data, preset=a.preset, targets="fused", epochs=1, batch_size=a.batch_size, threads=1)
        torch.manual_seed(0)
        model = build_student_model(cfg, len(store.classes))
        if a.qat:  # as asc_dist/distill/qat.py trains it: fused conv-BN-ReLU with fake-quantisers, no autocast
            from asc_dist.nets.quantize import prepare_qat

            model = prepare_qat(model)
        trainer = student_trainer(cfg, store, model, epochs=1, lr=cfg.qat_lr if a.qat else cfg.lr, amp="off" if a.qat else None)
    if len(trainer.train_data) < a.batch_size:
        sys.exit(f"error: a batch of {a.batch_size} needs that many training clips; the store has {len(trainer.train_data)}")
    waves = trainer.train_data.waves(np.arange(a.batch_size))
    alone = model_alone(trainer, waves, repeats=5)
    step = profile_step(trainer, a.steps, a.warmup)
    step["model_alone"] = alone
    step["step_vs_model_alone"] = round(step["clips_per_s"] / alone["clips_per_s"], 3)
    step["seconds_of_audio_per_clip"] = round(waves.shape[1] / store.sample_rate, 3)  # a teacher's clip is its window
    step["audio_s_per_s"] = round(step["clips_per_s"] * step["seconds_of_audio_per_clip"], 1)
    step["augmentations"] = [part_name(m) for m in list(trainer.wave_aug.steps) + list(trainer.spec_aug)]
    step["channels_last"] = bool(getattr(trainer.cfg, "channels_last", False))
    step["qat"] = a.qat
    print(json.dumps(step))


if __name__ == "__main__":
    main()
