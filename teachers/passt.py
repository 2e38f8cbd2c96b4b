"""PaSST teacher (Koutini et al. 2022) built from `hear21passt`, never downloading anything.

hear21passt's own entry points default to `pretrained=True` and fetch weights from GitHub; here the net is
always built with `pretrained=False` and AudioSet or fine-tuned weights come only from a local file
(`weights=`), loaded the way hear21passt's `load_pretrained` does it: head dropped when the class count
differs, then `strict=False` (as kkoutini/passt_hear21 loads its own checkpoints). The library prints the model at construction and
tensor shapes on the first forward, so both run with stdout redirected.

`load_weights` is shared by every teacher family; it lives here because PaSST is the family whose
checkpoints (AudioSet, CP-JKU's fine-tuned `passt_dirfms_*`) are routinely reused.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import warnings

import torch
from torch import nn

from asc_dist.errors import ConfigError

log = logging.getLogger(__name__)

# Prefixes stripped from checkpoint keys: DDP (`module.`), Lightning (`model.`) and our wrappers (`net.`).
_WRAPPER_PREFIXES = ("module", "model", "net")

# Named sizes. "full" is PaSST-S as CP-JKU fine-tune it (85 M params, input 128 x 998 so AudioSet weights fit);
# "tiny" keeps the architecture (distilled, patch 16, stride 10) at a size that trains on a CPU in tests.
SIZES: dict[str, dict] = {
    "tiny": {"arch": None, "embed_dim": 96, "depth": 2, "num_heads": 4},
    "full": {"arch": "passt_s_swa_p16_128_ap476"},
}
SIZES["default"] = SIZES["full"]


class PaSSTTeacher(nn.Module):
    """Log-mel [B, 1, 128, T] -> logits [B, n_classes]. Structured patchout drops whole frequency rows
    (`s_patchout_f`) or time columns (`s_patchout_t`) of the patch grid during training only."""

    front_end = "passt"
    head_prefixes = ("net.head.1.", "net.head_dist.")

    def __init__(
        self,
        n_classes: int = 10,
        arch: str | None = "passt_s_swa_p16_128_ap476",
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        input_fdim: int = 128,
        input_tdim: int = 998,
        fstride: int = 10,
        tstride: int = 10,
        s_patchout_f: int = 0,
        s_patchout_t: int = 0,
        u_patchout: int = 0,
        weights: str | None = None,
    ):
        super().__init__()
        self.n_classes = n_classes
        self.fstride, self.tstride = fstride, tstride
        freq_patches = (input_fdim - 16) // fstride + 1
        if not 0 <= s_patchout_f < freq_patches:
            raise ConfigError(
                f"PaSST s_patchout_f={s_patchout_f} must be in [0, {freq_patches}) for {input_fdim} mel bins "
                f"(the patch grid has {freq_patches} frequency rows); CP-JKU use 6"
            )
        if s_patchout_t < 0 or u_patchout < 0:
            raise ConfigError(f"PaSST patchout must be >= 0, got s_patchout_t={s_patchout_t}, u_patchout={u_patchout}")
        patchout = {"s_patchout_t": s_patchout_t, "s_patchout_f": s_patchout_f, "u_patchout": u_patchout}
        from hear21passt.models import passt as hear21  # imported where used (with timm, 2-4 s)

        with contextlib.redirect_stdout(io.StringIO()):
            if arch is not None:
                self.net = hear21.get_model(
                    arch=arch, pretrained=False, n_classes=n_classes, in_channels=1, fstride=fstride,
                    tstride=tstride, input_fdim=input_fdim, input_tdim=input_tdim, **patchout,
                )
            else:
                self.net = hear21.PaSST(
                    img_size=(input_fdim, input_tdim), patch_size=16, stride=(fstride, tstride), in_chans=1,
                    num_classes=n_classes, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                    distilled=True, **patchout,
                )
        if weights:
            load_weights(self, weights, family="PaSST")
        else:
            log.info("PaSST starts from random initialisation (no --passt-weights given)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time_patches = (x.shape[-1] - 16) // self.tstride + 1
        if self.training and self.net.s_patchout_t >= time_patches:
            raise ConfigError(
                f"PaSST s_patchout_t={self.net.s_patchout_t} would drop all {time_patches} time columns of a "
                f"{x.shape[-1]}-frame input; use a smaller s_patchout_t"
            )
        # hear21passt prints shapes on its (process-wide) first forward only. It also warns whenever the input
        # is shorter than the 10-s grid; cropping the time positional embeddings is intended (kkoutini/passt_hear21 does the same).
        from hear21passt.models import passt as hear21

        quiet = contextlib.redirect_stdout(io.StringIO()) if hear21.first_RUN else contextlib.nullcontext()
        with quiet, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Input image size \(")
            logits, _features = self.net(x)
        return logits


def load_weights(model: nn.Module, path: str, family: str) -> None:
    """Load a local state dict into `model` (no network): keys are matched after stripping wrapper
    prefixes, head tensors whose shape differs (another class count) are dropped, any other shape
    mismatch is an error, and loading is non-strict with loaded/missing keys logged."""
    if not os.path.isfile(path):
        raise ConfigError(
            f"{family} weights file {path} does not exist; pass the path of a local .pt state dict "
            f"(nothing is downloaded), or leave the weights option out to start from random initialisation"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise ConfigError(
            f"{family} weights file {path} is not a loadable tensor state dict ({err.__class__.__name__}); "
            f"save it with torch.save(model.state_dict(), path)"
        ) from err
    state = _unwrap(checkpoint, path, family)
    own = model.state_dict()
    head_prefixes = tuple(getattr(model, "head_prefixes", ()))
    matched: dict[str, torch.Tensor] = {}
    dropped_head: list[str] = []
    adapted: list[str] = []
    for key, value in state.items():
        name = _match_key(key, own)
        if name in own and own[name].shape != value.shape and _rgb_stem(own[name], value):
            # ImageNet/AudioSet CNNs (timm's MobileNetV2) take 3 channels; ours take one log-mel: timm folds the
            # RGB kernels into one the way it does for in_chans=1 at load
            from timm.models import adapt_input_conv

            value = adapt_input_conv(own[name].shape[1], value)
            adapted.append(name)
        if name in own and own[name].shape != value.shape:
            if name.startswith(head_prefixes):
                dropped_head.append(name)
                continue
            raise ConfigError(
                f"{family} weights file {path}: tensor {key} has shape {tuple(value.shape)} but the model "
                f"expects {tuple(own[name].shape)}; build the teacher with the size/input settings the "
                f"checkpoint was trained with"
            )
        matched[name] = value
    result = model.load_state_dict(matched, strict=False)
    loaded = len(matched) - len(result.unexpected_keys)
    if loaded == 0:
        raise ConfigError(f"{family} weights file {path}: no tensor matches the model; is it a {family} checkpoint?")
    log.info("%s weights from %s: loaded %d of %d tensors", family, path, loaded, len(own))
    if dropped_head:
        log.info("%s: dropped classifier head (class count differs): %s", family, _short(dropped_head))
    if adapted:
        log.info("%s: 3-channel input convolution folded to one channel: %s", family, _short(adapted))
    if result.missing_keys:
        log.info("%s: missing (kept initialisation): %s", family, _short(result.missing_keys))
    if result.unexpected_keys:
        log.info("%s: ignored unexpected keys: %s", family, _short(result.unexpected_keys))


def _unwrap(checkpoint: object, path: str, family: str) -> dict[str, torch.Tensor]:
    """Accept a plain state dict or the common containers ({'state_dict': ...}, {'model': ...})."""
    for container in ("state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(container), dict):
            checkpoint = checkpoint[container]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ConfigError(
            f"{family} weights file {path} is not a state dict of tensors; save it with "
            f"torch.save(model.state_dict(), path)"
        )
    return checkpoint


def _rgb_stem(own: torch.Tensor, value: torch.Tensor) -> bool:
    """A conv kernel that differs from ours only in its input channels (3 -> 1)."""
    return own.dim() == 4 and value.dim() == 4 and own.shape[1] == 1 and value.shape[1] == 3 and own.shape[0] == value.shape[0] and own.shape[2:] == value.shape[2:]


def _match_key(key: str, own: dict) -> str:
    candidates = [key]
    while "." in candidates[-1] and candidates[-1].split(".", 1)[0] in _WRAPPER_PREFIXES:
        candidates.append(candidates[-1].split(".", 1)[1])
    for candidate in candidates:
        for name in (candidate, "net." + candidate):
            if name in own:
                return name
    return key


def _short(keys: list[str], limit: int = 8) -> str:
    more = f" ... (+{len(keys) - limit})" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
