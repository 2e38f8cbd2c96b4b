"""Result figures for reports and MLflow (`Run.log_figure(fig, "x.png")`, or `fig.savefig(path)`).

Figures are built on matplotlib's Agg canvas directly, never through pyplot: no global figure registry to
leak memory in long Ray workers, no display needed, and no backend switch for the rest of the process.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from asc_dist.data.table import UNSEEN_DEVICES

SEEN_COLOR = "#4C72B0"
UNSEEN_COLOR = "#DD8452"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def confusion_matrix_figure(cm: np.ndarray, classes: Sequence[str], title: str, normalize: bool = True) -> Figure:
    """Rows = true class, columns = predicted; colour (and text, in %) by row-normalised recall when
    `normalize`, raw counts otherwise."""
    cm = np.asarray(cm, dtype=np.float64)
    totals = cm.sum(axis=1, keepdims=True)
    shown = np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0) if normalize else cm
    size = 1.5 + 0.55 * len(classes)
    fig = _figure(size + 1.5, size)
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, labels=list(classes), rotation=45, ha="right")
    ax.set_yticks(ticks, labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = shown.max() / 2 if shown.size else 0
    for i in range(shown.shape[0]):
        for j in range(shown.shape[1]):
            text = f"{100 * shown[i, j]:.0f}" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if shown[i, j] > threshold else "black")
    return fig


def per_device_figure(per_device: Mapping[str, float], title: str, unseen: Sequence[str] = UNSEEN_DEVICES) -> Figure:
    """Accuracy (%) per device, unseen devices in a second colour; devices without clips (NaN) are left out."""
    items = [(d, v) for d, v in per_device.items() if v is not None and not math.isnan(v)]
    fig = _figure(1.5 + 0.6 * max(len(items), 1), 3.5)
    ax = fig.add_subplot()
    names = [d.upper() for d, _ in items]
    values = [100 * v for _, v in items]
    colors = [UNSEEN_COLOR if d in unseen else SEEN_COLOR for d, _ in items]
    bars = ax.bar(names, values, color=colors)
    ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    return fig


def bar_figure(names: Sequence[str], values: Sequence[float], title: str, ylabel: str) -> Figure:
    """Plain labelled bars (e.g. fusion weight per teacher, accuracy per teacher)."""
    fig = _figure(1.5 + 0.6 * max(len(names), 1), 3.5)
    ax = fig.add_subplot()
    bars = ax.bar(list(names), [float(v) for v in values], color=SEEN_COLOR)
    ax.bar_label(bars, fmt="%.3g", fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(names) > 6:
        ax.tick_params(axis="x", labelrotation=45)
    return fig


def scatter_figure(
    x: Sequence[float], y: Sequence[float], labels: Sequence[str], xlabel: str, ylabel: str, title: str
) -> Figure:
    """Points annotated with their labels (e.g. parameters or MACs vs accuracy per student)."""
    fig = _figure(5.0, 4.0)
    ax = fig.add_subplot()
    ax.scatter([float(v) for v in x], [float(v) for v in y], color=SEEN_COLOR)
    for xi, yi, label in zip(x, y, labels):
        ax.annotate(str(label), (float(xi), float(yi)), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    return fig
