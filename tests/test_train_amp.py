"""bf16 autocast of the model's forward on CUDA (`OptimConfig.amp`): a checked switch, a no-op on the CPU."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from asc_dist.distill.config import StudentConfig
from asc_dist.errors import ConfigError
from asc_dist.nets.features import FRONT_ENDS, LogMel
from asc_dist.training.trainer import OptimConfig, Trainer, autocast
from teachers.families import build_teacher


def test_amp_switch_defaults_to_bf16_and_rejects_unknown_modes(tmp_path):
    assert OptimConfig().amp == "bf16" and StudentConfig(run_dir=str(tmp_path)).amp == "bf16"
    with pytest.raises(ConfigError, match="fp16"):
        OptimConfig(amp="fp16")
    with pytest.raises(ConfigError, match="choose bf16"):
        StudentConfig(run_dir=str(tmp_path), amp="half").validate()
    from asc_dist.distill.student_cli import build_parser as student_parser
    from asc_dist.teach.driver import build_parser as teacher_parser

    assert student_parser().parse_args(["--run", "r"]).amp == teacher_parser().parse_args([]).amp == "bf16"
    assert student_parser().parse_args(["--run", "r", "--amp", "off"]).amp == teacher_parser().parse_args(["--amp", "off"]).amp == "off"

def test_autocast_is_bf16_on_cuda_only():
    with warnings.catch_warnings():  # torch warns (and disables it) when this machine has no CUDA
        warnings.simplefilter("ignore")
        on = autocast(torch.device("cuda"), "bf16")
    assert isinstance(on, torch.autocast) and on.fast_dtype == torch.bfloat16 and on.device == "cuda"
    assert not isinstance(autocast(torch.device("cuda"), "off"), torch.autocast)
    assert not isinstance(autocast(torch.device("cpu"), "bf16"), torch.autocast)


def _train(store, amp: str) -> tuple[list[dict], dict]:
    train = store.split("train")
    train = replace(train, table=train.table.take(slice(0, 16)), rows=train.rows[:16])
    val = store.split("val")
    torch.manual_seed(0)
    model = build_teacher("cnn", "tiny", n_classes=len(store.classes))
    trainer = Trainer(model, LogMel(FRONT_ENDS[model.front_end]), train, val, OptimConfig(epochs=2, batch_size=8, amp=amp), device="cpu")
    history = trainer.fit()
    return history, {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_bf16_setting_leaves_cpu_training_unchanged(synth_store):
    """On a CPU, amp="bf16" trains bit for bit as amp="off" (autocast is never entered there)."""
    hist_bf16, weights_bf16 = _train(synth_store, "bf16")
    hist_off, weights_off = _train(synth_store, "off")
    assert [h["train_loss"] for h in hist_bf16] == [h["train_loss"] for h in hist_off]
    assert [h["val_loss"] for h in hist_bf16] == [h["val_loss"] for h in hist_off]
    assert all(torch.equal(weights_bf16[k], weights_off[k]) for k in weights_off)
    assert np.isfinite(hist_off[-1]["train_loss"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_step_runs_the_model_in_bf16_and_the_front_end_and_loss_in_fp32(synth_store):
    train = synth_store.split("train")
    torch.manual_seed(0)
    model = build_teacher("cnn", "tiny", n_classes=len(synth_store.classes))
    seen = {}
    front = LogMel(FRONT_ENDS[model.front_end])
    front.register_forward_hook(lambda m, i, o: seen.__setitem__("front", o.dtype))
    last = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))][-1]
    last.register_forward_hook(lambda m, i, o: seen.__setitem__("model", o.dtype))
    trainer = Trainer(model, front, train, None, OptimConfig(epochs=1, batch_size=8), device="cuda")
    batch = next(iter(trainer.loader))
    trainer.model.train()
    loss, logits, _, _ = trainer.step(batch)
    assert seen == {"front": torch.float32, "model": torch.bfloat16}
    assert loss.dtype == torch.float32 and logits.dtype == torch.float32
