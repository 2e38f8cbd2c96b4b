"""Progress lines on the driver for work that runs in Ray trials (whose own logs stay on the workers)."""

from __future__ import annotations

import logging
import time

from ray import tune

log = logging.getLogger("asc_dist.progress")


class EpochProgress(tune.Callback):
    """One line per trial per epoch: loss, accuracy, clips/s and ETA, from what the trial reports."""

    def __init__(self, name_key: str = "teacher"):
        self.name_key = name_key
        self.started: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started.setdefault(trial.trial_id, time.time())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" not in result or result.get("finished"):
            return
        name = result.get(self.name_key, trial.trial_id)
        epoch, epochs = int(result["epoch"]), int(result.get("epochs", result["epoch"]))
        eta = result.get("epoch_s", 0.0) * (epochs - epoch)
        val = f" val_acc {result['val_acc']:.3f}" if "val_acc" in result else ""
        log.info(
            "[%s] epoch %d/%d loss %.3f acc %.3f%s | %.0f clips/s | ETA %.0f s",
            name, epoch, epochs, result.get("train_loss", float("nan")), result.get("train_acc", float("nan")), val,
            result.get("clips_per_s", 0.0), eta,
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        log.warning("[%s] trial failed; Tune restarts it from its last checkpoint if retries remain", trial.config.get("teacher", {}).get("name", trial.trial_id))
