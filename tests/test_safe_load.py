"""Checkpoints in a run folder (NFS-shared on a cluster) load as tensors and plain data only."""

from __future__ import annotations

import pytest
import torch

from asc_dist.errors import ConfigError
from asc_dist.run.checkpoint import STATE_FILE, load_state


class Payload:  # any object a pickle could construct (and run code while doing so)
    pass


def test_plain_trainer_state_loads(tmp_path):
    torch.save({"trainer": {"model": {"w": torch.ones(2)}, "epoch": 3, "history": [{"loss": 1.0}], "rng": torch.get_rng_state()},
                "mlflow_run_id": "abc"}, tmp_path / STATE_FILE)  # fmt: skip
    state = load_state(tmp_path)
    assert state["trainer"]["epoch"] == 3 and state["mlflow_run_id"] == "abc"


def test_a_checkpoint_with_arbitrary_objects_is_refused(tmp_path):
    torch.save({"trainer": Payload()}, tmp_path / STATE_FILE)
    with pytest.raises(ConfigError, match="refusing to load"):
        load_state(tmp_path)
