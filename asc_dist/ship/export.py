"""`python -m asc_dist.export --onnx --model-file STUDENT [--int8]`: a trained student as ONNX, for onnxruntime;
`--dcase-package LABEL --out DIR`: a DCASE 2025 Task 1 inference package (`asc_dist.ship.dcase_package`).

Writes `model.onnx` beside the student (or `--out`): the fp32 student with its front end, waveform in
([batch, samples] float32 at the model's rate, any batch) and logits out, with the class list, sample rate
and clip length in the file's metadata, so `python -m asc_dist.predict --model-file model.onnx` needs nothing else.
The export is checked against torch on training clips and refused if they disagree. `--int8` adds
`model_int8.onnx`: onnxruntime's own static int8 (QDQ, per-channel weights) of the convolutions and the
classifier, calibrated on training clips; the front end stays fp32. Needs the `onnx` extra
(`pip install -e .[onnx]`, in the dev lock).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asc_dist.cli import add_data, add_deprecated, add_verbose, parse_requiring, quiet_third_party, setup_logging
from asc_dist.errors import ConfigError
from asc_dist.run.atomic import atomic_path
from asc_dist.run.layout import STUDENT_CHECKPOINT, STUDENT_ONNX

log = logging.getLogger("asc_dist.export")
TOLERANCE = 1e-3  # max |logit| difference onnxruntime fp32 vs torch (float rounding in the STFT and matmuls)


@dataclass
class ExportConfig:
    model: str  # a student folder or its model.pt
    out: str | None = None  # the .onnx file (default: model.onnx beside the checkpoint)
    int8: bool = False
    calib_clips: int = 256
    store: str | None = None  # packed store for calibration and the check (default: the student's own)


def _need_onnx():
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError("ONNX export needs onnx, onnxscript and onnxruntime: pip install -r requirements-onnx.lock (the locked versions)") from None


def _checkpoint(spec: str) -> Path:
    path = Path(spec)
    if path.is_dir():
        path = path / STUDENT_CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"--model-file {spec}: no student checkpoint (model.pt) there; give a student folder RUN/students/NAME")
    return path


def _clips(store_path: str | None, checkpoint: Path, n: int) -> np.ndarray:
    """The first `n` training clips of the student's store (or `--store`), as float32 [n, samples]."""
    from asc_dist.data.store import WaveformStore, default_store_dir
    from asc_dist.nets.features import STUDENT_MEL
    from asc_dist.run.checkpoint import load_plain

    if store_path is None:
        ckpt = load_plain(checkpoint)
        data = ckpt["config"]["data"]
        sample_rate = int(ckpt.get("sample_rate", STUDENT_MEL.sample_rate))
        store_path = data.get("store") or (str(default_store_dir(data["root"], sample_rate)) if data.get("root") else None)
    if store_path is None or not Path(store_path).is_dir():
        raise ConfigError(f"no packed store to calibrate and check on ({store_path}); pass --store STORE_FOLDER")
    train = WaveformStore(store_path).split("train")
    return train.waves(np.arange(min(n, len(train))))


def export_onnx(cfg: ExportConfig) -> dict:
    _need_onnx()
    from asc_dist.ship.load import load_model

    checkpoint = _checkpoint(cfg.model)
    shipped = load_model(str(checkpoint))  # the fp32 student with its front end, and its metadata
    out = Path(cfg.out) if cfg.out else checkpoint.with_name(STUDENT_ONNX)
    clips = _clips(cfg.store, checkpoint, cfg.calib_clips)
    meta = {"classes": json.dumps(shipped.classes), "sample_rate": str(shipped.sample_rate), "clip_samples": str(shipped.clip_samples),
            "input": "waves: float32 mono [batch, samples] at sample_rate", "output": "logits [batch, classes]"}
    diff = write_onnx(shipped.module, clips, meta, out)
    result = {"onnx": str(out), "max_abs_diff_vs_torch": diff}
    log.info("wrote %s (onnxruntime vs torch: max |logit| difference %.1e)", out, diff)
    if cfg.int8:
        result.update(quantize_onnx(out, clips, meta))
    return result


def write_onnx(module: torch.nn.Module, clips: np.ndarray, meta: dict, out: Path, input_name: str = "waves") -> float:
    """Export `module` (waves [batch, samples] -> logits, or whatever `clips` hold, named `input_name`) to `out`,
    any batch size; returns onnxruntime's max |logit| difference from torch on `clips` (refused above TOLERANCE)."""
    _need_onnx()
    import onnxruntime as ort

    quiet_third_party()
    module = module.eval()
    with atomic_path(out) as tmp, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter's chatter
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (torch.from_numpy(clips[:2]),), input_names=[input_name], output_names=["logits"], dynamo=True,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
        program.model.metadata_props.update(meta)
        program.save(str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        with torch.no_grad():
            expected = module(torch.from_numpy(clips[:32])).numpy()
        diff = float(np.abs(session.run(None, {input_name: clips[:32]})[0] - expected).max())
        if diff > TOLERANCE:
            raise RuntimeError(f"onnxruntime disagrees with torch by {diff:.2e} on training clips; not saving {out}")
    return diff


def quantize_onnx(fp32_path: Path, clips: np.ndarray, meta: dict, input_name: str = "waves") -> dict:
    """onnxruntime's static int8 of the convolutions and the classifier, calibrated on `clips` (fed as `input_name`)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Clips(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{input_name: clips[i : i + 16]} for i in range(0, len(clips), 16)])

        def get_next(self):
            return next(self.batches, None)

    out = fp32_path.with_name(fp32_path.stem + "_int8.onnx")
    with tempfile.TemporaryDirectory() as tmp, atomic_path(out) as target, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(target), Clips(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "Gemm"])
        model = onnx.load(str(target))
        del model.metadata_props[:]
        for k, v in meta.items():
            model.metadata_props.add(key=k, value=v)
        onnx.save(model, str(target))
    log.info("wrote %s (onnxruntime static int8, calibrated on %d training clips)", out, len(clips))
    return {"onnx_int8": str(out)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asc_dist.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", action="store_true", help="write the student as ONNX (model.onnx beside it, or --out)")
    p.add_argument("--dcase-package", metavar="LABEL", default=None,
                   help="write a DCASE 2025 Task 1 inference package (e.g. Surname_INST_task1) into --out")
    p.add_argument("--model-file", default=None, help="the student to export: its folder (RUN/students/NAME) or its model.pt (required)")
    add_deprecated(p, "--model", "--model-file", dest="model_file")
    p.add_argument("--out", default=None, help="the .onnx file (default: model.onnx beside the checkpoint)")
    p.add_argument("--int8", action="store_true", help="also write onnxruntime's static int8 model (model_int8.onnx)")
    p.add_argument("--calib-clips", type=int, default=256, help="training clips for int8 calibration")
    add_data(p, store_only=True)
    add_verbose(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parse_requiring(build_parser(), argv, "--model-file")
    setup_logging(args.verbose)
    if args.calib_clips < 2:
        raise ConfigError("--calib-clips must be >= 2")
    if not args.onnx and not args.dcase_package:
        raise ConfigError("say what to export: --onnx and/or --dcase-package LABEL")
    if args.dcase_package:
        from asc_dist.ship.dcase_package import write_dcase_package

        if not args.out or args.onnx:
            raise ConfigError("--dcase-package writes a folder: give --out DIR (and export ONNX in a separate call)")
        folder = write_dcase_package(args.dcase_package, Path(args.model_file) if Path(args.model_file).is_dir() else Path(args.model_file).parent, args.out)
        print(json.dumps({"dcase_package": str(folder)}))
        return 0
    print(json.dumps(export_onnx(ExportConfig(model=args.model_file, out=args.out, int8=args.int8, calib_clips=args.calib_clips, store=args.store))))
    return 0

