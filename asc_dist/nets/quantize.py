"""Int8 quantisation-aware training primitives (DS-FlexiNet, arXiv 2412.20722, section III-C; fschmid56/cpjku_dcase23 `run_qat.py`).

The recipe is CP-JKU's `run_qat.py` in eager `torch.ao.quantization`: fuse conv-BN(-ReLU), attach the fbgemm
QAT qconfig, `prepare_qat`, fine-tune, freeze observers and BN statistics for the last epochs, then `convert` a
CPU copy to int8 and ship it as TorchScript. The epoch loop lives with the trainer; these are its steps.

Models must provide `fuse_model()` and their own Quant/DeQuant stubs (every student in `students/` does).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.ao.quantization as tq
from torch import nn

from asc_dist.errors import ConfigError
from asc_dist.nets.fake_quant import qat_qconfig
from asc_dist.run.atomic import atomic_path

QCONFIG_BACKEND = "fbgemm"  # the paper's "fbgemm observer"; identical to torch's "x86" QAT qconfig


def _cpu_has_vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def select_int8_engine() -> str:
    """Use oneDNN for int8 kernels where the CPU has VNNI, else keep torch's default.

    Measured (ops/bench_students.py): torch's default "x86" engine sends depthwise convolutions that are not
    3x3 and have more than 100 channels (SP4SC's 3x1 / 1x3 blocks) to a slow fbgemm path, 46 ms per clip vs
    2 ms under oneDNN; the other students are unchanged. A process that loads an exported int8 file should
    set the same engine (`torch.backends.quantized.engine = "onednn"`): weights are re-packed on load.
    """
    if "onednn" in torch.backends.quantized.supported_engines and _cpu_has_vnni():
        torch.backends.quantized.engine = "onednn"
    return torch.backends.quantized.engine


@contextlib.contextmanager
def _quiet_ao() -> Iterator[None]:
    """Silence torch.ao's deprecation notices (they point to torchao; the eager API works in torch 2.11)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated.*")
        yield


def prepare_qat(model: nn.Module) -> nn.Module:
    """A QAT copy of `model`: train mode, conv-BN(-ReLU) fused, fbgemm fake-quant observers inserted.

    The input model is left untouched (fusion and observer insertion happen on a deep copy).
    """
    if not hasattr(model, "fuse_model"):
        raise ConfigError(f"{type(model).__name__} has no fuse_model(); it cannot be prepared for int8 QAT")
    qat = copy.deepcopy(model).train()
    with _quiet_ao():
        qat.fuse_model()
        qat.qconfig = qat_qconfig(QCONFIG_BACKEND)  # torch's, with the fast activation fake-quantiser
        tq.prepare_qat(qat, inplace=True)
    return qat


def _keep_bn_frozen(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook: a frozen BN uses, and never updates, its running statistics, even under .train()."""
    module.training = False


def freeze_observers_and_bn(qat_model: nn.Module) -> nn.Module:
    """For the last QAT epochs: fix quantisation ranges and BN running statistics (CP-JKU's last 4 epochs).

    `freeze_bn_stats` covers the fused QAT conv-BN modules; BNs that could not be fused into a conv (a BN after
    a sum, a float-island BN) are pinned to their running statistics by a forward pre-hook that survives
    `.train()` calls from the training loop.
    """
    qat_model.apply(tq.disable_observer)
    qat_model.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
    for module in qat_model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            if _keep_bn_frozen not in module._forward_pre_hooks.values():
                module.register_forward_pre_hook(_keep_bn_frozen)
    return qat_model


def convert_int8(qat_model: nn.Module, overrides: dict | None = None) -> nn.Module:
    """An int8 copy of a QAT model (CPU, eval); the QAT model keeps training if the caller wants.

    Weights are packed for the engine `select_int8_engine` picks (oneDNN on VNNI CPUs, else torch's default).
    """
    select_int8_engine()
    cpu = copy.deepcopy(qat_model).cpu().eval()
    mapping = dict(tq.quantization_mappings.get_default_static_quant_module_mappings())
    for module in cpu.modules():  # a model's own int8 modules (e.g. Residual Normalization), declared on the class
        if hasattr(type(module), "quantized_class"):
            mapping[type(module)] = type(module).quantized_class
    mapping.update(overrides or {})  # e.g. a benchmark's alternative int8 form of a module
    with _quiet_ao():
        return tq.convert(cpu, mapping=mapping, inplace=True)


def export_torchscript(int8_model: nn.Module, path: str | os.PathLike, example_input: torch.Tensor, metadata: dict | None = None) -> Path:
    """Trace `int8_model` on `example_input` and save it atomically; the file loads with `torch.jit.load` alone.

    Tracing freezes input-dependent shapes (e.g. SP4SC's time pooling), so export with the deployment clip length.
    `metadata` (classes, sample rate, clip length, engine) goes inside the file as `extra/asc_dist.json`, so
    `asc_dist.predict` needs nothing but the file.
    """
    model = int8_model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks inside F ops, constant here
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.* is deprecated.*")  # TorchScript is the format
        traced = torch.jit.trace(model, example_input.cpu(), check_trace=False)
        expected, got = model(example_input.cpu()), traced(example_input.cpu())  # cheaper than check_trace
        if not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
            raise RuntimeError(f"traced {type(model).__name__} disagrees with the eager model; not saving {path}")
    with atomic_path(path) as tmp:
        traced.save(str(tmp), _extra_files={"asc_dist.json": json.dumps(metadata)} if metadata else {})
    return Path(path)


def int8_size_bytes(model: nn.Module | str | os.PathLike) -> int:
    """Bytes on disk of a saved TorchScript file, or of `model.state_dict()` serialised with `torch.save`.

    This is the shipped artefact (weights, scales, zero points, container overhead), not the DCASE count,
    which is parameters x bytes per parameter (see `asc_dist.complexity`).
    """
    if isinstance(model, (str, os.PathLike)):
        return Path(model).stat().st_size
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def latency_per_clip_ms(model: nn.Module, example_input: torch.Tensor, repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time per clip (ms) of `model(example_input)` in eval mode: batch time / batch size.

    The input goes to the CPU, so pass a CPU model (int8 models only run there); the model's mode is restored.
    """
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats}")
    was_training = model.training
    model.eval()
    x = example_input.cpu()
    times: list[float] = []
    try:
        with torch.inference_mode():
            for i in range(warmup + repeats):
                start = time.perf_counter()
                model(x)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    times.sort()
    return 1000.0 * times[len(times) // 2] / max(1, x.shape[0])
