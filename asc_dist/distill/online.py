"""An online teacher: a trained teacher scoring the student's own augmented batch, not stored clean-audio logits.

Beyer et al. 2022 (arXiv 2106.05237, "function matching") find that a student distils better when the teacher
sees exactly the view the student sees. Stored targets are computed once on clean clips, so a student trained
with roll and device impulse responses learns from targets of a view it never gets. `--targets online:NAME`
runs teacher NAME (its weights in RUN/teachers/NAME/model.pt, written by `python -m asc_dist.teachers`) in eval
mode on the waveform batch after the waveform augmentations (roll, DIR / Auto-DIR); the spectrogram
augmentations (Freq-MixStyle, masking) act on the student's features only. It costs one teacher forward per
batch and measures what precomputed targets give up.
"""

from __future__ import annotations

import logging

import torch

from asc_dist.errors import ConfigError
from asc_dist.nets.features import FRONT_ENDS, LogMel
from asc_dist.run.checkpoint import load_plain
from asc_dist.run.layout import RunLayout

log = logging.getLogger(__name__)

ONLINE = "online:"


def teacher_name(targets: str) -> str | None:
    """`online:NAME` -> NAME; anything else -> None."""
    return targets[len(ONLINE):] if targets.startswith(ONLINE) else None


def load_online_teacher(run_dir: str, name: str, classes: list[str], sample_rate: int, device: torch.device):
    """The teacher `name` of RUN as a function waves [B, samples] -> logits [B, C] (no gradient, eval mode)."""
    from teachers.families import build_teacher

    path = RunLayout.of(run_dir).teacher_model(name)
    if not path.is_file():
        raise ConfigError(f"{path} is missing: --targets online:{name} needs the teacher's weights, which "
                          f"`python -m asc_dist.teachers --run {run_dir}` writes; re-run it (teachers trained before "
                          "this version kept no weights)")  # fmt: skip
    saved = load_plain(path)
    t = saved["teacher"]
    if list(saved["classes"]) != list(classes) or int(saved["sample_rate"]) != int(sample_rate):
        raise ConfigError(f"{path} was trained on classes {saved['classes']} at {saved['sample_rate']} Hz, the student's data has "
                          f"{classes} at {sample_rate} Hz; re-run the teachers on this dataset")  # fmt: skip
    if int(t.get("context_s") or 1) > 1:
        raise ConfigError(f"teacher {name} hears {t['context_s']} s of its recording per clip; an online teacher must hear "
                          "what the student hears (one clip): pick a teacher with context_s 1")  # fmt: skip
    extra = {"s_patchout_f": t["s_patchout_f"], "s_patchout_t": t["s_patchout_t"]} if t["family"] == "passt" else {}
    model = build_teacher(t["family"], t["size"], n_classes=len(classes), **extra)
    model.load_state_dict(saved["model"])
    model.eval().requires_grad_(False).to(device)
    front = LogMel(FRONT_ENDS[model.front_end]).eval().to(device)
    log.info("online teacher %s (%s %s) scores every augmented batch", name, t["family"], t["size"])

    @torch.no_grad()
    def score(waves: torch.Tensor) -> torch.Tensor:
        return model(front(waves)).float()

    return score
