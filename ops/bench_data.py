"""Benchmark the data path: packing wav files into the store, then one training epoch's reads from the store
against decoding the wav files every epoch; prints one JSON object on stdout (progress on stderr).

What a naive dataset does per clip and per epoch (soundfile read, channel mean, torchaudio resample to 32 kHz,
fit to length) is timed beside what the trainer does (`BatchLoader` over the memory-mapped store: a row copy per
clip, prefetched on a thread). Both run in this process on the same clips, in the same shuffled order, with the
same batch size, so `ratio_store_vs_decode` is measured under one machine load. The wav files and the store were
both just written, so both are read from the page cache: the ratio is the decode + resample work the store saves,
not disk speed.

    OMP_NUM_THREADS=1 python ops/bench_data.py [--clips-per-device 200] [--epochs 3] [--data ROOT] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from asc_dist.data.decode import fit_length
from asc_dist.data.store import PackConfig, SplitData, WaveformStore, pack
from asc_dist.data.synth import SynthConfig, generate
from asc_dist.training.batches import BatchLoader

log = logging.getLogger("bench_data")


def naive_epoch(root: Path, data: SplitData, order: np.ndarray, batch_size: int, sample_rate: int, n_samples: int,
                device: torch.device) -> int:
    """One epoch the way a map-style dataset without a cache reads it: every clip decoded and resampled alone."""
    filenames = data.table.filename
    seen = 0
    for lo in range(0, len(order), batch_size):
        waves = []
        for i in order[lo : lo + batch_size]:
            audio, sr = sf.read(str(root / filenames[i]), dtype="float32", always_2d=True)
            wave = torch.from_numpy(audio.mean(axis=1))
            if sr != sample_rate:
                wave = torchaudio.functional.resample(wave, sr, sample_rate)
            waves.append(torch.from_numpy(fit_length(wave.numpy(), n_samples)))
        batch = torch.stack(waves).to(device)
        seen += batch.shape[0]
    return seen


def store_epoch(loader: BatchLoader, device: torch.device) -> int:
    seen = 0
    for batch in loader:
        seen += torch.from_numpy(batch.waves).to(device, non_blocking=True).shape[0]
    return seen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="TAU-layout dataset to use (default: generate the synthetic one in a temp dir)")
    p.add_argument("--clips-per-device", type=int, default=200, help="synthetic train clips per seen device (6 devices)")
    p.add_argument("--epochs", type=int, default=3, help="epochs timed for each reader")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch threads (resampling); 1 = one trial's share")
    p.add_argument("--device", default="cpu", help="where batches are copied to (cpu or cuda)")
    p.add_argument("--quick", action="store_true", help="smallest settings (smoke test): 4 clips per device, 1 epoch")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    if a.quick:
        a.clips_per_device, a.epochs = 4, 1
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        generate_s = None
        if a.data:
            root = Path(a.data)
        else:
            root = tmp / "data"
            start = time.perf_counter()
            generate(root, SynthConfig(clips_per_device=a.clips_per_device, seed=0))
            generate_s = time.perf_counter() - start
        cfg = PackConfig()
        start = time.perf_counter()
        store_dir, _ = pack(root, tmp / "store", cfg, force=True)
        pack_s = time.perf_counter() - start
        store = WaveformStore(store_dir)
        total_clips = sum(store.manifest["splits"].values())
        pack_write_s = float(store.manifest["pack_seconds"])  # decode + resample + write, without check and hashing
        train = store.split("train")
        n_samples = int(store.manifest["samples"])
        log.info("packed %d clips in %.1f s; timing %d epochs over %d train clips", total_clips, pack_s, a.epochs, len(train))

        loader = BatchLoader(train, a.batch_size, shuffle=True, seed=0)
        store_s, decode_s, store_clips, decode_clips = [], [], 0, 0
        for epoch in range(a.epochs):  # interleaved, so a load spike hits both readers alike
            order = np.random.default_rng([0, epoch]).permutation(len(train))
            start = time.perf_counter()
            store_clips += store_epoch(loader, device)
            store_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            decode_clips += naive_epoch(root, train, order, a.batch_size, cfg.sample_rate, n_samples, device)
            decode_s.append(time.perf_counter() - start)
            log.info("epoch %d: store %.2f s, decode %.2f s", epoch + 1, store_s[-1], decode_s[-1])
        store_rate = store_clips / sum(store_s)
        decode_rate = decode_clips / sum(decode_s)
        source_sr = sf.info(str(root / train.table.filename[0])).samplerate
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({
        "clips": total_clips, "train_clips": len(train), "epochs": a.epochs, "batch_size": a.batch_size,
        "source_sample_rate": source_sr, "sample_rate": cfg.sample_rate, "samples_per_clip": n_samples,
        "generate_s": round(generate_s, 2) if generate_s is not None else None,
        "pack_s": round(pack_s, 3), "pack_clips_per_s": round(total_clips / pack_s, 1),
        "pack_decode_write_s": pack_write_s, "pack_check_fingerprint_s": round(pack_s - pack_write_s, 3),
        "store_epoch_clips_per_s": round(store_rate, 1), "decode_epoch_clips_per_s": round(decode_rate, 1),
        "ratio_store_vs_decode": round(store_rate / decode_rate, 2),
        "store_epoch_s": [round(s, 3) for s in store_s], "decode_epoch_s": [round(s, 3) for s in decode_s],
        "store_loader_wait_s": round(loader.wait_s, 3),
        "torch_threads": torch.get_num_threads(), "device": str(device), "cpus": os.cpu_count(),
        "load_average_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    }, indent=2))


if __name__ == "__main__":
    main()
