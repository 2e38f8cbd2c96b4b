"""Teacher fusion: one weight per teacher and one bias per class, fitted on the validation split.

DS-FlexiNet's eq. 4 (arXiv 2412.20722, Table IV): z_c(x) = sum_s w_s * l_{s,c}(x) + b_c, on raw logits. The uniform
logit average (w = 1/T, b = 0) is the baseline every public ASC recipe uses (fschmid56/cpjku_dcase23, fschmid56/EfficientAT), so
the fit starts there and an L2 penalty l2 * (||w - 1/T||^2 + ||b||^2) pulls towards it. The penalty on b
also picks the zero-mean bias among the shift-equivalent ones (softmax ignores a constant per clip).
The objective is convex in (w, b); LBFGS with a strong-Wolfe line search in float64 solves it in tens of
iterations. It is fitted on validation clips because teachers are overconfident on their training clips.

Reading the weights: w is not constrained, so it holds two things. Its sum is a temperature (`scale`:
fused logits are usually sharper than the average, which matters for the KD temperature) and w / sum(w)
(`mix`, summing to one) is how much each teacher counts. A teacher can get a negative mix when the fit
subtracts its errors; a large weight on a weak teacher is therefore not trust.

Honest numbers: the fusion's validation loss and accuracy are cross-fitted (k folds of the validation
split, whole recordings per fold, each fold scored by a fit on the others), so they compare with the
teachers' and the average's validation numbers, which no fit has seen; the in-sample ones are kept as
`val_in_sample`. The penalty's strength is chosen by the same cross-fit from `L2_GRID` (`--l2 cv`, the
default): a strength of 1e-4 against a loss near 1 does nothing, 1 holds the weights near the average.

Out of distribution (a new city, new devices, another class mix) a learned fusion can lose to the plain average:
per-class biases fitted on val learn val's class prior, which the test split does not share. So, by default,
(1) the fit is class-balanced: every class of the fit rows weighs the same, so the biases cannot move towards
the classes val happens to hold (`--plain` for the unweighted CE); (2) the folds of the cross-fit hold whole
recording locations, as the test split is cut, and (3) the targets a student learns from are the fitted fusion
only when that cross-fit shows a gain over the average larger than its fold-to-fold spread; otherwise they are
the average, and fusion.json says why (`--no-guard` writes the fusion regardless). Every run also fits and
reports the variants (weights only; weights + biases; weights + biases, balanced) on val and test.

    python -m asc_dist.fusion --run RUN_DIR [--teachers a,b] [--select K] [--l2 cv|X] [--no-biases] [--plain] [--no-guard]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from asc_dist.cli import add_shared, parse_list, quiet_third_party, setup_logging
from asc_dist.errors import ConfigError, LogitsError
from asc_dist.fuse.crossfit import L2_GRID, cross_fit, fusion_pays, select_teachers
from asc_dist.fuse.fit import average, class_balanced, fit_fusion, fuse
from asc_dist.infra import tracking
from asc_dist.infra.plots import bar_figure
from asc_dist.run.atomic import write_text_atomic
from asc_dist.run.layout import FIT_SPLIT, RunLayout
from asc_dist.run.lock import run_lock
from asc_dist.run.logits import TeacherLogits, load_teachers, targets_path, write_targets
from asc_dist.run.writable import require_writable
from asc_dist.training.metrics import evaluate_predictions, order_devices

log = logging.getLogger(__name__)



@dataclass
class FusionConfig:
    run_dir: Path
    teachers: list[str] | None = None  # None: every teacher under RUN_DIR/logits
    select: int | None = None  # greedy forward selection of this many teachers
    l2: float | str = "cv"  # penalty on (w - 1/T) and b: "cv" = chosen by cross-fitting on val; 0 = plain ML
    max_iter: int = 200
    biases: bool = True  # one bias per class (False: weights only)
    balanced: bool = True  # class-balanced CE: the fit cannot learn the val split's class prior
    guard: bool = True  # targets = the average unless the grouped cross-fit shows the fusion pays (crossfit.fusion_pays)
    experiment: str = "fusion"
    mlflow_uri: str | None = None

    def check(self) -> None:
        if self.l2 != "cv" and (not isinstance(self.l2, (int, float)) or self.l2 < 0) or self.max_iter < 1:
            raise ConfigError(f"--l2 must be >= 0 and --max-iter >= 1 (got {self.l2}, {self.max_iter})")
        if self.select is not None and self.select < 1:
            raise ConfigError(f"--select must be a positive number of teachers (got {self.select})")


def _num(x: float) -> float | None:
    """JSON-safe float: None for the NaN that marks a group without clips."""
    return None if x is None or not math.isfinite(x) else float(x)


def _mean_by(values: np.ndarray, keys: np.ndarray) -> dict[Any, float]:
    names, inverse = np.unique(keys, return_inverse=True)
    sums = np.bincount(inverse, values, minlength=len(names))
    return {k: float(v) for k, v in zip(names.tolist(), sums / np.bincount(inverse, minlength=len(names)))}


def _evaluate(z: np.ndarray, data: TeacherLogits, seen: list[str]) -> dict[str, dict | None]:
    """Val and test log loss and accuracy; on test also seen/unseen devices, per device and per class.

    Accuracies come from `asc_dist.training.metrics` (the one metrics implementation); the per-group log losses,
    which its Report does not split, are added here.
    """
    out: dict[str, dict | None] = {}
    for split in (FIT_SPLIT, "test"):
        m = data.mask(split)
        if not m.any():
            out[split] = None
            continue
        zs, labels, devices = z[m].astype(np.float64), data.labels[m], data.devices[m]
        r = evaluate_predictions(zs, labels, devices, data.classes, seen_devices=seen)
        out[split] = {"loss": r.log_loss, "acc": r.accuracy, "n": r.n}
        if split != "test":
            continue
        top = zs.max(axis=1)
        nll = top + np.log(np.exp(zs - top[:, None]).sum(axis=1)) - zs[np.arange(len(zs)), labels]
        unseen = np.isin(devices, r.unseen_devices)
        device_loss, class_loss = _mean_by(nll, devices), _mean_by(nll, labels)
        class_counts = r.confusion.sum(axis=1)
        out[split].update(
            macro_class_acc=_num(r.macro_class_accuracy),
            seen_acc=_num(r.seen_accuracy),
            unseen_acc=_num(r.unseen_accuracy),
            seen_loss=float(nll[~unseen].mean()) if (~unseen).any() else None,
            unseen_loss=float(nll[unseen].mean()) if unseen.any() else None,
            unseen_devices=list(r.unseen_devices),
            per_device={
                d: {"acc": _num(acc), "loss": device_loss[d], "n": r.device_counts[d],
                    "seen": d not in r.unseen_devices}
                for d, acc in r.per_device.items()
            },
            per_class={
                c: {"acc": _num(r.per_class[c]), "loss": class_loss.get(k), "n": int(class_counts[k])}
                for k, c in enumerate(data.classes)
            },
            confusion=r.confusion.tolist(),
        )
    return out


def _weights_figure(weights: dict[str, float]):
    """Bar chart of the fitted teacher weights, with the uniform 1/T of the average for comparison."""
    fig = bar_figure(list(weights), list(weights.values()), "Fusion weight per teacher (eq. 4)", "weight")
    ax = fig.axes[0]
    ax.axhline(1.0 / len(weights), color="gray", linestyle="--", label="average (1/T)")
    ax.legend(fontsize=7)
    return fig


def _seen_devices(data: TeacherLogits) -> list[str]:
    """Devices present in training (s4-s6 are absent from TAU22 train); falls back to the fit split."""
    train = data.mask("train")
    return order_devices(list(set(data.devices[train if train.any() else data.mask(FIT_SPLIT)])))


VARIANTS = {  # the fusion objectives every run fits and reports beside the chosen one: (biases, class-balanced)
    "weights only": (False, False),
    "weights + biases": (True, False),
    "weights + biases, balanced": (True, True),
}


def _evaluate_all(data: TeacherLogits, fused_names: list[str], w, b, variants: dict[str, tuple]) -> dict[str, Any]:
    """{"teachers": {name: metrics}, "average": metrics, "fusion": metrics, "variants": {name: metrics}}."""
    seen = _seen_devices(data)
    chosen = data.subset(fused_names).logits
    return {
        "teachers": {name: _evaluate(data.logits[i], data, seen) for i, name in enumerate(data.names)},
        "average": _evaluate(average(chosen), data, seen),
        "fusion": _evaluate(fuse(chosen, w, b), data, seen),
        "variants": {name: _evaluate(fuse(chosen, vw, vb), data, seen) for name, (vw, vb) in variants.items()},
    }


def _systems(results: dict[str, Any]) -> list[tuple[str, str, dict]]:
    """(display name, metric prefix, metrics) for every teacher, the average, the fusion and its variants."""
    rows = [(name, f"teacher.{name}", res) for name, res in results["teachers"].items()]
    rows += [("average", "average", results["average"]), ("fusion", "fusion", results["fusion"])]
    return rows + [(f"  {name}", f"variant.{name}", res) for name, res in results.get("variants", {}).items()]


def _table(results: dict[str, Any], weights: dict[str, float]) -> str:
    def cell(part: dict | None, key: str) -> str:
        return f"{part[key]:.4f}" if part and part.get(key) is not None else "-"

    head = (f"{'system':<24}{'weight':>8}{'val loss':>10}{'val acc':>9}"
            f"{'test loss':>11}{'test acc':>10}{'unseen acc':>12}")
    lines = [head, "-" * len(head)]
    for name, prefix, res in _systems(results):
        weight = f"{weights[name]:.3f}" if prefix.startswith("teacher.") and name in weights else "-"
        val, test = res.get("val"), res.get("test")
        lines.append(
            f"{name:<24}{weight:>8}{cell(val, 'loss'):>10}{cell(val, 'acc'):>9}"
            f"{cell(test, 'loss'):>11}{cell(test, 'acc'):>10}{cell(test, 'unseen_acc'):>12}"
        )
    return "\n".join(lines)


def _mlflow_metrics(report: dict[str, Any]) -> dict[str, float]:
    def safe(name: str) -> str:
        return "".join(ch if ch.isalnum() or ch in "_-. /" else "_" for ch in name)

    out: dict[str, float] = {f"weight.{safe(k)}": v for k, v in report["weights"].items()}
    out.update({f"bias.{safe(k)}": v for k, v in report["biases"].items()})
    out.update({f"fit.{k}": float(v) for k, v in report["convergence"].items()})
    out.update({"fit.l2": float(report["l2"]), "fit.scale": report["scale"]})
    for name, prefix, res in _systems(report["results"]):
        prefix = safe(prefix)
        for split in ("val", "test"):
            for key in ("loss", "acc", "seen_acc", "unseen_acc"):
                if res.get(split) and res[split].get(key) is not None:
                    out[f"{prefix}.{split}_{key}"] = res[split][key]
        if prefix in ("average", "fusion") and res.get("test"):
            for dev, m in res["test"]["per_device"].items():
                if m["acc"] is not None:
                    out[f"{prefix}.test_acc.{safe(dev)}"] = m["acc"]
                    out[f"{prefix}.test_loss.{safe(dev)}"] = m["loss"]
    return out


def run_fusion(cfg: FusionConfig) -> dict[str, Any]:
    """Load, fit on val, write fused/targets.parquet and fused/fusion.json, log to MLflow; returns the report.

    Every check runs before the first write, so bad input leaves nothing behind.
    """
    cfg.check()
    run_dir = Path(cfg.run_dir)
    data = load_teachers(run_dir, cfg.teachers)
    require_writable(run_dir, "the run folder", "copy the run to a folder you can write and pass that as --run")
    manifest = RunLayout.of(run_dir).teachers_manifest
    run_fp = json.loads(manifest.read_text()).get("fingerprint") if manifest.is_file() else None
    if run_fp and run_fp != data.fingerprint:  # every logits file swapped for another dataset's agrees with itself
        raise LogitsError(f"the teacher logits under {RunLayout.of(run_dir).logits_dir} come from another dataset (fingerprint "
                          f"{data.fingerprint}) than this run's teachers ({run_fp}, in {manifest}); re-run "
                          f"`python -m asc_dist.teachers --run {run_dir}` on the run's data")  # fmt: skip
    fit_rows = data.mask(FIT_SPLIT)
    if not fit_rows.any():
        raise LogitsError(
            f"no '{FIT_SPLIT}' rows in the teacher logits under {run_dir}; the fusion is fitted on the "
            "validation split: re-score the teachers on a clip table that has one"
        )
    uri = tracking.resolve_uri(run_dir, cfg.mlflow_uri)
    tracking.check_reachable(uri)
    val_logits, val_labels = data.logits[:, fit_rows], data.labels[fit_rows]

    selection = None
    names = list(data.names)
    if cfg.select is not None:
        selection = select_teachers(val_logits, val_labels, names, cfg.select, 1e-4 if cfg.l2 == "cv" else float(cfg.l2), cfg.max_iter)
        names = [s["teacher"] for s in selection]
    index = [data.names.index(n) for n in names]
    cv = cross_fit(val_logits[index], val_labels, data.filenames[fit_rows], L2_GRID if cfg.l2 == "cv" else (float(cfg.l2),),
                   max_iter=cfg.max_iter, biases=cfg.biases, balanced=cfg.balanced)  # fmt: skip
    l2 = cv["l2"]
    log.info("fusion: penalty %g chosen by %d-fold cross-fitting on val, folds of whole %ss (cross-fitted loss per strength: %s)",
             l2, cv["folds"], cv["by"], ", ".join(f"{k}: {v:.4f}" for k, v in cv["loss_by_l2"].items()))  # fmt: skip
    row_weights = class_balanced(val_labels) if cfg.balanced else None
    w, b, fit = fit_fusion(val_logits[index], val_labels, l2, cfg.max_iter, biases=cfg.biases, row_weights=row_weights)
    variants = {}
    for name, (biases, balanced) in VARIANTS.items():
        if (biases, balanced) == (cfg.biases, cfg.balanced):  # the fit above is this variant
            variants[name] = (w, b)
            continue
        vw, vb, _ = fit_fusion(val_logits[index], val_labels, l2, cfg.max_iter, biases=biases,
                               row_weights=class_balanced(val_labels) if balanced else None)
        variants[name] = (vw, vb)
    choice = fusion_pays(cv["per_fold"]) if cfg.guard else {"use": "fusion", "why": "--no-guard: the fitted fusion as asked"}
    log.info("fusion: targets = %s (%s)", choice["use"], choice["why"])
    if not fit.converged:
        log.warning("fusion fit stopped at max_iter=%d (gradient norm %.2e)", cfg.max_iter, fit.grad_norm)

    weights = {n: float(v) for n, v in zip(names, w)}
    results = _evaluate_all(data, names, w, b, variants)
    # val numbers of the fusion, out-of-sample like everyone else's; the in-sample ones kept beside them
    fused_val = evaluate_predictions(cv["logits"].astype(np.float64), val_labels, data.devices[fit_rows], data.classes)
    results["fusion"]["val_in_sample"] = results["fusion"]["val"]
    results["fusion"]["val"] = {"loss": fused_val.log_loss, "acc": fused_val.accuracy, "n": fused_val.n, "cross_fitted": True}
    report = {
        "teachers": names,
        "available": list(data.names),
        "classes": data.classes,
        "fingerprint": data.fingerprint,
        "fit_split": FIT_SPLIT,
        "penalty": f"{l2} * (||w - 1/T||^2 + ||b||^2)",
        "l2": l2,
        "l2_choice": "cross-fitted on val" if cfg.l2 == "cv" else "given",
        "crossfit": {"folds": cv["folds"], "by": cv["by"], "loss_by_l2": cv["loss_by_l2"], "per_fold": cv["per_fold"]},
        "objective": {"biases": cfg.biases, "class_balanced": cfg.balanced},
        "targets": choice,
        "variants": {name: {"weights": dict(zip(names, map(float, vw))), "biases": dict(zip(data.classes, map(float, vb)))}
                     for name, (vw, vb) in variants.items()},
        "weights": weights,
        "scale": float(np.sum(w)),
        "mix": {n: float(v / np.sum(w)) for n, v in zip(names, w)} if abs(float(np.sum(w))) > 1e-9 else None,
        "biases": {c: float(v) for c, v in zip(data.classes, b)},
        "convergence": asdict(fit),
        "selection": selection,
        "seen_devices": _seen_devices(data),
        "results": results,
    }

    chosen = data.logits[index]
    with run_lock(run_dir):
        return _write_and_log(cfg, run_dir, uri, data, names, chosen, w, b, report, results, weights, selection)


def _write_and_log(cfg, run_dir, uri, data, names, chosen, w, b, report, results, weights, selection) -> dict[str, Any]:
    targets = fuse(chosen, w, b) if report["targets"]["use"] == "fusion" else average(chosen)
    write_targets(
        run_dir, data.filenames, data.splits, data.devices, data.labels,
        targets, average(chosen), data.classes, names, data.fingerprint,
    )
    write_text_atomic(RunLayout.of(run_dir).fusion_report, json.dumps(report, indent=2))
    print(_table(results, weights))
    print(f"targets (fused/targets.parquet, column logits): {report['targets']['use']}: {report['targets']['why']}")

    params = {k: (",".join(v) if isinstance(v, list) else v) for k, v in asdict(cfg).items()}
    with tracking.run(uri, cfg.experiment, f"fusion-{run_dir.name}", params=params, run_dir=run_dir) as run:
        metrics = _mlflow_metrics(report)
        items = list(metrics.items())
        for i in range(0, len(items), 900):
            run.log_metrics(dict(items[i : i + 900]))
        for step, s in enumerate(selection or [], start=1):
            run.log_metrics({"select.val_loss": s["val_loss"]}, step=step)
        run.log_json(report, "fusion.json")
        run.log_figure(_weights_figure(weights), "weights.png")
        report["mlflow_run_id"] = run.run_id
    log.info("wrote %s and fusion.json; MLflow run %s at %s", targets_path(run_dir), run.run_id, uri)
    return report


def build_parser() -> argparse.ArgumentParser:
    d = FusionConfig
    p = argparse.ArgumentParser(prog="python -m asc_dist.fusion", description=__doc__.split("\n\n")[0])
    p.add_argument("--teachers", default=None, help="comma-separated teacher names (default: all)")
    p.add_argument("--select", type=int, default=d.select, help="greedily keep the K teachers that fuse best on val")
    p.add_argument("--l2", default=d.l2, help="penalty on (w - 1/T) and b: cv (chosen by cross-fitting on val) or a number")
    p.add_argument("--max-iter", type=int, default=d.max_iter)
    p.add_argument("--no-biases", dest="biases", action="store_false", help="fit the teacher weights only (no per-class biases)")
    p.add_argument("--plain", dest="balanced", action="store_false",
                   help="plain CE over the val clips (default: class-balanced, so the fit cannot learn val's class prior)")
    p.add_argument("--no-guard", dest="guard", action="store_false",
                   help="write the fitted fusion even when the grouped cross-fit does not show it beats the average")
    add_shared(p, data=False, experiment=d.experiment, cluster=False)
    return p


def parse_args(argv: list[str] | None) -> FusionConfig:
    a = build_parser().parse_args(argv)
    setup_logging(a.verbose)
    try:
        l2 = a.l2 if a.l2 == "cv" else float(a.l2)
    except ValueError:
        raise ConfigError(f"--l2 {a.l2!r}: give 'cv' or a number >= 0") from None
    return FusionConfig(Path(a.run), teachers=parse_list(a.teachers, flag="--teachers"), select=a.select, l2=l2, max_iter=a.max_iter,
                        experiment=a.experiment, mlflow_uri=a.mlflow_uri, biases=a.biases, balanced=a.balanced, guard=a.guard)


def main(argv: list[str] | None = None) -> int:
    quiet_third_party()
    run_fusion(parse_args(argv))
    return 0

