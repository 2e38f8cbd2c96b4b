"""Turn `--data ROOT` (or nothing: the embedded synthetic dataset) into a checked, packed waveform store.

Shared by every step that reads audio, so teachers, students and the pipeline agree on one store and one
fingerprint. Without a dataset, the synthetic one is generated once into `RUN_DIR/data`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from asc_dist.data.store import PackConfig, WaveformStore, default_store_dir, pack, packed_dtype
from asc_dist.errors import DatasetError
from asc_dist.run.layout import RunLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataConfig:
    """Which data a step reads. The same object crosses the Ray boundary."""

    root: str | None = None  # TAU-layout folder; None = the embedded synthetic dataset in RUN_DIR/data
    store: str | None = None  # packed store folder (default ROOT/packed/sr<SR>)
    sample_rate: int = 32000
    val_fraction: float = 0.15
    val_seed: int = 0
    synth_clips_per_device: int | None = None
    synth_seed: int = 0
    dirs: str | None = None  # device impulse responses, used by the synthetic generator and by DIR

    def check(self) -> None:
        """Options every step validates in its driver, before Ray or MLflow start."""
        if not 0.0 < self.val_fraction < 1.0:
            raise DatasetError(f"--val-fraction {self.val_fraction} must be in (0, 1): the fusion is fitted on the "
                               "validation split (whole recording locations carved from fold1_train); 0.15 is the default")


def synthetic_root(run_dir: str | Path) -> Path:
    return RunLayout.of(run_dir).data


def prepare_store(cfg: DataConfig, run_dir: str | Path) -> WaveformStore:
    """Check and pack the dataset (generating the synthetic one if none is named); reuse an up-to-date store."""
    root = Path(cfg.root) if cfg.root else synthetic_root(run_dir)
    if cfg.root is None and not (root / "meta.csv").is_file():
        from asc_dist.data.synth import SynthConfig, generate

        kwargs = {"seed": cfg.synth_seed, "dirs": cfg.dirs}
        if cfg.synth_clips_per_device is not None:
            kwargs["clips_per_device"] = cfg.synth_clips_per_device
        log.info("no --data given: generating the embedded synthetic dataset in %s", root)
        generate(root, SynthConfig(**kwargs))
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; pass --data with a TAU-layout folder or omit it for the synthetic set")
    store_dir = Path(cfg.store) if cfg.store else default_store_dir(root, cfg.sample_rate)
    dtype = packed_dtype(store_dir) or PackConfig.dtype  # a store packed with `data pack --dtype int16` stays int16
    store_dir, built = pack(root, store_dir, PackConfig(sample_rate=cfg.sample_rate, dtype=dtype))
    log.info("waveform store %s (%s, %s)", store_dir, dtype, "packed" if built else "up to date")
    return WaveformStore(store_dir)
