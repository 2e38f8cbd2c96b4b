"""Knowledge-distillation loss (seed 000, eq. 5; CP-JKU cpjku_dcase23 recipe, REFERENCE.md section 2).

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

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from asc_dist.augment import MixInfo
from asc_dist.errors import ConfigError, LogitsError

REDUCTIONS = ("cpjku", "batchmean")


def validate_kd(lam: float, temperature: float, reduction: str) -> None:
    if not 0.0 <= lam <= 1.0:
        raise ConfigError(f"KD lambda={lam} is outside [0, 1]; it weights the label loss (CP-JKU uses 0.02)")
    if not temperature > 0:
        raise ConfigError(f"KD temperature={temperature} must be > 0 (CP-JKU uses 2)")
    if reduction not in REDUCTIONS:
        raise ConfigError(f"KD reduction={reduction!r} is unknown; use one of {', '.join(REDUCTIONS)}")


@dataclass(frozen=True)
class KDConfig:
    """Defaults are the CP-JKU student recipe: 0.02 * CE + 0.98 * KD, T = 2, KL mean over batch x classes."""

    lam: float = 0.02
    temperature: float = 2.0
    reduction: str = "cpjku"

    def __post_init__(self) -> None:
        validate_kd(self.lam, self.temperature, self.reduction)

    def to_dict(self) -> dict:
        return asdict(self)


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
    label_weights: torch.Tensor | None = None,
    *,
    mix: MixInfo | None = None,
    teacher_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns `(total, ce, kd)`: `ce` is the label loss, `kd` the T^2-scaled KL term (before the
    (1 - lam) weight), `total = lam * ce + (1 - lam) * kd`.

    - `label_weights`: optional per-class weights [C] of the label CE (as `F.cross_entropy(weight=...)`,
      normalised by the summed weights of the targets).
    - `mix` (from `asc_dist.augment.Mixup`): both losses go to both rows of each mixed pair, lam-weighted:
      CE to label i and label perm(i), KD to teacher row i and teacher row perm(i) (easy_dcase recipe).
    - `teacher_mask`: bool [B], False for clips without a teacher target (EfficientAT's -1 rows): their KD
      term is zero (whatever their teacher logits hold, NaN included); the mean still runs over the batch.
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
    if teacher_mask is not None:
        teacher_mask = teacher_mask.to(device=s.device, dtype=torch.bool)
        t = torch.where(teacher_mask.unsqueeze(1), t, torch.zeros_like(t))
        valid = teacher_mask.float()
    else:
        valid = torch.ones(batch, device=s.device)
    weights = None if label_weights is None else label_weights.to(device=s.device, dtype=s.dtype)

    def ce_parts(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = F.cross_entropy(s, target, weight=weights, reduction="none")
        w = torch.ones_like(rows) if weights is None else weights[target]
        return rows, w

    ce_rows, ce_w = ce_parts(labels)
    kd_rows = _kl_rows(s, t, temperature) * valid
    if mix is not None:
        m = mix.lam.to(device=s.device, dtype=s.dtype)
        perm = mix.perm.to(s.device)
        ce_rows_b, ce_w_b = ce_parts(labels[perm])
        ce_rows = m * ce_rows + (1 - m) * ce_rows_b
        ce_w = m * ce_w + (1 - m) * ce_w_b
        kd_rows = m * kd_rows + (1 - m) * _kl_rows(s, t[perm], temperature) * valid[perm]
    ce = ce_rows.sum() / ce_w.sum()
    denominator = batch * n_classes if reduction == "cpjku" else batch
    kd = kd_rows.sum() / denominator * temperature**2
    total = lam * ce + (1 - lam) * kd
    return total, ce, kd
