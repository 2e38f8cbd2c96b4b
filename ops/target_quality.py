"""How soft are the targets a student learns from? Prints one JSON object.

For every teacher of a run, and for the fused and averaged targets, per split (the students' training clips,
val, test): accuracy, mean top probability and mean entropy of the softmax at T = 1 and at the KD temperature.
A teacher that memorised its training clips hands out near one-hot targets on exactly the clips a student
learns from (top probability near 1 on train, much lower on val); out-of-fold targets (`teachers --folds K`)
should look on train as they look on val.

    python ops/target_quality.py --run RUN [--temperature 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from asc_dist.run.layout import RunLayout
from asc_dist.run.logits import load_targets, load_teachers


def softness(logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    entropy = -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1)
    return {"acc": float((p.argmax(1) == labels).mean()), "top_p": float(p.max(1).mean()), "entropy": float(entropy.mean())}


def quality(run: Path, temperature: float) -> dict:
    teachers = load_teachers(run)
    systems = {name: teachers.logits[i] for i, name in enumerate(teachers.names)}
    splits, labels, filenames = teachers.splits, teachers.labels, teachers.filenames
    targets_file = RunLayout.of(run).targets
    if targets_file.is_file():
        for column, name in (("logits", "targets (fused column)"), ("average", "average")):
            t = load_targets(targets_file, column=column)
            order = {f: i for i, f in enumerate(t.filenames)}
            systems[name] = t.logits[np.array([order[f] for f in filenames])]
    out = {}
    for name, logits in systems.items():
        out[name] = {split: {f"T={temp:g}": softness(logits[splits == split], labels[splits == split], temp) for temp in (1.0, temperature)}
                     for split in ("train", "val", "test") if (splits == split).any()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run folder with teacher logits (and fused targets)")
    p.add_argument("--temperature", type=float, default=2.0, help="the KD temperature (default 2)")
    args = p.parse_args()
    print(json.dumps(quality(Path(args.run), args.temperature), indent=1))


if __name__ == "__main__":
    main()
