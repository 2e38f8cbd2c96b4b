"""Benchmark the logits Parquet layer and the fusion fit at full TAU22 scale; prints one JSON object.

Synthetic logits, 230,350 clips x 12 teachers x 10 classes, through the project's own functions
(`write_teacher_logits`, `load_teachers`, `fit_fusion`). Goals: write + read <= 3 s, fit <= 10 s, peak RSS
<= 2 GB (the same data written and read with plain pyarrow calls, measured on a 2-core machine: write 1.25 s,
read 0.95 s, fit 1.7 s, RSS 1.3 GB).

    OMP_NUM_THREADS=1 python ops/bench_fusion.py [--clips 230350] [--teachers 12] [--shuffled 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from asc_dist.fuse.fit import fit_fusion, fuse
from asc_dist.run.logits import load_teachers, write_teacher_logits

DEVICES = np.array(["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"], dtype=object)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def synthetic(n: int, t: int, c: int, seed: int = 0):
    """TAU-like clip table and teachers whose quality falls with their index (signal + noise)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    devices = DEVICES[rng.integers(0, len(DEVICES), n)]
    split = np.array(["train", "val", "test"], dtype=object)[rng.choice(3, n, p=[0.72, 0.15, 0.13])]
    names = np.array([f"audio/scene-city-{i // 10}-{i}-{i % 10}-{d}.wav" for i, d in zip(range(n), devices)],
                     dtype=object)
    signal = np.linspace(2.5, 0.5, t, dtype=np.float32)
    logits = rng.standard_normal((t, n, c), dtype=np.float32)
    logits[:, np.arange(n), labels] += signal[:, None]
    return names, split, devices, labels, logits


class Timer:
    """Wall and CPU seconds per phase: on a shared machine CPU time is the steadier of the two."""

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.phases[name] = {
            "wall_s": round(time.perf_counter() - wall, 3), "cpu_s": round(time.process_time() - cpu, 3),
        }


def raw_reference(run_dir: Path, names, split, devices, labels, logits, timer: Timer) -> None:
    """The raw-pyarrow reference (plain pyarrow write and read of the same table), measured in this process so that both see the same machine load."""
    with timer("raw_pyarrow_write"):
        for k in range(len(logits)):
            table = pa.table({
                "filename": pa.array(names), "split": pa.array(split), "device": pa.array(devices),
                "label": pa.array(labels.astype(np.int32)),
                "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits[k].reshape(-1)), logits.shape[2]),
            })
            pq.write_table(table, run_dir / f"raw{k}.parquet")
    with timer("raw_pyarrow_read"):
        for k in range(len(logits)):
            col = pq.read_table(run_dir / f"raw{k}.parquet")["logits"].combine_chunks()
            col.values.to_numpy().reshape(len(col), -1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=230_350)
    p.add_argument("--teachers", type=int, default=12)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--shuffled", type=int, default=1, help="teachers written in their own row order")
    p.add_argument("--no-reference", action="store_true", help="skip the raw-pyarrow reference")
    a = p.parse_args()
    load_start = os.getloadavg()[0]
    names, split, devices, labels, logits = synthetic(a.clips, a.teachers, a.classes)
    classes = [f"scene{k}" for k in range(a.classes)]
    rng = np.random.default_rng(1)
    timer = Timer()
    run_dir = Path(tempfile.mkdtemp(prefix="bench_fusion_"))
    try:
        with timer("write"):
            for k in range(a.teachers):
                o = rng.permutation(a.clips) if k < a.shuffled else slice(None)
                write_teacher_logits(run_dir, f"teacher{k:02d}", names[o], split[o], devices[o], labels[o],
                                     logits[k][o], classes, {"index": k}, "bench")
        if not a.no_reference:
            (run_dir / "raw").mkdir()
            raw_reference(run_dir / "raw", names, split, devices, labels, logits, timer)
        del logits
        with timer("read_align"):
            data = load_teachers(run_dir)
        rss_after_read = peak_rss_mb()
        with timer("first_fit_warmup"):  # the first LBFGS in a process imports torch._dynamo
            fit_fusion(data.logits[:, :100], data.labels[:100])
        with timer("fit_all_rows"):
            w, b, fit_all = fit_fusion(data.logits, data.labels)
        val = data.mask("val")
        with timer("fit_val_rows"):
            _, _, fit_val = fit_fusion(data.logits[:, val], data.labels[val])
        with timer("fuse_all_rows"):
            fuse(data.logits, w, b)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    ph = timer.phases
    print(json.dumps({
        "clips": a.clips, "teachers": a.teachers, "classes": a.classes, "shuffled_teachers": a.shuffled,
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "load_average_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "write_plus_read_wall_s": round(ph["write"]["wall_s"] + ph["read_align"]["wall_s"], 3),
        "fit_all_rows": {"iterations": fit_all.iterations, "evaluations": fit_all.evaluations,
                         "converged": fit_all.converged, "loss": round(fit_all.loss, 6)},
        "fit_val_rows": {"rows": fit_val.rows, "iterations": fit_val.iterations, "converged": fit_val.converged},
        "phases": ph,
        "peak_rss_after_read_mb": round(rss_after_read), "peak_rss_mb": round(peak_rss_mb()),
        "goals": {"write_plus_read_s": 3.0, "fit_s": 10.0, "peak_rss_mb": 2048},
    }, indent=2))


if __name__ == "__main__":
    main()
