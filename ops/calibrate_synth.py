"""Calibrate a dataset for distillation: does capacity and context buy accuracy? Prints JSON.

Trains, per seed, on one packed store (the synthetic default unless --data is given):
  cnn-tiny-1s      a tiny CNN teacher on 1-s clips
  cpresnet-1s      a default-size CP-ResNet teacher on 1-s clips
  cpresnet-10s     the same with 10 s of context (asc_dist.training.context: its whole recording)
  sm2-nokd         the DS-FlexiNet sm2 student, label loss only, the paper's augmentation recipe
and reports test accuracy (overall, unseen devices) and final clean train accuracy, mean and std over seeds.
The issue's target: the best context teacher >= 15 points above the no-KD sm2 student on test. The same
training code as the real steps (teach.trial.teacher_trainer, distill.recipe.student_trainer), without Ray or MLflow;
two runs at a time, one thread each.

    python ops/calibrate_synth.py --seeds 0,1,2 --out runs/calibration.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNS = {
    "cnn-tiny-1s": dict(family="cnn", size="tiny", context_s=1),
    "cpresnet-1s": dict(family="cpresnet", size="default", context_s=1),
    "cpresnet-10s": dict(family="cpresnet", size="default", context_s=10),
    "sm2-nokd": dict(student="sm2"),
}


def _one(job: tuple[str, int, str, str, int, int]) -> dict:
    name, seed, store_path, dirs, teacher_epochs, student_epochs = job
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    from asc_dist.data.store import WaveformStore
    from asc_dist.training.context import context_parts
    from asc_dist.training.evaluation import score_splits, split_reports

    torch.set_num_threads(1)
    store = WaveformStore(store_path)
    spec = RUNS[name]
    start = time.perf_counter()
    if "student" in spec:
        from asc_dist.data.prepare import DataConfig
        from asc_dist.distill.config import StudentConfig, build_student_model
        from asc_dist.distill.recipe import student_trainer

        cfg = StudentConfig(run_dir=tempfile.mkdtemp(), data=DataConfig(store=store_path), preset=spec["student"],
                            targets="none", epochs=student_epochs, seed=seed, device="cpu")  # fmt: skip
        torch.manual_seed(seed)
        trainer = student_trainer(cfg, store, build_student_model(cfg, len(store.classes)), cfg.epochs, cfg.lr)
        k = 1
    else:
        from asc_dist.teach.roster import TeacherConfig
        from asc_dist.teach.trial import TeacherRunContext, teacher_trainer

        # a context teacher sees one window per recording per epoch: smaller batches for as many steps, and
        # a circular roll over its whole window (a scene's statistics do not depend on where it starts)
        wide = spec["context_s"] > 1
        t = TeacherConfig(name=name, family=spec["family"], size=spec["size"], seed=seed, epochs=teacher_epochs,
                          lr=0.001, batch_size=8 if wide else 64, roll=32000 * spec["context_s"] if wide else 4000,
                          fms_p=0.4, context_s=spec["context_s"])  # fmt: skip
        ctx = TeacherRunContext(run_dir=tempfile.mkdtemp(), store=store_path, val_fraction=0.15, val_seed=0,
                                fingerprint=store.fingerprint, mlflow_uri="", experiment="", dirs=dirs)  # fmt: skip
        trainer = teacher_trainer(t, ctx, store)
        k = context_parts(t.context_s, int(store.manifest["samples"]), store.sample_rate)
    trainer.fit()
    logits, rows = score_splits(trainer.model, trainer.front_end, store, ("train", "val", "test"), 0.15, 0, trainer.device, k)
    reports = split_reports(logits, rows.label, rows.device, rows.split, store.classes)
    train = rows.split == "train"
    return {
        "run": name, "seed": seed, "test": reports["test"].accuracy, "unseen": reports["test"].unseen_accuracy,
        "val": reports["val"].accuracy, "train": float((logits[train].argmax(1) == rows.label[train]).mean()),
        "wall_s": round(time.perf_counter() - start, 1),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="TAU-layout dataset (default: the synthetic default, generated)")
    p.add_argument("--synth", default="{}", help="JSON of SynthConfig fields for the generated dataset")
    p.add_argument("--seeds", default="0")
    p.add_argument("--runs", default=",".join(RUNS))
    p.add_argument("--teacher-epochs", type=int, default=30)
    p.add_argument("--student-epochs", type=int, default=30)
    p.add_argument("--dirs", default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    from asc_dist.data.store import pack
    from asc_dist.data.synth import SynthConfig, generate

    work = Path(tempfile.mkdtemp(prefix="calibrate-"))
    data = a.data
    synth = json.loads(a.synth)
    if data is None:
        data = str(work / "data")
        generate(data, SynthConfig(**synth))
    store, _ = pack(data, work / "store")
    jobs = [(r, int(s), str(store), a.dirs, a.teacher_epochs, a.student_epochs) for r in a.runs.split(",") for s in a.seeds.split(",")]
    rows = []
    with ProcessPoolExecutor(a.workers) as pool:
        for row in pool.map(_one, jobs):
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    summary = {}
    for r in a.runs.split(","):
        mine = [x for x in rows if x["run"] == r]
        summary[r] = {k: {"mean": round(100 * float(np.mean([x[k] for x in mine])), 1), "std": round(100 * float(np.std([x[k] for x in mine])), 1)}
                      for k in ("test", "unseen", "val", "train")}  # fmt: skip
    out = {"synth": synth, "data": a.data, "seeds": a.seeds, "teacher_epochs": a.teacher_epochs,
           "student_epochs": a.student_epochs, "summary": summary, "rows": rows}  # fmt: skip
    text = json.dumps(out, indent=1)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
