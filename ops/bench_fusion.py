"""Benchmark the logits Parquet layer and the fusion fit at full TAU22 scale; prints one JSON object.

Synthetic logits, 230,350 clips x 12 teachers x 10 classes, through the project's own functions
(`write_teacher_logits`, `load_teachers`, `fit_fusion`). Goals: write + read <= 3 s, fit <= 10 s, peak RSS
<= 2 GB (STACK.md's raw-pyarrow reference: write 1.25 s, read 0.95 s, fit 1.7 s, RSS 1.3 GB).

    OMP_NUM_THREADS=1 python ops/bench_fusion.py [--clips 230350] [--teachers 12] [--shuffled 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time

import numpy as np
import torch

from asc_dist.fusion import fit_fusion, fuse
from asc_dist.logits import load_teachers, write_teacher_logits

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=230_350)
    p.add_argument("--teachers", type=int, default=12)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--shuffled", type=int, default=1, help="teachers written in their own row order")
    a = p.parse_args()
    names, split, devices, labels, logits = synthetic(a.clips, a.teachers, a.classes)
    classes = [f"scene{k}" for k in range(a.classes)]
    rng = np.random.default_rng(1)
    run_dir = tempfile.mkdtemp(prefix="bench_fusion_")
    try:
        t0 = time.perf_counter()
        for k in range(a.teachers):
            o = rng.permutation(a.clips) if k < a.shuffled else slice(None)
            write_teacher_logits(run_dir, f"teacher{k:02d}", names[o], split[o], devices[o], labels[o],
                                 logits[k][o], classes, {"index": k}, "bench")
        write_s = time.perf_counter() - t0
        del logits
        t0 = time.perf_counter()
        data = load_teachers(run_dir)
        read_s = time.perf_counter() - t0
        rss_after_read = peak_rss_mb()

        t0 = time.perf_counter()
        w, b, fit_all = fit_fusion(data.logits, data.labels)
        fit_all_s = time.perf_counter() - t0
        val = data.mask("val")
        t0 = time.perf_counter()
        _, _, fit_val = fit_fusion(data.logits[:, val], data.labels[val])
        fit_val_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        fuse(data.logits, w, b)
        fuse_s = time.perf_counter() - t0
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    print(json.dumps({
        "clips": a.clips, "teachers": a.teachers, "classes": a.classes, "shuffled_teachers": a.shuffled,
        "torch_threads": torch.get_num_threads(),
        "write_s": round(write_s, 3), "read_align_s": round(read_s, 3), "write_plus_read_s": round(write_s + read_s, 3),
        "fit_all_rows_s": round(fit_all_s, 3), "fit_all_rows_iterations": fit_all.iterations,
        "fit_all_rows_converged": fit_all.converged,
        "fit_val_rows_s": round(fit_val_s, 3), "fit_val_rows": fit_val.rows, "fit_val_iterations": fit_val.iterations,
        "fuse_all_rows_s": round(fuse_s, 3),
        "peak_rss_after_read_mb": round(rss_after_read), "peak_rss_mb": round(peak_rss_mb()),
        "goals": {"write_plus_read_s": 3.0, "fit_s": 10.0, "peak_rss_mb": 2048},
    }, indent=2))


if __name__ == "__main__":
    main()
