"""The data path at TAU22 size: pack, random-batch reads, scoring every clip; prints one JSON object.

TAU22 is 230,350 one-second clips; at 32 kHz a float32 store is 29.5 GB. This builds datasets of cheap noise in
the TAU layout (this measures the data path, not accuracy) at several sizes and, per size and store dtype
(float32; float16 and int16 = 16-bit PCM: half the bytes, decoded to float32 on read; the dtype is part of the
store's fingerprint), runs each step in a fresh process and reports:
- pack: clips/s, store bytes on disk, peak RSS;
- read: random batches through the trainer's `SplitData.waves` against the physical limit measured in the same
  process: a plain `numpy.memmap` fancy-index gather of the same batches with the same conversion to float32
  (float16: a cast; int16: a cast and a scale by 1/32768; `memmap_gather_does` names it), and a sequential read
  of the whole array file (the store was just written, so it is read from the page cache unless the machine
  evicted it: `page_cache` says how much of it was resident; the sequential figure is then memory bandwidth);
- score (first dtype only): every clip through one small teacher (CP-ResNet tiny, eval mode, batches of 256);
- train: is a store slower to train from? A fixed number of training steps of a tiny CP-ResNet teacher
  (`asc_dist.training.trainer.Trainer`, one torch thread, its prefetching BatchLoader, the same random clips and initial
  weights) from each dtype's store of the same clips, side by side in one process, interleaved over repeats:
  clips/s and the share of the step spent waiting for data.
Then a linear fit over the sizes extrapolates time and bytes to 230,350 clips, and peak RSS per step is shown
against size (a bounded step stays flat).

    OMP_NUM_THREADS=1 python ops/bench_scale.py [--sizes 4000,8000,16000] [--dtypes float32,float16,int16] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench_scale")
TAU22_CLIPS = 230_350
SR = 32_000
SCENES = ("airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall", "street_pedestrian", "street_traffic", "tram")
DEVICES = ("a", "b", "c", "s1", "s2", "s3")


def peak_rss_mb() -> float:
    """Peak resident set (kB on Linux). It counts the pages of the memory-mapped store a step touched (file-backed
    page cache the kernel can drop), so it grows with what a step reads; `anon_rss_mb` is the step's own memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def anon_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def make_dataset(root: Path, n: int, seed: int = 0) -> None:
    """`n` one-second 16-bit clips of noise in the TAU layout: 10 scenes, 6 devices, locations split 80/20."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    (root / "audio").mkdir(parents=True)
    (root / "evaluation_setup").mkdir()
    meta, train, test = [], [], []
    for i in range(n):
        scene, device, loc = SCENES[i % 10], DEVICES[(i // 10) % 6], (i // 60) % 50
        name = f"audio/{scene}-city{loc % 10}-{loc}-{i // 60}-{i % 60}-{device}.wav"
        sf.write(root / name, (rng.standard_normal(SR) * 0.05).astype(np.float32), SR, subtype="PCM_16")
        meta.append(f"{name}\t{scene}\tcity{loc % 10}-{loc}\t{device}")
        (train if loc < 40 else test).append((name, scene))
    (root / "meta.csv").write_text("filename\tscene_label\tidentifier\tsource_label\n" + "\n".join(meta) + "\n")
    setup = root / "evaluation_setup"
    (setup / "fold1_train.csv").write_text("filename\tscene_label\n" + "\n".join(f"{a}\t{b}" for a, b in train) + "\n")
    (setup / "fold1_evaluate.csv").write_text("filename\tscene_label\n" + "\n".join(f"{a}\t{b}" for a, b in test) + "\n")
    (setup / "fold1_test.csv").write_text("filename\n" + "\n".join(a for a, _ in test) + "\n")


def step_pack(root: Path, store: Path, dtype: str) -> dict:
    from asc_dist.data.store import PackConfig, pack

    start = time.perf_counter()
    pack(root, store, PackConfig(sample_rate=SR, dtype=dtype))
    wall = time.perf_counter() - start
    n = sum(json.loads((store / "manifest.json").read_text())["splits"].values())
    size = sum(p.stat().st_size for p in store.iterdir())
    return {"clips_per_s": n / wall, "wall_s": wall, "store_bytes": size, "peak_rss_mb": peak_rss_mb(), "anon_rss_mb": anon_rss_mb()}


def _resident_share(path: Path) -> float | None:
    """Share of `path`'s pages in the page cache (mincore on a read-only map), or None where unavailable."""
    try:
        import ctypes
        import mmap

        arr = np.memmap(path, dtype=np.uint8, mode="r")
        pages = (arr.size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = (ctypes.c_ubyte * pages)()
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mincore(ctypes.c_void_p(arr.ctypes.data), ctypes.c_size_t(arr.size), vec) != 0:
            return None
        return float(np.frombuffer(vec, dtype=np.uint8).__and__(1).mean())
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def step_read(store_path: Path, batches: int, batch_size: int) -> dict:
    from asc_dist.data.store import WaveformStore

    store = WaveformStore(store_path)
    train = store.split("train")
    rng = np.random.default_rng(0)
    picks = [np.sort(rng.choice(len(train), batch_size, replace=False)) for _ in range(batches)]
    raw = np.load(store_path / "train.npy", mmap_mode="r")
    rows = [train.rows[p] for p in picks]
    scale = np.float32(1 / 32768) if raw.dtype == np.int16 else None  # 16-bit PCM

    def gather(i: int) -> np.ndarray:
        out = np.asarray(raw[rows[i]], dtype=np.float32)
        if scale is not None:
            out *= scale
        return out

    does = "fancy-index gather" + ("" if raw.dtype == np.float32 else f", astype(float32) ({raw.dtype} decode)")
    does += ", *= 1/32768" if scale is not None else ""
    results = {"memmap_gather_does": does, "store_waves_equal_gather": bool(np.array_equal(train.waves(picks[0]), gather(0)))}
    for name, fn in (("store_waves", lambda i: train.waves(picks[i])), ("memmap_gather", gather)):
        fn(0)
        start = time.perf_counter()
        for i in range(batches):
            fn(i)
        results[f"{name}_clips_per_s"] = batches * batch_size / (time.perf_counter() - start)
    path = store_path / "train.npy"
    results["page_cache_resident_share"] = _resident_share(path)
    start, total = time.perf_counter(), 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(64 << 20):
            total += len(chunk)
    results["sequential_read_mb_per_s"] = total / 2**20 / (time.perf_counter() - start)
    results["ratio_store_vs_memmap_gather"] = results["store_waves_clips_per_s"] / results["memmap_gather_clips_per_s"]
    results["peak_rss_mb"], results["anon_rss_mb"] = peak_rss_mb(), anon_rss_mb()
    return results


def step_score(store_path: Path) -> dict:
    import torch

    from asc_dist.data.store import WaveformStore
    from asc_dist.nets.features import FRONT_ENDS, LogMel
    from asc_dist.training.evaluation import score_splits
    from teachers.families import build_teacher

    torch.set_num_threads(1)
    store = WaveformStore(store_path)
    model = build_teacher("cpresnet", "tiny", n_classes=len(store.classes)).eval()
    front = LogMel(FRONT_ENDS[model.front_end]).eval()
    start = time.perf_counter()
    logits, rows = score_splits(model, front, store, ("train", "val", "test"), 0.15, 0, torch.device("cpu"))
    wall = time.perf_counter() - start
    return {"clips_per_s": len(rows.filename) / wall, "wall_s": wall, "clips": len(rows.filename), "peak_rss_mb": peak_rss_mb(), "anon_rss_mb": anon_rss_mb()}


def step_train(store_paths: list[Path], steps: int, batch_size: int, repeats: int) -> dict:
    """`steps` training steps of CP-ResNet tiny from each store (same clips, same random subset of train, same
    initial weights), interleaved: repeat r trains from every store in turn, odd repeats in reverse order, so a
    load spike or a warming cache hits every dtype alike. Each measurement follows a one-batch warm-up."""
    from dataclasses import replace

    import torch

    from asc_dist.data.store import WaveformStore
    from asc_dist.nets.features import FRONT_ENDS, LogMel
    from asc_dist.training.trainer import OptimConfig, Trainer
    from teachers.families import build_teacher

    torch.set_num_threads(1)
    data = {}
    for path in store_paths:
        store = WaveformStore(path)
        train = store.split("train")
        pick = np.sort(np.random.default_rng(0).choice(len(train), min(steps * batch_size, len(train)), replace=False))
        data[store.manifest["dtype"]] = (replace(train, table=train.table.take(pick), rows=train.rows[pick]), len(store.classes))
    optim = OptimConfig(epochs=1, batch_size=batch_size)
    runs: dict[str, list[dict]] = {d: [] for d in data}
    for r in range(repeats):
        for dtype in list(data)[:: -1 if r % 2 else 1]:
            split, n_classes = data[dtype]
            torch.manual_seed(0)
            model = build_teacher("cpresnet", "tiny", n_classes=n_classes)
            front = LogMel(FRONT_ENDS[model.front_end])
            warm = replace(split, table=split.table.take(slice(0, batch_size)), rows=split.rows[:batch_size])
            Trainer(model, front, warm, None, optim, device="cpu").train_epoch()
            m = Trainer(model, front, split, None, optim, device="cpu").train_epoch()
            runs[dtype].append({"clips": int(m["clips_per_s"] * m["epoch_s"] + 0.5), **{k: m[k] for k in ("clips_per_s", "data_wait_share", "epoch_s")}})
    by_dtype = {}
    for dtype, ms in runs.items():
        by_dtype[dtype] = {"clips_per_s": float(np.median([m["clips_per_s"] for m in ms])),
                           "clips_per_s_each": [round(m["clips_per_s"], 1) for m in ms],
                           "data_wait_share": float(np.mean([m["data_wait_share"] for m in ms])),
                           "steps": ms[0]["clips"] // batch_size, "clips": ms[0]["clips"]}
    return {"by_dtype": by_dtype, "batch_size": batch_size, "repeats": repeats, "torch_threads": torch.get_num_threads(),
            "peak_rss_mb": peak_rss_mb(), "anon_rss_mb": anon_rss_mb()}


def run_step(*args: str) -> dict:
    """One step in a fresh process, so its peak RSS is its own."""
    done = subprocess.run([sys.executable, __file__, "--step", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"step {args[0]} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def extrapolate_hours(sizes: list[int], seconds: list[float]) -> float | None:
    """Linear fit of wall time against clips, at 230,350 clips; None with fewer than two sizes."""
    if len(set(sizes)) < 2:
        return None
    slope, intercept = np.polyfit(np.asarray(sizes, float), np.asarray(seconds, float), 1)
    return round(float(slope * TAU22_CLIPS + intercept) / 3600, 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="4000,8000,16000", help="dataset sizes in clips (at least three for a trend)")
    p.add_argument("--dtypes", default="float32,float16,int16")
    p.add_argument("--batches", type=int, default=100, help="random batches timed in the read step")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--no-score", action="store_true", help="skip scoring every clip with a small teacher")
    p.add_argument("--train-steps", type=int, default=30, help="training steps timed per store in the train step")
    p.add_argument("--train-batch-size", type=int, default=32)
    p.add_argument("--train-repeats", type=int, default=2, help="interleaved repeats of the train step (median reported)")
    p.add_argument("--no-train", action="store_true", help="skip the train-from-each-store comparison")
    p.add_argument("--quick", action="store_true", help="tiny sizes and 3 training steps, once (smoke test)")
    p.add_argument("--step", nargs="+", help=argparse.SUPPRESS)  # internal: run one step in this process
    a = p.parse_args()
    if a.step:
        name, *rest = a.step
        out = {"pack": lambda: step_pack(Path(rest[0]), Path(rest[1]), rest[2]),
               "read": lambda: step_read(Path(rest[0]), int(rest[1]), int(rest[2])),
               "score": lambda: step_score(Path(rest[0])),
               "train": lambda: step_train([Path(r) for r in rest[3:]], int(rest[0]), int(rest[1]), int(rest[2]))}[name]()
        print(json.dumps(out))
        return
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    sizes = [int(s) for s in ("300,600,900" if a.quick else a.sizes).split(",")]
    if a.quick:
        a.train_steps, a.train_repeats = 3, 1
    dtypes = a.dtypes.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    rows = []
    try:
        for n in sizes:
            root = tmp / f"data{n}"
            start = time.perf_counter()
            make_dataset(root, n)
            log.info("%d clips of noise written in %.1f s", n, time.perf_counter() - start)
            stores, mine = [tmp / f"store{n}-{dtype}" for dtype in dtypes], []
            for dtype, store in zip(dtypes, stores):
                row = {"clips": n, "dtype": dtype, "pack": run_step("pack", str(root), str(store), dtype)}
                row["read"] = run_step("read", str(store), str(a.batches), str(a.batch_size))
                if not a.no_score and dtype == dtypes[0]:
                    row["score"] = run_step("score", str(store))
                log.info("%d clips, %s: %s", n, dtype, json.dumps(row))
                mine.append(row)
            if not a.no_train:  # every dtype's store of these clips, in one process
                trained = run_step("train", str(a.train_steps), str(a.train_batch_size), str(a.train_repeats), *map(str, stores))
                for row in mine:
                    row["train"] = {**trained["by_dtype"][row["dtype"]], "side_by_side_with": dtypes,
                                    **{k: trained[k] for k in ("batch_size", "repeats", "torch_threads", "peak_rss_mb", "anon_rss_mb")}}
                log.info("%d clips, train clips/s: %s", n, {r["dtype"]: round(r["train"]["clips_per_s"], 1) for r in mine})
            rows += mine
            for store in stores:
                shutil.rmtree(store, ignore_errors=True)
            shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    at_tau22 = {}
    for dtype in dtypes:
        mine = [r for r in rows if r["dtype"] == dtype]
        ns = [r["clips"] for r in mine]
        at_tau22[dtype] = {
            "store_gb": round(TAU22_CLIPS * SR * np.dtype(dtype).itemsize / 1e9, 2),
            "pack_hours": extrapolate_hours(ns, [r["pack"]["wall_s"] for r in mine]),
            "pack_peak_rss_mb_by_size": [round(r["pack"]["peak_rss_mb"]) for r in mine],
            "read_peak_rss_mb_by_size": [round(r["read"]["peak_rss_mb"]) for r in mine],
            "read_anon_rss_mb_by_size": [round(r["read"]["anon_rss_mb"] or 0) for r in mine],
            "store_read_vs_memmap_gather": [round(r["read"]["ratio_store_vs_memmap_gather"], 3) for r in mine],
            "read_clips_per_s_by_size": [round(r["read"]["store_waves_clips_per_s"]) for r in mine],
        }
        if all("train" in r for r in mine):
            base = {r["clips"]: r["train"]["clips_per_s"] for r in rows if r["dtype"] == dtypes[0]}
            at_tau22[dtype]["train_clips_per_s_by_size"] = [round(r["train"]["clips_per_s"], 1) for r in mine]
            at_tau22[dtype][f"train_vs_{dtypes[0]}_by_size"] = [round(r["train"]["clips_per_s"] / base[r["clips"]], 3) for r in mine]
        if any("score" in r for r in mine):
            scored = [r for r in mine if "score" in r]
            at_tau22[dtype]["score_all_clips_hours"] = extrapolate_hours([r["clips"] for r in scored], [r["score"]["wall_s"] for r in scored])
            at_tau22[dtype]["score_peak_rss_mb_by_size"] = [round(r["score"]["peak_rss_mb"]) for r in scored]
            at_tau22[dtype]["score_anon_rss_mb_by_size"] = [round(r["score"]["anon_rss_mb"] or 0) for r in scored]
    print(json.dumps({"sizes": sizes, "tau22_clips": TAU22_CLIPS, "sample_rate": SR, "cpus": os.cpu_count(),
                      "rows": rows, "extrapolated_to_tau22": at_tau22}, indent=2))


if __name__ == "__main__":
    main()
