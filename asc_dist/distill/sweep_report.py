"""The sweep's results table and accuracy-vs-MACs plot (files in RUN/sweep and artifacts of the parent run)."""

from __future__ import annotations

from asc_dist.run.atomic import write_text_atomic
from asc_dist.run.layout import RunLayout

COLUMNS = ("preset", "kd_lambda", "temperature", "val_acc", "test_acc", "unseen_acc", "params", "macs", "param_kb", "int8_test_acc")


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key.endswith("_acc"):
        return f"{100 * value:.2f}"
    if key == "macs":
        return f"{value / 1e6:.2f} M"
    if key == "params":
        return f"{value / 1e3:.2f} K"
    if key == "param_kb":
        return f"{value:.1f}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def format_results(rows: list[dict]) -> str:
    """Markdown table, one row per trial (best-of-preset rows marked with *)."""
    head = "| trial | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for r in sorted(rows, key=lambda r: (r["preset"], r["kd_lambda"], r["temperature"])):
        name = r["name"] + (" *" if r.get("best_of_preset") else "") + (" (stopped)" if r.get("stopped_early") else "")
        lines.append(f"| {name} | " + " | ".join(_cell(c, r.get(c)) for c in COLUMNS) + " |")
    return "\n".join(lines)


def accuracy_vs_macs_figure(rows: list[dict]):
    from asc_dist.infra.plots import scatter_figure

    done = [r for r in rows if r.get("macs") and r.get("test_acc") is not None]
    return scatter_figure(
        [r["macs"] / 1e6 for r in done], [100 * r["test_acc"] for r in done],
        [f"{r['preset']} l{r['kd_lambda']:g}" for r in done], "MMACs per 1-s clip", "test accuracy (%)",
        "Students: accuracy vs MACs",
    )


def log_sweep_report(parent_run, rows: list[dict], layout: RunLayout) -> None:
    layout.sweep_dir.mkdir(parents=True, exist_ok=True)
    table = format_results(rows)
    write_text_atomic(layout.sweep_table, table + "\n")
    parent_run.log_text(table, layout.sweep_table.name)
    fig = accuracy_vs_macs_figure(rows)
    fig.savefig(layout.sweep_plot, dpi=110, bbox_inches="tight")
    parent_run.log_figure(fig, layout.sweep_plot.name)
    best = [r for r in rows if r.get("test_acc") is not None]
    if best:
        top = max(best, key=lambda r: r["val_acc"] or 0)
        parent_run.log_metrics({"best_val_acc": top["val_acc"] or 0.0, "best_test_acc": top["test_acc"], "trials": len(rows)})
