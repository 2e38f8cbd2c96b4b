"""The one training loop, shared by teachers and students.

Waveforms come from the packed store; augmentation of waveforms (DIR/ADIR, roll, stretch, mixup) and of
log-mels (Freq-MixStyle, masking) happens on the compute device inside the step; the loss is a plug-in
(plain cross-entropy for teachers, the KD loss for students). Each epoch ends with a validation pass and an
`on_epoch` callback that may checkpoint (`Trainer.state_dict()` is everything a resume needs).

On CUDA the model's forward pass (training and scoring) runs under bf16 autocast (`OptimConfig.amp`): tensor
cores at bf16 rate, fp32 master weights and no loss scaling (bf16 has fp32's exponent range). The front end
and the augmentations run outside it in fp32, and the loss sees fp32 logits. On CPU it is a no-op.

Speed on CPU (measured in ops/bench_students.py): the model trains in channels-last memory order
(`OptimConfig.channels_last`: oneDNN's convolutions and batch norm run on NHWC without reordering; DS-FlexiNet
sm2 forward+backward 1.3x faster at batch 64 on one core), and malloc keeps freed activations mapped
(`asc_dist.infra.allocator`). Neither changes what is computed beyond float rounding.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asc_dist.data.store import SplitData
from asc_dist.errors import ConfigError
from asc_dist.infra.allocator import tune_allocator
from asc_dist.training.augment import MixInfo, SpecPipeline, WavePipeline
from asc_dist.training.batches import Batch, BatchLoader
from asc_dist.training.pace import Pace

log = logging.getLogger(__name__)


@dataclass
class OptimConfig:
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.1  # of all steps, linear warm-up, then cosine decay to 0
    seed: int = 0
    amp: str = "bf16"  # the model's forward on CUDA: bf16 autocast, or "off" (fp32); CPU is always fp32
    channels_last: bool = True  # 4-D weights and log-mel inputs in NHWC order while training (same results up to rounding)
    # validate after every val_every-th epoch and after the last; 0: auto, the interval that keeps validation within
    # VAL_BUDGET of the epochs' training time, from the last validation's cost (what is trained is the same either way)
    val_every: int = 1

    def __post_init__(self) -> None:
        check_amp(self.amp)
        if self.val_every < 0:
            raise ConfigError(f"val_every must be >= 0 (0 = auto), got {self.val_every}")

    def to_dict(self) -> dict:
        return asdict(self)


LossFn = Callable[[torch.Tensor, Batch, torch.Tensor, "MixInfo | None"], tuple[torch.Tensor, dict[str, float]]]


def cross_entropy_loss(logits: torch.Tensor, batch: Batch, labels: torch.Tensor, mix: MixInfo | None) -> tuple[torch.Tensor, dict[str, float]]:
    if mix is None:
        loss = F.cross_entropy(logits, labels)
    else:
        per = mix.lam * F.cross_entropy(logits, labels, reduction="none")
        per = per + (1 - mix.lam) * F.cross_entropy(logits, labels[mix.perm], reduction="none")
        loss = per.mean()
    return loss, {"ce": float(loss.detach())}


AMP_MODES = ("bf16", "off")


def check_amp(amp: str) -> None:
    if amp not in AMP_MODES:
        raise ConfigError(f"amp {amp!r} is unknown; choose bf16 (autocast on CUDA) or off (fp32)")


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16 autocast around a model's forward pass when `device` is CUDA and `amp` is "bf16"; otherwise
    nothing. The front end keeps its own fp32 region (`asc_dist.nets.features.LogMel`)."""
    check_amp(amp)
    if torch.device(device).type == "cuda" and amp == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


@contextlib.contextmanager
def observers_frozen(model: nn.Module):
    """QAT fake-quantisers observe in eval mode too: scoring must not move the quantisation ranges, so their
    observers are off while scoring and back as they were afterwards (a no-op for a float model)."""
    from torch.ao.quantization import FakeQuantizeBase

    fakes = [m for m in model.modules() if isinstance(m, FakeQuantizeBase)]
    was_on = [bool(m.observer_enabled[0]) for m in fakes]
    for m in fakes:
        m.disable_observer()
    try:
        yield
    finally:
        for m, on in zip(fakes, was_on):
            if on:
                m.enable_observer()


VAL_FEATURE_CACHE_BYTES = 512 * 2**20  # validation log-mels kept across epochs up to this size (else recomputed)
VAL_BUDGET = 0.15  # val_every=0: validation at most this share of training time (a small set's val can rival its epoch)


@torch.no_grad()
def predict_features(model: nn.Module, features: list[torch.Tensor], device: torch.device, amp: str = "bf16") -> np.ndarray:
    """Logits [N, C] (float32) of precomputed front-end outputs, batch by batch (eval mode, observers off)."""
    model.eval()
    with observers_frozen(model):
        out = []
        for spec in features:
            with autocast(device, amp):
                out.append(model(spec).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


@torch.no_grad()
def predict(model: nn.Module, front_end: nn.Module, data: SplitData, batch_size: int = 128, device: torch.device | str = "cpu",
            amp: str = "bf16") -> np.ndarray:
    """Logits [N, C] (float32) for every clip of `data` in its table order (clean audio, eval mode, observers off;
    the model under bf16 autocast on CUDA unless `amp` is "off")."""
    device = torch.device(device)
    model.eval()
    front_end.eval()
    out = []
    with observers_frozen(model):
        for batch in BatchLoader(data, batch_size, shuffle=False):
            spec = front_end(torch.from_numpy(batch.waves).to(device))
            with autocast(device, amp):
                logits = model(spec)
            out.append(logits.float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


@dataclass
class EpochResult:
    epoch: int  # 1-based
    epochs: int
    metrics: dict[str, float]


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        front_end: nn.Module,
        train: SplitData,
        val: SplitData | None,
        optim: OptimConfig,
        loss_fn: LossFn = cross_entropy_loss,
        wave_aug: WavePipeline | None = None,
        spec_aug: SpecPipeline | None = None,
        device: str = "auto",
        name: str = "model",
    ):
        tune_allocator()
        self.device = pick_device(device)
        self.model = model.to(self.device)
        if optim.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.front_end = front_end.to(self.device)
        self.train_data, self.val_data = train, val
        self.cfg = optim
        self.loss_fn = loss_fn
        # waves after augmentation -> teacher logits, given to the loss as batch.teacher_logits (asc_dist/distill/online.py)
        self.online_teacher: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.wave_aug = wave_aug.to(self.device) if wave_aug is not None else None
        self.spec_aug = spec_aug.to(self.device) if spec_aug is not None else None
        self.name = name
        self.loader = BatchLoader(train, optim.batch_size, shuffle=True, seed=optim.seed, drop_last=len(train) > optim.batch_size)
        # fused: one kernel for every parameter; the default on CPU loops over them (sm2's 120 tensors: 3.3 -> 0.5 ms a step)
        fused = True if self.device.type in ("cpu", "cuda") else None
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay, fused=fused)
        total = max(1, optim.epochs * len(self.loader))
        warm = max(1, int(optim.warmup_fraction * total))

        def schedule(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self.pace = Pace()  # in-epoch progress lines and the first-batches time estimate
        self._val_features: list[torch.Tensor] | None = None  # clean val log-mels, computed once (eval front end is fixed)
        self._val_cacheable = True
        self._last_val_epoch: int | None = None  # this process's last validated epoch (a resumed trainer validates first)
        self._val_interval = max(1, optim.val_every)
        self._val_logits: tuple[int, np.ndarray] | None = None  # (epoch, logits) of this process's last validation

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.loader.epoch = self.epoch
        torch.set_rng_state(state["rng"])

    def step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float]]:
        """One optimisation step on `batch` (the model and front end in train mode, as `train_epoch` sets them):
        waveform augmentation, front end and spectrogram augmentation in fp32, the model's forward under
        `autocast`, the loss on fp32 logits. Returns the loss (detached), the fp32 logits, the labels on the
        device and the loss's parts."""
        waves = torch.from_numpy(batch.waves).to(self.device, non_blocking=True)
        labels = torch.from_numpy(batch.labels).to(self.device)
        mix = None
        if self.wave_aug is not None:
            self.wave_aug.train()
            waves, mix = self.wave_aug(waves, batch.devices)
        if self.online_teacher is not None:
            batch.teacher_logits = self.online_teacher(waves)
        spec = self.front_end(waves)
        if self.spec_aug is not None and len(self.spec_aug):
            self.spec_aug.train()
            spec = self.spec_aug(spec)
        if self.cfg.channels_last:
            spec = spec.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.cfg.amp):
            logits = self.model(spec)
        logits = logits.float()  # the loss in fp32 whatever the forward ran in
        loss, parts = self.loss_fn(logits, batch, labels, mix)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{self.name}: non-finite training loss at epoch {self.epoch + 1}; lower the learning rate")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach(), logits.detach(), labels, parts

    def train_epoch(self) -> dict[str, float]:
        self.model.train()
        self.front_end.train()
        self.loader.wait_s = 0.0
        total_loss, correct, seen, parts_sum = 0.0, 0, 0, {}
        start = time.perf_counter()
        self.pace.start_epoch()
        batches = len(self.loader)
        per_epoch = min(len(self.train_data), batches * self.cfg.batch_size)
        for done, batch in enumerate(self.loader, start=1):
            loss, logits, labels, parts = self.step(batch)
            n = len(batch.labels)
            total_loss += float(loss) * n
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v * n
            correct += int((logits.argmax(1) == labels).sum())
            seen += n
            self.pace.tick(self.name, self.epoch + 1, self.cfg.epochs, done, batches, seen, max(per_epoch, seen), start)
        elapsed = time.perf_counter() - start
        metrics = {"train_loss": total_loss / max(seen, 1), "train_acc": correct / max(seen, 1)}
        metrics.update({f"train_{k}": v / max(seen, 1) for k, v in parts_sum.items()})
        metrics["clips_per_s"] = seen / max(elapsed, 1e-9)
        metrics["data_wait_share"] = self.loader.wait_s / max(elapsed, 1e-9)
        metrics["epoch_s"] = elapsed
        return metrics

    def validate(self) -> dict[str, float]:
        if self.val_data is None or len(self.val_data) == 0:
            return {}
        features = self._cached_val_features()
        if features is not None:
            logits = torch.from_numpy(predict_features(self.model, features, self.device, self.cfg.amp))
        else:
            logits = torch.from_numpy(predict(self.model, self.front_end, self.val_data, device=self.device, amp=self.cfg.amp))
        self._val_logits = (self.epoch + 1, logits.numpy())
        labels = torch.from_numpy(self.val_data.table.label)
        correct = (logits.argmax(1) == labels).numpy()
        devices = self.val_data.table.device
        metrics = {"val_loss": float(F.cross_entropy(logits, labels)), "val_acc": float(correct.mean())}
        metrics.update({f"val_acc_device_{d}": float(correct[devices == d].mean()) for d in sorted(set(devices.tolist()))})
        return metrics

    def final_val_logits(self) -> np.ndarray | None:
        """The val data's logits (per clip, or per context window) from the validation after the last epoch
        trained: the final model on clean audio in eval mode, as scoring computes them, so scoring reuses them
        (`asc_dist.training.evaluation.score_splits`, `known`); None if the last validation was before that epoch
        or in an earlier process."""
        if self._val_logits is not None and self._val_logits[0] == self.epoch:
            return self._val_logits[1]
        return None

    @torch.no_grad()
    def _cached_val_features(self) -> list[torch.Tensor] | None:
        """The validation clips' log-mels (clean audio, eval-mode front end: the same every epoch), computed on the
        first validation and reused; None (recompute each time) if they would exceed VAL_FEATURE_CACHE_BYTES."""
        if self._val_features is None and self._val_cacheable:
            self.front_end.eval()
            features, size = [], 0
            for batch in BatchLoader(self.val_data, 128, shuffle=False):
                spec = self.front_end(torch.from_numpy(batch.waves).to(self.device))
                size += spec.numel() * spec.element_size()
                if size > VAL_FEATURE_CACHE_BYTES:
                    self._val_cacheable = False
                    return None
                features.append(spec)
            self._val_features = features
        return self._val_features

    def _val_due(self) -> bool:
        epoch = self.epoch + 1
        return self._last_val_epoch is None or epoch >= self.cfg.epochs or epoch - self._last_val_epoch >= self._val_interval

    def _pace_validation(self, val_s: float, epoch_s: float) -> None:
        self._last_val_epoch = self.epoch + 1
        if self.cfg.val_every != 0:
            return
        interval = max(1, math.ceil(val_s / max(VAL_BUDGET * epoch_s, 1e-9)))
        if interval > 1 and self._val_interval == 1:
            log.info("[%s] validation takes %.2f s against %.2f s of training an epoch: validating every %d epoch(s) and after "
                     "the last (val_every=1: every epoch)", self.name, val_s, epoch_s, interval)
        self._val_interval = interval

    def fit(self, on_epoch: Callable[[EpochResult], None] | None = None) -> list[dict[str, float]]:
        if self.epoch == 0:  # a resumed trainer keeps the RNG state restored by load_state_dict
            torch.manual_seed(self.cfg.seed)
        start = time.perf_counter()
        first = self.epoch
        while self.epoch < self.cfg.epochs:
            metrics = self.train_epoch()
            if self._val_due():
                begun = time.perf_counter()
                metrics.update(self.validate())
                metrics["val_s"] = time.perf_counter() - begun
                self._pace_validation(metrics["val_s"], metrics["epoch_s"])
            if self.cfg.val_every != 1:
                metrics["val_every"] = self._val_interval  # progress lines say why an epoch shows no val_acc
            self.epoch += 1
            self.history.append(metrics)
            done = self.epoch - first
            eta = (time.perf_counter() - start) / done * (self.cfg.epochs - self.epoch)
            log.info(
                "[%s] epoch %d/%d loss %.3f acc %.3f%s | %.0f clips/s | ETA %.0f s",
                self.name, self.epoch, self.cfg.epochs, metrics["train_loss"], metrics["train_acc"],
                f" val_acc {metrics['val_acc']:.3f}" if "val_acc" in metrics else "",
                metrics["clips_per_s"], eta,
            )
            if on_epoch is not None:
                on_epoch(EpochResult(self.epoch, self.cfg.epochs, metrics))
        return self.history
