"""Signs of life inside long epochs, and an early word when a plan cannot finish.

A TAU22 epoch of a CPU-bound teacher takes hours; a line per epoch is not enough. `Pace` is fed after every
training batch: it prints clips/s, the epoch's ETA and the whole run's ETA at least every `every_s` seconds
(and hands the same numbers to `on_report`, e.g. an MLflow run), and after the first `probe_batches` of the
first epoch it estimates the run's total time on the resources it got and warns, naming the cause and the
remedy, when that exceeds `warn_s`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("asc_dist.infra.progress")


@dataclass
class Pace:
    every_s: float = 30.0
    probe_batches: int = 3
    warn_s: float = 7200.0
    remedy: str = "train fewer epochs or a smaller model, or give it a GPU"
    on_report: Callable[[dict], None] | None = None
    _last: float = field(default=0.0, repr=False)
    _probed: bool = field(default=False, repr=False)

    def start_epoch(self) -> None:
        self._last = time.perf_counter()

    def tick(self, name: str, epoch: int, epochs: int, batches_done: int, batches: int, clips_done: int,
             clips_per_epoch: int, epoch_start: float) -> None:  # fmt: skip
        """After each batch of epoch `epoch` (1-based)."""
        now = time.perf_counter()
        elapsed = max(now - epoch_start, 1e-9)
        rate = clips_done / elapsed
        epoch_eta = (clips_per_epoch - clips_done) / max(rate, 1e-9)
        total_eta = epoch_eta + (epochs - epoch) * clips_per_epoch / max(rate, 1e-9)
        if not self._probed and epoch == 1 and batches_done >= min(self.probe_batches, batches):
            self._probed = True
            total = elapsed + total_eta
            if total > self.warn_s:
                log.warning("[%s] at %.1f clips/s this run needs about %.1f h (%d epochs of %d clips), over the %.1f h budget: "
                            "%s", name, rate, total / 3600, epochs, clips_per_epoch, self.warn_s / 3600, self.remedy)  # fmt: skip
        if now - self._last >= self.every_s and batches_done < batches:
            self._last = now
            log.info("[%s] epoch %d/%d: %d/%d clips, %.1f clips/s, epoch ETA %.0f s, run ETA %.0f s", name, epoch, epochs,
                     clips_done, clips_per_epoch, rate, epoch_eta, total_eta)  # fmt: skip
            if self.on_report is not None:
                self.on_report({"progress_clips_per_s": rate, "progress_epoch_eta_s": epoch_eta, "progress_run_eta_s": total_eta,
                                "progress_epoch": epoch - 1 + batches_done / batches})  # fmt: skip
