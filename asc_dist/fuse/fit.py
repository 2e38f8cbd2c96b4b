"""The fusion's fit: one weight per teacher and one bias per class on raw logits (DS-FlexiNet, arXiv 2412.20722,
eq. 4), a convex objective solved by LBFGS in float64, pulled towards the uniform average by an L2 penalty."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from asc_dist.errors import LogitsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitReport:
    """How the LBFGS fit ended; `loss` is the mean cross-entropy on the fit rows, without the penalty."""

    iterations: int
    evaluations: int
    loss: float
    objective: float
    grad_norm: float
    converged: bool  # stopped on a tolerance, not on max_iter
    rows: int
    seconds: float


def _loss_and_grads(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, r: torch.Tensor | None = None):
    """Mean CE of eq. 4 (weighted by `r`, summing to 1, when given) and its analytic gradients, no autograd.

    `x` is [T, C*N] (classes outer, clips inner) so the per-clip softmax reductions run over the outer axis,
    where they vectorise; torch's cross_entropy over a trailing axis of 10 was 5x slower at TAU22 scale.
    """
    n_classes, n_rows = b.numel(), y.numel()
    z = (w @ x).view(n_classes, n_rows) + b[:, None]
    top = z.amax(0)
    p = torch.exp(z - top)
    total = p.sum(0)
    nll = top + total.log() - z.gather(0, y[None]).squeeze(0)
    loss = nll.mean() if r is None else (nll * r).sum()
    p /= total
    p.scatter_add_(0, y[None], torch.full((1, n_rows), -1.0, dtype=p.dtype))
    if r is None:
        p /= n_rows  # dLoss/dz
    else:
        p *= r
    return loss, x @ p.view(-1), p.sum(1)


def class_balanced(labels: np.ndarray) -> np.ndarray:
    """Row weights summing to 1 under which every class present counts equally: a loss weighted so cannot
    learn the fit split's class prior (its biases cannot move towards the classes that split happens to hold)."""
    labels = np.asarray(labels)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return 1.0 / (len(classes) * counts[inverse])


def fit_fusion(
    logits: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, l2: float = 1e-4, max_iter: int = 200,
    *, biases: bool = True, row_weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, FitReport]:
    """Fit w [T] and b [C] minimising mean CE of softmax(sum_s w_s l_s + b) + L2 towards the average.

    `logits` is [T, N, C] (the rows to fit on, usually the validation split), `labels` [N]. Float64
    throughout: strong-Wolfe line searches stall on float32 loss noise at 10^5-10^6 rows. `biases=False`
    keeps b at 0 (weights only); `row_weights` (summing to 1, e.g. `class_balanced`) weight the CE per row.
    """
    start = time.perf_counter()
    src = logits.detach().cpu() if isinstance(logits, torch.Tensor) else torch.from_numpy(np.asarray(logits))
    n_teachers, n_rows, n_classes = src.shape
    if n_rows == 0:
        raise LogitsError("no rows to fit the fusion on; the validation split is empty")
    x = torch.empty((n_teachers, n_classes, n_rows), dtype=torch.float64)  # one copy, no float32 temporary
    x.copy_(src.transpose(1, 2))
    x = x.view(n_teachers, n_classes * n_rows)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    w0 = 1.0 / n_teachers
    w = torch.full((n_teachers,), w0, dtype=torch.float64)
    b = torch.zeros(n_classes, dtype=torch.float64)
    r = None if row_weights is None else torch.as_tensor(np.asarray(row_weights), dtype=torch.float64)
    opt = torch.optim.LBFGS(
        [w, b] if biases else [w], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
        tolerance_grad=1e-9, tolerance_change=1e-12,
    )

    def closure() -> torch.Tensor:
        with torch.no_grad():
            loss, grad_w, grad_b = _loss_and_grads(x, y, w, b, r)
            w.grad = grad_w + 2 * l2 * (w - w0)
            b.grad = grad_b + 2 * l2 * b if biases else torch.zeros_like(b)
            return loss + l2 * ((w - w0).square().sum() + b.square().sum())

    opt.step(closure)
    total = closure()
    loss = total - l2 * ((w - w0).square().sum() + b.square().sum())
    state = opt.state[w]
    iterations = int(state.get("n_iter", 0))
    report = FitReport(
        iterations=iterations,
        evaluations=int(state.get("func_evals", 0)),
        loss=float(loss),
        objective=float(total),
        grad_norm=float(torch.cat([w.grad, b.grad]).norm()),
        converged=iterations < max_iter,
        rows=n_rows,
        seconds=time.perf_counter() - start,
    )
    return w.numpy().copy(), b.numpy().copy(), report


def fuse(logits: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Eq. 4 on [T, N, C] logits -> [N, C] float32 (one BLAS product over the flattened clips)."""
    t, n, c = logits.shape
    out = np.asarray(w, dtype=np.float32) @ logits.reshape(t, n * c)
    return (out.reshape(n, c) + np.asarray(b, dtype=np.float32)).astype(np.float32, copy=False)


def average(logits: np.ndarray) -> np.ndarray:
    """The baseline: uniform mean of raw logits (w = 1/T, b = 0)."""
    return fuse(logits, np.full(logits.shape[0], 1.0 / logits.shape[0]), np.zeros(logits.shape[2]))
