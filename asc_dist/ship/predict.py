"""`python -m asc_dist.predict --model-file MODEL AUDIO... [--out predictions.csv]`: scene labels for audio files.

MODEL: an exported `model_int8.pt` / `model.pt`, a student folder (RUN/students/NAME), or an MLflow model URI
(`models:/asc-dist-dsflexinet-sm2/1`, `runs:/RUN_ID/model`; with --mlflow-uri). AUDIO: files and folders
(searched recursively for wav, flac, ogg, mp3, aiff). Any sample rate and channel count: channels are
averaged and the audio resampled to the model's rate, then cut into the model's 1-s windows (a partial last
window is the file's last full second; a file shorter than a second is zero-padded). One prediction per
file: the mean of its windows' log-probabilities. Output: the DCASE submission format, tab-separated
`filename`, `scene_label`, then one probability column per class, in the model's own class order.
A file that cannot be read is named on one line; the others are still predicted, and the run exits 2.

`--device auto|NAME` (DCASE 2025 Task 1: the device is known at inference): a student folder trained with
`--device-epochs` holds one model per training device (RUN/students/NAME/devices/DEV/); `auto` reads each file's
device from the last part of its TAU name (`airport-lisbon-1000-40000-a.wav`: device a), NAME gives one device
for every file. A device without its own model (unseen: s4-s6, or anything unknown) uses the general model,
said once per device. The CSV is the same either way.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from asc_dist.cli import add_deprecated, add_tracking, add_verbose, parse_requiring, setup_logging
from asc_dist.errors import ConfigError
from asc_dist.run.atomic import write_text_atomic
from asc_dist.run.writable import require_writable
from asc_dist.ship.audio import Windows, cut, find_audio, read_mono
from asc_dist.ship.load import ShippedModel, load_model

log = logging.getLogger("asc_dist.predict")


@dataclass
class PredictConfig:
    model: str
    audio: list[str]
    device: str | None = None  # auto | a device name | None: the general model for every file
    out: str = "predictions.csv"
    windows: bool = False  # also write OUT's .windows.csv: one row per window
    batch_size: int = 64  # windows per forward pass
    mlflow_uri: str | None = None
    progress_s: float = 10.0


@dataclass
class FilePrediction:
    name: str
    log_probs: np.ndarray  # [n_windows, classes]
    starts_s: np.ndarray
    padded: bool

    @property
    def probs(self) -> np.ndarray:
        """Softmax of the mean window log-probability (a renormalised geometric mean)."""
        mean = self.log_probs.mean(axis=0)
        e = np.exp(mean - mean.max())
        return e / e.sum()


@dataclass
class Prediction:
    model: ShippedModel
    files: list[FilePrediction] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def file_device(name: str) -> str | None:
    """The device of a TAU file name (its last '-' part: `airport-lisbon-1000-40000-a.wav` -> a), else None."""
    stem = Path(name).stem
    return stem.rsplit("-", 1)[1] if "-" in stem else None


class DeviceRouter:
    """Which model scores a file: its device's model when there is one, else the general model (said once)."""

    def __init__(self, general: ShippedModel, per_device: dict[str, ShippedModel], device: str | None):
        self.general, self.per_device, self.device = general, per_device, device
        self._said: set[str] = set()

    def key(self, name: str) -> str | None:
        if self.device is None:
            return None
        dev = file_device(name) if self.device == "auto" else self.device
        if dev in self.per_device:
            return dev
        why = f"no device in the file name {name!r}" if dev is None else f"device {dev!r} has no model of its own"
        if (dev or "") not in self._said:
            self._said.add(dev or "")
            log.info("%s: the general model scores it%s", why, " (and every other file of this device)" if dev else "")
        return None

    def model(self, key: str | None) -> ShippedModel:
        return self.general if key is None else self.per_device[key]


def predict(model: ShippedModel, items: list[str], batch_size: int = 64, progress_s: float = 10.0, router: DeviceRouter | None = None) -> Prediction:
    """Read, window and classify every file under `items`; unreadable files are collected, not raised. With a
    `router`, each file goes to its device's model (files keep their order)."""
    found = find_audio(items)
    if not found:
        raise ConfigError(f"no audio files in {', '.join(items)} (looked for wav, flac, ogg, mp3, aiff)")
    router = router or DeviceRouter(model, {}, None)
    result, groups = Prediction(model), {}
    order: dict[str, int] = {}
    start = last = time.perf_counter()

    def flush(key) -> None:
        nonlocal last
        pending = groups.get(key) or []
        if not pending:
            return
        model = router.model(key)
        waves = np.concatenate([w.waves for w in pending]) if len(pending) > 1 else pending[0].waves
        parts = []
        for lo in range(0, len(waves), batch_size):  # a long file's windows in batches: memory stays bounded
            parts.append(torch.log_softmax(model.logits(torch.from_numpy(waves[lo : lo + batch_size])).float(), dim=1).numpy())
            now = time.perf_counter()
            if now - last >= progress_s and lo + batch_size < len(waves):
                log.info("predict: %s: %d/%d windows", pending[-1].name, lo + batch_size, len(waves))
                last = now
        log_probs = np.concatenate(parts)
        at = 0
        for w in pending:
            result.files.append(FilePrediction(w.name, log_probs[at : at + len(w.waves)], w.starts_s, w.padded))
            at += len(w.waves)
        pending.clear()

    for i, (path, name) in enumerate(found, start=1):
        order[name] = i
        try:
            windows: Windows = cut(read_mono(path, model.sample_rate), model.clip_samples, model.sample_rate, name)
        except Exception as exc:  # noqa: BLE001 - any reason a file cannot be read: name it, go on
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            print(f"error: {path}: cannot be read ({reason})", flush=True, file=sys.stderr)
            result.failed.append((str(path), reason))
            continue
        if windows.padded:
            log.warning("%s is %.2f s long, shorter than one %.2f-s window: zero-padded to one window, its prediction rests on "
                        "little audio", path, windows.seconds, model.clip_samples / model.sample_rate)  # fmt: skip
        key = router.key(name)
        groups.setdefault(key, []).append(windows)
        if sum(len(w.waves) for w in groups[key]) >= batch_size:
            flush(key)
        now = time.perf_counter()
        if now - last >= progress_s:
            rate = i / (now - start)
            log.info("predict: %d/%d files, %.1f files/s, ETA %.0f s", i, len(found), rate, (len(found) - i) / rate)
            last = now
    for key in list(groups):
        flush(key)
    result.files.sort(key=lambda f: order[f.name])
    return result


def submission_csv(pred: Prediction) -> str:
    """DCASE format: filename, scene_label, one probability column per class (the model's order)."""
    classes = pred.model.classes
    lines = ["\t".join(["filename", "scene_label", *classes])]
    for f in pred.files:
        p = f.probs
        lines.append("\t".join([f.name, classes[int(p.argmax())], *(f"{x:.6f}" for x in p)]))
    return "\n".join(lines) + "\n"


def windows_csv(pred: Prediction) -> str:
    classes = pred.model.classes
    lines = ["\t".join(["filename", "window", "start_s", "padded", "scene_label", *classes])]
    for f in pred.files:
        for k, (lp, s) in enumerate(zip(f.log_probs, f.starts_s)):
            p = np.exp(lp)
            lines.append("\t".join([f.name, str(k), f"{s:.3f}", str(f.padded).lower(), classes[int(p.argmax())], *(f"{x:.6f}" for x in p)]))
    return "\n".join(lines) + "\n"


def run_predict(cfg: PredictConfig) -> Prediction:
    if cfg.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    out = Path(cfg.out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give the CSV file to write, e.g. {out / 'predictions.csv'}")
    require_writable(out.parent, "the predictions' folder", "pass --out to a file in a folder you can write")
    model = load_model(cfg.model, cfg.mlflow_uri)
    log.info("model %s: %s, %d classes, %d Hz, %.2f s windows", model.source, model.kind, len(model.classes),
             model.sample_rate, model.clip_samples / model.sample_rate)
    router = None
    if cfg.device is not None:
        from asc_dist.ship.load import load_device_models

        per_device = load_device_models(cfg.model, model)
        if per_device:
            log.info("device models: %s (--device %s); other devices: the general model", ", ".join(per_device), cfg.device)
        else:
            log.info("%s has no device models (train the student with --device-epochs): the general model scores every file", cfg.model)
        router = DeviceRouter(model, per_device, cfg.device)
    start = time.perf_counter()
    pred = predict(model, cfg.audio, cfg.batch_size, cfg.progress_s, router)
    wall = time.perf_counter() - start
    if pred.files:
        write_text_atomic(out, submission_csv(pred))
        if cfg.windows:
            write_text_atomic(out.with_suffix(".windows.csv"), windows_csv(pred))
        n_win = sum(len(f.log_probs) for f in pred.files)
        log.info("predicted %d file(s) (%d windows) in %.1f s (%.1f files/s) -> %s%s", len(pred.files), n_win, wall,
                 len(pred.files) / max(wall, 1e-9), out, f" and {out.with_suffix('.windows.csv')}" if cfg.windows else "")
    if pred.failed:
        kept = f"the predictions of the other {len(pred.files)} are in {out}" if pred.files else "nothing was written"
        raise ConfigError(f"{len(pred.failed)} of {len(pred.failed) + len(pred.files)} file(s) could not be read (named above); {kept}")
    return pred


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asc_dist.predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-file", default=None, help="the model to run: model_int8.pt / model.pt, model.onnx / model_int8.onnx, "
                   "a student folder (RUN/students/NAME), or models:/NAME/VERSION (required)")
    add_deprecated(p, "--model", "--model-file", dest="model_file")
    p.add_argument("audio", nargs="+", help="audio files and/or folders (recursive); the CSV's filename column is a file's path "
                   "relative to the folder given, or the path of a file as given")
    p.add_argument("--out", default="predictions.csv", help="the DCASE CSV to write (tab-separated)")
    p.add_argument("--windows", action="store_true", help="also write OUT with .windows.csv: one row per window")
    p.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")
    p.add_argument("--device", default=None, help="auto: each file's device from its TAU name (...-a.wav) picks that device's model "
                   "(a student trained with --device-epochs); NAME: that device's model for every file; unseen or unknown "
                   "devices: the general model (default: the general model for every file)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--progress-s", type=float, default=10.0, help="a progress line (files/s, ETA) at least this often")
    add_tracking(p)
    add_verbose(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_requiring(build_parser(), argv, "--model-file")
    setup_logging(args.verbose)
    if args.threads:
        torch.set_num_threads(args.threads)
    run_predict(PredictConfig(model=args.model_file, audio=args.audio, out=args.out, windows=args.windows, batch_size=args.batch_size, device=args.device,
                              mlflow_uri=args.mlflow_uri, progress_s=args.progress_s))
    return 0

