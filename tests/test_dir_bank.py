"""The DIR bank never holds an unseen test device's response; generated bank; Auto-DIR's tau from the data."""

from __future__ import annotations

import json
import logging

import numpy as np

from asc_dist.data.devices import UNSEEN_DEVICES, device_specs
from asc_dist.data.store import WaveformStore, pack
from asc_dist.data.synth import SynthConfig, generate
from asc_dist.training.ir_bank import GENERATED_IRS, auto_tau, generated_bank, held_out_irs, load_bank, resolve_tau
from tests.conftest import MICIRP, need


def test_bank_leaves_out_the_responses_of_unseen_devices(tmp_path):
    folder = need(MICIRP)
    cfg = SynthConfig(clips_per_device=4, test_clips_per_device=2, parts_per_segment=1, locations_per_scene=3, seed=5, dirs=str(folder))
    summary = generate(tmp_path / "d", cfg)
    unseen = {summary.devices[d] for d in UNSEEN_DEVICES}
    assert held_out_irs(tmp_path / "d") == sorted(unseen)
    assert json.loads((tmp_path / "d" / "synth.json").read_text())["unseen_device_irs"] == sorted(unseen)
    full = load_bank(str(folder), 32000)
    bank = load_bank(str(folder), 32000, tmp_path / "d")
    assert unseen <= set(full.names)  # the leak this guards against: the folder holds them
    assert not unseen & set(bank.names) and len(bank) == len(full) - len(unseen)


def test_generated_bank_is_disjoint_from_every_dataset_device():
    cfg = SynthConfig(sample_rate=32000)
    bank = generated_bank(32000)
    assert len(bank) == GENERATED_IRS and bank.names[0] == "generated-00"
    for spec in device_specs(cfg.seed, cfg.sample_rate, cfg.dirs).values():
        for row, n in zip(bank.irs, bank.lengths):
            h = row[: int(n)].numpy()
            assert len(spec.ir) != len(h) or not np.allclose(spec.ir, h, atol=1e-4)
    assert load_bank(None, 32000).names == bank.names


def test_auto_tau_is_the_mean_energy_and_opens_the_gate(synth_store, caplog):
    train = synth_store.split("train")
    tau, share = auto_tau(train, synth_store.sample_rate)
    assert 0 < tau < 323 and 0.05 < share < 0.95  # synthetic clips are quieter than TAU22's average
    with caplog.at_level(logging.WARNING, logger="asc_dist.training.ir_bank"):
        assert resolve_tau(323.0, train, synth_store.sample_rate) == 323.0
    assert "no augmentation" in caplog.text  # the paper's raw-TAU22 tau would never fire here: say so
    assert resolve_tau("auto", train, synth_store.sample_rate) == tau
