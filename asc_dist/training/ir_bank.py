"""The DIR / Auto-DIR impulse-response bank a training run uses, and the Auto-DIR threshold it gates on.

Two rules keep DIR honest:
- the bank never holds a response that simulates an unseen test device. A dataset made by `data synth` or
  `data tauify` with `--dirs` lists those files in its synth.json / tauify.json (`unseen_device_irs`); they are
  left out here, by name, and the log says which. Otherwise DIR would train on the exact responses of s4-s6.
- with no `--dirs`, the bank is generated: `GENERATED_IRS` microphone-like responses drawn the way the
  synthetic seen devices are (`asc_dist.data.devices`), from a stream of their own, so none of them is one
  that simulates s4-s6 (or any dataset device). The paper's recipe then runs without external files.

Auto-DIR's tau ("auto"): the paper sets tau = 323 as the average clip energy over TAU22 (energy as in
`augment.clip_energy`: sum of squares of the [-1, 1] waveform at TAU22's 44.1 kHz scale). "auto" computes
that same statistic, the mean energy of the training split's device-a clips (the only clips DIR touches),
on the data at hand, so the gate opens for a comparable share of clips whatever the recording level.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from asc_dist.errors import ConfigError
from asc_dist.training.augment import ADIR_TAU, ImpulseResponseBank, clip_energy

log = logging.getLogger(__name__)
GENERATED_IRS = 24
GENERATED_SOURCE = "generated"
ENERGY_SAMPLE = 4000  # device-a clips read to estimate tau (a sample is enough for a mean)


DATASET_MANIFESTS = ("synth.json", "tauify.json")  # written by asc_dist/data/synth.py and asc_dist/data/tauify.py


def held_out_irs(dataset_root: str | Path | None) -> list[str]:
    """Names of the impulse responses that simulate unseen test devices, from the manifest of a dataset that
    `data synth --dirs` or `data tauify --dirs` made (`unseen_device_irs`)."""
    if not dataset_root:
        return []
    names: list[str] = []
    for manifest in DATASET_MANIFESTS:
        try:
            names += json.loads((Path(dataset_root) / manifest).read_text()).get("unseen_device_irs", [])
        except (OSError, json.JSONDecodeError):
            continue
    return names


def generated_bank(sample_rate: int, n: int = GENERATED_IRS, seed: int = 0) -> ImpulseResponseBank:
    """`n` generated device responses at `sample_rate` (seen-device severity, a stream no dataset uses)."""
    from asc_dist.data.devices import SEVERITY, _draw_ir
    from asc_dist.data.scenes import _rng

    irs = [_draw_ir(_rng(seed, 97, j), SEVERITY["seen"], sample_rate).astype(np.float32) for j in range(n)]
    lengths = torch.tensor([len(h) for h in irs], dtype=torch.int64)
    bank = torch.zeros(n, int(lengths.max()))
    for row, h in enumerate(irs):
        bank[row, : len(h)] = torch.from_numpy(h)
    return ImpulseResponseBank(irs=bank, lengths=lengths, names=tuple(f"generated-{j:02d}" for j in range(n)), sample_rate=sample_rate)


def load_bank(dirs: str | None, sample_rate: int, dataset_root: str | Path | None = None) -> ImpulseResponseBank:
    """The bank for a run: the files in `dirs` minus those that simulate unseen devices, or a generated one."""
    if not dirs or dirs == GENERATED_SOURCE:
        log.info("DIR bank: %d generated device responses (no --dirs given)", GENERATED_IRS)
        return generated_bank(sample_rate)
    bank = ImpulseResponseBank.load(dirs, sample_rate)
    excluded = set(held_out_irs(dataset_root)) & set(bank.names)
    if not excluded:
        return bank
    keep = [i for i, name in enumerate(bank.names) if name not in excluded]
    if not keep:
        raise ConfigError(f"--dirs {dirs}: every response in it simulates an unseen test device of {dataset_root}; give another folder")
    log.info("DIR bank: left out %d response(s) that simulate the unseen test devices: %s", len(excluded), ", ".join(sorted(excluded)))
    idx = torch.tensor(keep)
    return ImpulseResponseBank(irs=bank.irs[idx], lengths=bank.lengths[idx], names=tuple(bank.names[i] for i in keep), sample_rate=sample_rate)


def _device_a_energies(train, sample_rate: int, device: str = "a") -> np.ndarray:
    """Auto-DIR energies of (a seeded sample of at most ENERGY_SAMPLE) device-a training clips, read in chunks."""
    rows = np.flatnonzero(train.table.device == device)
    if len(rows) > ENERGY_SAMPLE:
        rows = np.sort(np.random.default_rng(0).choice(rows, ENERGY_SAMPLE, replace=False))
    chunks = [clip_energy(torch.from_numpy(train.waves(rows[i : i + 512])), sample_rate).numpy() for i in range(0, len(rows), 512)]
    return np.concatenate(chunks) if chunks else np.zeros(0)


def auto_tau(train, sample_rate: int) -> tuple[float, float]:
    """(tau, share of device-a training clips above it): the mean Auto-DIR energy of those clips."""
    energy = _device_a_energies(train, sample_rate)
    if len(energy) == 0:
        return ADIR_TAU, 0.0
    tau = float(energy.mean())
    return tau, float((energy > tau).mean())


def resolve_tau(tau: float | str, train, sample_rate: int) -> float:
    """A number as given; "auto" computed from the training clips. Warns when the gate is (nearly) shut or open."""
    if tau != "auto":
        value = float(tau)
        energy = _device_a_energies(train, sample_rate)
        share = float((energy > value).mean()) if len(energy) else 0.0
    else:
        value, share = auto_tau(train, sample_rate)
        log.info("Auto-DIR tau = %.3g (mean energy of the device-a training clips); the gate opens for %.0f %% of them", value, 100 * share)
    if share < 0.05 or share > 0.95:
        log.warning("Auto-DIR tau = %.3g opens the gate for %.1f %% of device-a training clips: Auto-DIR then equals %s; "
                    "use --adir auto,P or a tau near the clips' mean energy", value, 100 * share,
                    "no augmentation" if share < 0.05 else "plain DIR")  # fmt: skip
    return value
