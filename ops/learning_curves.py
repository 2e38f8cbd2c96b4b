"""Learning curves of the study's students, arm beside arm: is a KD student under-trained or over-regularised?

Reads the per-epoch metrics MLflow holds for every student of `python -m asc_dist.study` (experiment "study" in
RUN's tracking store), groups the students by what they learnt from (targets, lambda, T, reduction) for one
training length and preset, and draws the mean over seeds (band: min to max) of the label loss on the training
batches (the CE part for KD students), the validation loss, and training and validation accuracy. Prints the
per-epoch means as one JSON object and writes the figure.

    python ops/learning_curves.py --run RUN --epochs 24 [--preset sm2] [--out curves.png]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

CURVES = (("train_ce", "training label loss (CE)"), ("val_loss", "validation loss"), ("train_acc", "training accuracy"),
          ("val_acc", "validation accuracy"))  # fmt: skip


def arm_of(params: dict) -> str:
    if params.get("targets") == "none" or params.get("kd_lambda") == "1.0":
        return "no KD"
    return f"{params['targets']} λ {params['kd_lambda']} T {params['temperature']} {params.get('kd_reduction', 'cpjku')}"


def collect(run: Path, epochs: int, preset: str, uri: str | None = None) -> dict[str, list[dict[str, list[float]]]]:
    """{arm: [one student's {metric: per-epoch values}]} for the study students of this length and preset."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri or f"sqlite:///{run / 'mlflow.db'}")
    exp = client.get_experiment_by_name("study")
    if exp is None:
        raise SystemExit(f"error: {run} has no MLflow experiment 'study'; run `python -m asc_dist.study --run {run}` first")
    arms: dict[str, list[dict[str, list[float]]]] = defaultdict(list)
    for r in client.search_runs([exp.experiment_id], "tags.`asc_dist.step` = 'student'", max_results=5000):
        p = r.data.params
        if p.get("epochs") != str(epochs) or p.get("preset") != preset or p.get("qat_epochs", "0") != "0":
            continue
        curves = {}
        for key, _ in CURVES:
            name = "train_loss" if key == "train_ce" and "train_ce" not in r.data.metrics else key
            history = sorted(client.get_metric_history(r.info.run_id, name), key=lambda m: m.step)
            curves[key] = [m.value for m in history if 1 <= m.step <= epochs]
        if all(len(v) == epochs for v in curves.values()):
            arms[arm_of(p)].append(curves)
    return dict(arms)


def figure(arms: dict, epochs: int, title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.2 * len(CURVES), 3.4))
    x = np.arange(1, epochs + 1)
    for arm, students in sorted(arms.items()):
        for ax, (key, label) in zip(axes, CURVES):
            values = np.array([s[key] for s in students])
            line = ax.plot(x, values.mean(0), label=f"{arm} ({len(students)} seeds)")[0]
            ax.fill_between(x, values.min(0), values.max(0), color=line.get_color(), alpha=0.2)
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path)
    p.add_argument("--epochs", type=int, required=True, help="training length of the students to compare")
    p.add_argument("--preset", default="sm2")
    p.add_argument("--mlflow-uri", default=None, help="default: sqlite RUN/mlflow.db")
    p.add_argument("--out", type=Path, default=None, help="figure (default RUN/learning_curves_E<epochs>.png)")
    args = p.parse_args()
    arms = collect(args.run, args.epochs, args.preset, args.mlflow_uri)
    if not arms:
        raise SystemExit(f"error: no finished {args.preset} study students of {args.epochs} epochs in {args.run}")
    out = args.out or args.run / f"learning_curves_E{args.epochs}.png"
    figure(arms, args.epochs, f"{args.preset}, {args.epochs} epochs: mean over seeds, band min-max", out)
    means = {arm: {key: np.mean([s[key] for s in students], axis=0).round(4).tolist() for key, _ in CURVES} | {"seeds": len(students)}
             for arm, students in arms.items()}  # fmt: skip
    print(json.dumps({"run": str(args.run), "epochs": args.epochs, "preset": args.preset, "figure": str(out), "arms": means}, indent=1))


if __name__ == "__main__":
    main()
