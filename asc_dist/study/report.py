"""The study's tables: mean and standard deviation over seeds per row, paired differences, one figure per table.

Every row that ran is reported with its seeds; nothing is dropped or re-run to make a row win. The verdicts
compare the issue's targets with the measured numbers and say plainly when one is missed.
"""

from __future__ import annotations

import math

import numpy as np

from asc_dist.data.table import device_sort_key

METRICS = (("val_acc", "val"), ("test_acc", "test"), ("seen_acc", "seen"), ("unseen_acc", "unseen"), ("test_log_loss", "log loss"))
TITLES = {"IV": "Table IV: what the student learns from", "V": "Table V: normalisation and device impulse responses",
          "II": "Table II: student sizes, fp32 and int8 after QAT",
          "KD": "Table KD: temperature, label weight and loss reduction (diagnosis)",
          "D": "Table D: general vs device-specific students (each test clip scored by its device's model; unseen devices: the general)"}  # fmt: skip


def _stats(values: list[float | None]) -> dict:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, "n": len(vals)}


def summarise(row_results: list[dict]) -> list[dict]:
    """[{table, label, seeds, results}] -> the same with per-metric stats and per-device means."""
    out = []
    for r in row_results:
        res = r["results"]
        stats = {k: _stats([x.get(k) for x in res]) for k, _ in METRICS}
        if r["table"] == "II":
            stats["int8_test_acc"] = _stats([x.get("int8_test_acc") for x in res])
            stats["int8_unseen_acc"] = _stats([x.get("int8_unseen_acc") for x in res])
        devices = sorted({d for x in res for d in (x.get("test_per_device") or {})}, key=device_sort_key)
        per_device = {d: _stats([(x.get("test_per_device") or {}).get(d) for x in res])["mean"] for d in devices}
        out.append({**{k: v for k, v in r.items() if k != "results"}, "stats": stats, "per_device": per_device,
                    "per_seed": [{"seed": x.get("seed"), "test_acc": x.get("test_acc"), "unseen_acc": x.get("unseen_acc"), "seen_acc": x.get("seen_acc"),
                                  "int8_test_acc": x.get("int8_test_acc")} for x in res]})  # fmt: skip
    return out


def paired(summary: list[dict], a: str, b: str, metric: str = "test_acc") -> dict | None:
    """Row a minus row b, seed by seed (same seeds, same data): mean difference and its spread."""
    ra = next((r for r in summary if r["label"] == a or r["label"].startswith(a)), None)
    rb = next((r for r in summary if r["label"] == b or r["label"].startswith(b)), None)
    if ra is None or rb is None:
        return None
    by_seed = {x["seed"]: x[metric] for x in ra["per_seed"] if x.get(metric) is not None}
    diffs = [by_seed[x["seed"]] - x[metric] for x in rb["per_seed"] if x["seed"] in by_seed and x.get(metric) is not None]
    return {"a": ra["label"], "b": rb["label"], "metric": metric, **_stats(diffs), "diffs": diffs}


def _pct(s: dict | None) -> str:
    if not s or s.get("mean") is None:
        return "-"
    return f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"


def _loss(s: dict) -> str:
    return "-" if s.get("mean") is None else f"{s['mean']:.3f} ± {s['std']:.3f}"


def markdown(summary: list[dict], comparisons: list[dict], verdicts: list[str], header: str) -> str:
    lines = [header, ""]
    for table in TITLES:
        rows = [r for r in summary if r["table"] == table]
        if not rows:
            continue
        devices = list(rows[0]["per_device"])
        int8 = table == "II"
        head = ["row", "seeds", "val %", "test %", "seen %", "unseen %", "log loss"] + (["int8 test %", "int8 unseen %"] if int8 else []) + devices
        lines += [f"## {TITLES[table]}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            st = r["stats"]
            cells = [r["label"], ",".join(str(s) for s in r["seeds"]), _pct(st["val_acc"]), _pct(st["test_acc"]), _pct(st["seen_acc"]),
                     _pct(st["unseen_acc"]), _loss(st["test_log_loss"])]  # fmt: skip
            if int8:
                cells += [_pct(st["int8_test_acc"]), _pct(st["int8_unseen_acc"])]
            cells += [f"{100 * r['per_device'][d]:.1f}" if r["per_device"].get(d) is not None else "-" for d in devices]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", f"![{TITLES[table]}](study_{table}.png)", ""]
    if comparisons:
        lines += ["## Paired differences (same seeds)", "", "| comparison | metric | mean diff (points) | std | per seed |", "|---|---|---|---|---|"]
        for c in comparisons:
            per = ", ".join(f"{100 * d:+.1f}" for d in c["diffs"])
            mean = "-" if c["mean"] is None else f"{100 * c['mean']:+.1f}"
            std = "-" if c["std"] is None else f"{100 * c['std']:.1f}"
            lines.append(f"| {c['a']} − {c['b']} | {c['metric']} | {mean} | {std} | {per} |")
        lines.append("")
    lines += ["## Verdicts", ""] + [f"- {v}" for v in verdicts] + [""]
    return "\n".join(lines)


def verdicts(summary: list[dict], comparisons: dict[str, dict | None]) -> list[str]:
    """The issue's three targets, each met or missed, with the numbers."""
    out = []

    def mean(c: dict | None) -> float | None:
        return None if c is None or c["mean"] is None else 100 * c["mean"]

    fk = mean(comparisons.get("fused_vs_none"))
    if fk is not None:
        out.append(f"Fused KD vs no KD on test: {fk:+.1f} points (target: at least +2) -> {'met' if fk >= 2 else 'MISSED'}.")
    fa = mean(comparisons.get("fused_vs_average"))
    if fa is not None:
        out.append(f"Fused vs averaged targets on test: {fa:+.1f} points (target: at least 0) -> {'met' if fa >= 0 else 'MISSED'}.")
    ra = mean(comparisons.get("rn_adir_vs_bn_dir_unseen"))
    if ra is not None:
        out.append(f"RN + ADIR vs BN + DIR on unseen devices: {ra:+.1f} points (target: at least 0) -> {'met' if ra >= 0 else 'MISSED'}.")
    dv, ds = comparisons.get("device_vs_general"), comparisons.get("device_vs_general_seen")
    if dv is not None and dv["mean"] is not None and ds is not None and ds["mean"] is not None:
        gain = ds["n"] > 1 and ds["mean"] > (ds["std"] or 0)
        out.append(f"Device-specific vs general students on seen devices: {100 * ds['mean']:+.1f} ± {100 * (ds['std'] or 0):.1f} points paired "
                   f"({100 * dv['mean']:+.1f} on the whole test split; unseen devices use the general student) -> "
                   f"{'a gain beyond its spread' if gain else 'no gain beyond its spread'}.")
    return out


def figure(summary: list[dict], table: str):
    """Bars of test (and unseen) accuracy per row with one-standard-deviation error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary if r["table"] == table]
    keys = [("test_acc", "test"), ("unseen_acc", "unseen")] + ([("int8_test_acc", "int8 test")] if table == "II" else [])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(rows) + 2), 3.6))
    width = 0.8 / len(keys)
    x = np.arange(len(rows))
    for i, (key, name) in enumerate(keys):
        means = [100 * (r["stats"][key]["mean"] or 0) for r in rows]
        stds = [100 * (r["stats"][key]["std"] or 0) for r in rows]
        ax.bar(x + (i - (len(keys) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=name)
    ax.set_xticks(x, [r["label"] for r in rows], rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("accuracy %")
    ax.set_title(TITLES[table], fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
