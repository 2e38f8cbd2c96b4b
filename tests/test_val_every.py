"""Per-epoch validation every N epochs and after the last (`OptimConfig.val_every`), or as often as keeps it
within `VAL_BUDGET` of training (0, the teachers' default): what is trained does not change."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from asc_dist.errors import ConfigError
from asc_dist.nets.features import FRONT_ENDS, LogMel
from asc_dist.training.trainer import OptimConfig, Trainer
from teachers.families import build_teacher


def _fit(store, val_every: int, epochs: int, train_clips: int) -> tuple[list[dict], dict]:
    train = store.split("train")
    train = replace(train, table=train.table.take(slice(0, train_clips)), rows=train.rows[:train_clips])
    torch.manual_seed(0)
    model = build_teacher("cnn", "tiny", n_classes=len(store.classes))
    trainer = Trainer(model, LogMel(FRONT_ENDS[model.front_end]), train, store.split("val"),
                      OptimConfig(epochs=epochs, batch_size=8, val_every=val_every), device="cpu")
    return trainer.fit(), {k: v.clone() for k, v in trainer.model.state_dict().items()}


def validated(history: list[dict]) -> list[int]:
    return [i + 1 for i, h in enumerate(history) if "val_acc" in h]


def test_every_third_epoch_and_the_last_trains_the_same_model(synth_store):
    every, weights_every = _fit(synth_store, 1, 7, 16)
    third, weights_third = _fit(synth_store, 3, 7, 16)
    assert validated(every) == [1, 2, 3, 4, 5, 6, 7] and validated(third) == [1, 4, 7]
    assert all("val_s" in h for h in every) and sum("val_s" in h for h in third) == 3
    assert "val_every" not in every[0] and {h["val_every"] for h in third} == {3}
    assert [h["train_loss"] for h in third] == [h["train_loss"] for h in every]
    assert all(torch.equal(weights_third[k], weights_every[k]) for k in weights_every)
    assert third[-1]["val_acc"] == every[-1]["val_acc"]


def test_auto_validates_less_when_validation_outweighs_training(synth_store):
    """4 training clips against the whole val split: an epoch's validation costs far more than 15 % of its
    training, so auto validates the first epoch, then at the interval it measured, and the last."""
    assert len(synth_store.split("val")) >= 10 * 4
    history, _ = _fit(synth_store, 0, 6, 4)
    epochs = validated(history)
    assert epochs[0] == 1 and epochs[-1] == 6 and len(epochs) < 6


def test_val_every_is_checked_and_the_teachers_default_is_auto():
    from asc_dist.teach.driver import build_parser

    with pytest.raises(ConfigError, match="val_every"):
        OptimConfig(val_every=-1)
    assert OptimConfig().val_every == 1 and build_parser().parse_args([]).val_every == 0
    assert build_parser().parse_args(["--val-every", "2"]).val_every == 2


def test_scoring_reuses_the_last_validation_and_gets_the_same_logits(synth_store):
    """The validation after the last epoch ran the val split through the final model in the same batches as
    scoring does: `score_splits` takes those logits instead of running val again, bit for bit the same."""
    from asc_dist.training.evaluation import score_splits

    train = synth_store.split("train")
    train = replace(train, table=train.table.take(slice(0, 16)), rows=train.rows[:16])
    torch.manual_seed(0)
    model = build_teacher("cnn", "tiny", n_classes=len(synth_store.classes))
    trainer = Trainer(model, LogMel(FRONT_ENDS[model.front_end]), train, synth_store.split("val"),
                      OptimConfig(epochs=4, batch_size=8, val_every=3), device="cpu")
    trainer.fit()
    reused = trainer.final_val_logits()
    assert reused is not None and len(reused) == len(synth_store.split("val"))
    args = (trainer.model, trainer.front_end, synth_store, ("train", "val", "test"), 0.15, 0, "cpu")
    fresh, rows = score_splits(*args)
    again, rows_again = score_splits(*args, known={"val": reused})
    assert np.array_equal(fresh[rows.split == "val"], reused) and np.array_equal(fresh, again)
    assert list(rows.filename) == list(rows_again.filename)
    with pytest.raises(ValueError, match="known val logits"):
        score_splits(*args, known={"val": reused[:-1]})
    # a trainer restored after its last epoch validated nothing in this process: nothing to reuse
    restored = Trainer(build_teacher("cnn", "tiny", n_classes=len(synth_store.classes)), LogMel(FRONT_ENDS[model.front_end]), train,
                       synth_store.split("val"), OptimConfig(epochs=4, batch_size=8), device="cpu")
    restored.load_state_dict(trainer.state_dict())
    assert restored.final_val_logits() is None


def test_a_context_teacher_reuses_its_last_validation_per_window(synth_store):
    """A 2-s context model validates on val's context windows; scoring maps those windows' logits to clips, as
    it does with windows it scores itself (in smaller batches: equal within float rounding)."""
    from asc_dist.training.context import ContextSplit
    from asc_dist.training.evaluation import score_splits

    train = ContextSplit(synth_store.split("train"), 2)
    torch.manual_seed(0)
    model = build_teacher("cnn", "tiny", n_classes=len(synth_store.classes))
    trainer = Trainer(model, LogMel(FRONT_ENDS[model.front_end]), train, ContextSplit(synth_store.split("val"), 2),
                      OptimConfig(epochs=1, batch_size=8), device="cpu")
    trainer.fit()
    reused = trainer.final_val_logits()
    args = (trainer.model, trainer.front_end, synth_store, ("val", "test"), 0.15, 0, "cpu", 2)
    fresh, rows = score_splits(*args)
    again, _ = score_splits(*args, known={"val": reused})
    assert len(reused) == len(ContextSplit(synth_store.split("val"), 2)) < (rows.split == "val").sum()
    np.testing.assert_allclose(again, fresh, rtol=0, atol=1e-5)
    assert np.array_equal(again[rows.split == "test"], fresh[rows.split == "test"])
