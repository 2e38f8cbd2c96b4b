"""int8 quantisation-aware fine-tuning of a trained student (DS-FlexiNet, arXiv 2412.20722, section III-C; fschmid56/cpjku_dcase23 `run_qat.py`).

fbgemm eager-mode QAT: fuse conv-BN-ReLU, prepare, fine-tune Q epochs at a low learning rate with the same
KD loss, freeze observers and BN statistics for the last ~20 % of the epochs, convert on CPU, evaluate the
int8 model per device, and export waveform -> logits (front end + int8 model) as one TorchScript file that
`torch.jit.load` runs without this project installed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from asc_dist.nets.features import FRONT_ENDS, LogMel
from asc_dist.run.layout import STUDENT_INT8, STUDENT_INT8_OPEN
from asc_dist.ship.format import WaveToLogits, ship_metadata

log = logging.getLogger(__name__)


def traced_latency_ms(model: nn.Module, example: torch.Tensor) -> float:
    """Latency per clip of the traced model, one thread: what the shipped TorchScript file costs (eager mode
    adds per-module Python overhead that dominates at batch 1 and hides the int8 gain)."""
    import warnings

    from asc_dist.nets.quantize import latency_per_clip_ms

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model.eval(), example, check_trace=False)
        return latency_per_clip_ms(traced, example, repeats=50)
    finally:
        torch.set_num_threads(threads)


def save_open(int8: nn.Module, path: Path) -> Path:
    """The int8 net with visible int8 weights (what the DCASE package ships, `asc_dist.ship.open_int8`)."""
    import copy

    from asc_dist.run.atomic import atomic_path
    from asc_dist.ship.open_int8 import trace_open

    with atomic_path(path) as tmp:
        torch.save(trace_open(copy.deepcopy(int8)), tmp)
    return path


def frozen_epochs(qat_epochs: int) -> int:
    """Epochs at the end with observers and BN statistics frozen (cpjku23: the last 4 of 20-24)."""
    return 0 if qat_epochs < 2 else max(1, round(0.2 * qat_epochs))


def quantize_student(cfg, store, fp32_model: nn.Module, mlrun) -> dict:
    """QAT-finetune `fp32_model`, convert, evaluate on CPU, export; returns the int8 result fields."""
    from asc_dist.distill.recipe import evaluate_all, student_trainer
    from asc_dist.nets.quantize import convert_int8, export_torchscript, freeze_observers_and_bn, int8_size_bytes, prepare_qat

    qat_model = prepare_qat(fp32_model.cpu())
    trainer = student_trainer(cfg, store, qat_model, cfg.qat_epochs, cfg.qat_lr, amp="off")
    n_frozen = frozen_epochs(cfg.qat_epochs)

    def on_epoch(result) -> None:
        mlrun.log_metrics({f"qat_{k}": v for k, v in result.metrics.items()}, step=cfg.epochs + result.epoch)
        if n_frozen and result.epoch == cfg.qat_epochs - n_frozen:
            freeze_observers_and_bn(trainer.model)
            log.info("[%s] QAT: observers and BN statistics frozen for the last %d epoch(s)", cfg.run_name, n_frozen)

    trainer.fit(on_epoch)
    int8 = convert_int8(trainer.model.cpu())
    front = LogMel(FRONT_ENDS[getattr(fp32_model, "front_end", "student")]).eval()
    example = torch.zeros(1, 1, front.cfg.n_mels, front.cfg.frames(store.manifest["samples"]))
    # timed on its own copy: oneDNN's int8 convolutions keep the kernels of the first input shape they ran, and one
    # that scored batches of 128 first runs a batch of 1 about 2x slower (sm1 1.45 vs 0.67 ms), as a shipped file
    # loaded afresh never does
    fp32_ms, int8_ms = traced_latency_ms(fp32_model.cpu().eval(), example), traced_latency_ms(convert_int8(trainer.model.cpu()), example)
    reports = evaluate_all(int8, front, store, cfg, "cpu")
    path = Path(cfg.out_dir) / STUDENT_INT8
    meta = ship_metadata(cfg, store, kind="int8")
    export_torchscript(WaveToLogits(front, int8).eval(), path, torch.zeros(1, store.manifest["samples"]), meta)
    save_open(int8, Path(cfg.out_dir) / STUDENT_INT8_OPEN)
    file_kb = int8_size_bytes(path) / 1000  # the file on disk, front-end constants included: not the DCASE measure (param_kb)
    test = reports.get("test")
    metrics = {"int8_file_kb": file_kb, "fp32_latency_ms": fp32_ms, "int8_latency_ms": int8_ms}
    for split, rep in reports.items():
        metrics.update(rep.to_metrics(prefix=f"int8_{split}_"))
        mlrun.log_json(rep.to_dict(), f"int8_{split}_report.json")
    mlrun.log_metrics(metrics)
    mlrun.log_file(path)
    return {
        "int8_val_acc": reports["val"].accuracy if "val" in reports else None,
        "int8_test_acc": test.accuracy if test else None,
        "int8_unseen_acc": test.unseen_accuracy if test else None,
        "int8_test_per_device": test.per_device if test else {},
        "int8_file_kb": file_kb, "fp32_latency_ms": fp32_ms, "int8_latency_ms": int8_ms,
        "int8_torchscript": str(path),
    }
