"""Knowledge-distillation loss (DS-FlexiNet, arXiv 2412.20722, eq. 5; the fschmid56/cpjku_dcase23 recipe).

    total = lam * CE(student, label) + (1 - lam) * T^2 * KL(softmax(teacher / T) || softmax(student / T))

`lam` weights the *label* loss (CP-JKU `kd_lambda = 0.02`: 0.02 * CE + 0.98 * KD). The T^2 factor keeps the
soft-target gradients on the scale of the hard-label ones (Hinton et al. 2015). Teacher logits are raw
(fused) logits; their `log_softmax(. / T)` is taken here, as CP-JKU's `AddLogitsDataset` does at load time.

Reductions of the KL term (the detail that decides the label:KD balance):
- "cpjku": `KLDivLoss(log_target=True, reduction="none")(...).mean()`, the mean over batch x classes,
  i.e. batchmean / n_classes. This is what cpjku23 (and easy_dcase) train with.
- "batchmean": sum over classes, mean over the batch: the textbook KL. With lam 0.02 it weighs the KD term
  n_classes times more than "cpjku" does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from asc_dist.errors import ConfigError, LogitsError
from asc_dist.training.augment import MixInfo

REDUCTIONS = ("cpjku", "batchmean")


def validate_kd(lam: float, temperature: float, reduction: str) -> None:
    if not 0.0 <= lam <= 1.0:
        raise ConfigError(f"KD lambda={lam} is outside [0, 1]; it weights the label loss (CP-JKU uses 0.02)")
    if not temperature > 0:
        raise ConfigError(f"KD temperature={temperature} must be > 0 (CP-JKU uses 2)")
    if reduction not in REDUCTIONS:
        raise ConfigError(f"KD reduction={reduction!r} is unknown; use one of {', '.join(REDUCTIONS)}")


def _kl_rows(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p_teacher || p_student) per row at temperature T, via CP-JKU's `kl_div(log_target=True)`."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=-1)


def kd_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor,
    lam: float,
    temperature: float,
    reduction: str = "cpjku",
    *,
    mix: MixInfo | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns `(total, ce, kd)`: `ce` is the label loss, `kd` the T^2-scaled KL term (before the
    (1 - lam) weight), `total = lam * ce + (1 - lam) * kd`.

    - `mix` (from `asc_dist.training.augment.Mixup`): both losses go to both rows of each mixed pair, lam-weighted:
      CE to label i and label perm(i), KD to teacher row i and teacher row perm(i) (easy_dcase recipe).
    """
    validate_kd(lam, temperature, reduction)
    if student_logits.dim() != 2 or teacher_logits.shape != student_logits.shape:
        raise LogitsError(
            f"teacher logits {tuple(teacher_logits.shape)} do not match student logits "
            f"{tuple(student_logits.shape)}; both must be [batch, n_classes] for the same clips"
        )
    batch, n_classes = student_logits.shape
    s = student_logits.float()
    t = teacher_logits.float()
    ce_rows = F.cross_entropy(s, labels, reduction="none")
    kd_rows = _kl_rows(s, t, temperature)
    if mix is not None:
        m = mix.lam.to(device=s.device, dtype=s.dtype)
        perm = mix.perm.to(s.device)
        ce_rows = m * ce_rows + (1 - m) * F.cross_entropy(s, labels[perm], reduction="none")
        kd_rows = m * kd_rows + (1 - m) * _kl_rows(s, t[perm], temperature)
    ce = ce_rows.sum() / ce_rows.numel()
    denominator = batch * n_classes if reduction == "cpjku" else batch
    kd = kd_rows.sum() / denominator * temperature**2
    total = lam * ce + (1 - lam) * kd
    return total, ce, kd
