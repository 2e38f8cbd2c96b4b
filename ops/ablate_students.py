"""Student ablations on one run folder (its data and fused targets): presets with int8 QAT, KD targets
(fused / average / none), Residual Normalization vs BN, ADIR vs DIR vs no DIR. Prints JSON, one row per variant.

    python ops/ablate_students.py --run runs/demo --dirs ../shared/data/micirp --epochs 10 --qat-epochs 2

Runs two students at a time as Ray tasks (one CPU each). Every variant is one `train_student` call with the
same seed, so differences on a small dataset are within a few points of noise: read them as a smoke check,
not as a result, unless you repeat with several seeds (--seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import numpy as np


def variants(args) -> list[tuple[str, dict]]:
    out = [(f"preset {p} (fused KD, RN, FMS, QAT)", {"preset": p, "qat_epochs": args.qat_epochs}) for p in args.presets.split(",")]
    out += [
        ("sm2 KD average", {"targets": "average"}),
        ("sm2 no KD (CE only)", {"targets": "none"}),
        ("sm2 BN instead of RN", {"norm": "bn"}),
    ]
    if args.dirs:
        out += [("sm2 DIR p0.6", {"dir_p": 0.6}), (f"sm2 ADIR tau{args.tau:g} p0.6", {"adir_tau": args.tau, "adir_p": 0.6})]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--data", default=None)
    p.add_argument("--dirs", default=None)
    p.add_argument("--presets", default="sm1,sm2,sm3,sm4")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--qat-epochs", type=int, default=2)
    p.add_argument("--tau", type=float, default=323.0)
    p.add_argument("--seeds", default="0")
    args = p.parse_args()

    import ray
    import torch

    from asc_dist.data.prepare import DataConfig, prepare_store
    from asc_dist.distill.config import StudentConfig
    from asc_dist.distill.student import train_student
    from asc_dist.training.augment import clip_energy

    data = DataConfig(root=args.data, dirs=args.dirs)
    store = prepare_store(data, args.run)
    data = replace(data, store=str(store.path))
    train = store.split("train")
    a_rows = np.flatnonzero(train.table.device == "a")
    energy = clip_energy(torch.from_numpy(train.waves(a_rows)), store.sample_rate)
    base = StudentConfig(run_dir=args.run, data=data, preset="sm2", epochs=args.epochs, device="cpu", threads=1, experiment="ablations")

    @ray.remote(num_cpus=1)
    def run(label: str, change: dict, seed: int) -> dict:
        cfg = replace(base, **change, seed=seed, name=f"ablation-{label.replace(' ', '_')}-s{seed}")
        r = train_student(cfg)
        keep = ("val_acc", "test_acc", "unseen_acc", "int8_test_acc", "int8_unseen_acc", "params", "macs", "int8_file_kb",
                "fp32_latency_ms", "int8_latency_ms", "clips_per_s", "data_wait_share", "wall_s")
        return {"variant": label, "seed": seed, **{k: r.get(k) for k in keep}, "test_per_device": r.get("test_per_device")}

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    start = time.perf_counter()
    jobs = [run.remote(label, change, int(s)) for label, change in variants(args) for s in args.seeds.split(",")]
    rows = ray.get(jobs)
    print(json.dumps({
        "run": args.run, "train_clips": len(train), "epochs": args.epochs, "wall_s": round(time.perf_counter() - start, 1),
        "device_a_clips": int(len(a_rows)), "device_a_energy_median": float(energy.median()),
        "device_a_share_above_tau": float((energy > args.tau).float().mean()), "rows": rows,
    }, indent=2, default=str))
    ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
