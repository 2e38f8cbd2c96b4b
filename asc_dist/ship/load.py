"""Open a shipped student: an exported TorchScript file, a `model.pt` checkpoint, a student folder, or an
MLflow model URI (`models:/NAME/VERSION`, `runs:/RUN_ID/PATH`), as one waveform -> logits module.

An exported file carries what prediction needs in the file itself (`extra/asc_dist.json` inside the
TorchScript archive: classes, sample rate, clip length, int8 engine), so a model file alone is enough. The
int8 engine is set from it before the file loads (weights are re-packed for the engine on load).
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from asc_dist.errors import ConfigError
from asc_dist.run.layout import STUDENT_CHECKPOINT, STUDENT_INT8, device_folders

log = logging.getLogger(__name__)
META_NAME = "asc_dist.json"  # the TorchScript extra file holding the metadata
MODEL_FILES = (STUDENT_INT8, STUDENT_CHECKPOINT)  # what a student folder ships, best first


@dataclass
class ShippedModel:
    module: torch.nn.Module  # float32 waveforms [batch, samples] -> logits [batch, classes]
    classes: list[str]
    sample_rate: int
    clip_samples: int
    kind: str  # int8 | fp32
    source: str
    path: str = ""  # the local file it was read from (for an MLflow URI: the downloaded copy)

    def logits(self, waves: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(waves)


def read_metadata(path: Path) -> dict | None:
    """The metadata stored in an exported TorchScript file, or None (not TorchScript, or exported without)."""
    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as zf:
        names = [n for n in zf.namelist() if n.endswith(f"/extra/{META_NAME}")]
        return json.loads(zf.read(names[0])) if names else None


def is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())


def use_engine(engine: str | None) -> None:
    """The int8 engine the file was converted for, if this CPU has it; else the one export would pick here."""
    from asc_dist.nets.quantize import select_int8_engine

    if engine and engine in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = engine
    else:
        chosen = select_int8_engine()
        if engine:
            log.warning("int8 engine %s of the model is not available here; using %s", engine, chosen)


def load_model(spec: str, mlflow_uri: str | None = None) -> ShippedModel:
    if spec.startswith(("models:/", "runs:/", "mlflow-artifacts:/")):
        return _from_mlflow(spec, mlflow_uri)
    path = Path(spec)
    if path.is_dir():
        return _from_folder(path)
    if not path.is_file():
        raise ConfigError(f"--model-file {spec}: no such file or folder; give an exported model_int8.pt / model.pt, a student folder, or models:/NAME/VERSION")
    if path.suffix == ".onnx":
        return _from_onnx(path)
    if is_torchscript(path):
        return _from_torchscript(path)
    return _from_checkpoint(path)


class OnnxModule(torch.nn.Module):
    """An onnxruntime session behind the module interface predict uses (float32 waves in, logits out)."""

    def __init__(self, session):
        super().__init__()
        self.session = session

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"waves": waves.numpy().astype("float32", copy=False)})[0])


def _from_onnx(path: Path) -> ShippedModel:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError(f"{path} is ONNX: pip install -r requirements-onnx.lock for onnxruntime (the locked versions)") from None
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own error types
        raise ConfigError(f"{path} does not load in onnxruntime ({str(exc).splitlines()[0][:150]})") from None
    meta = session.get_modelmeta().custom_metadata_map
    if "classes" not in meta:
        raise ConfigError(f"{path} carries no class list; export it with `python -m asc_dist.export --onnx`")
    kind = "onnx-int8" if "int8" in path.name else "onnx-fp32"
    return ShippedModel(OnnxModule(session), json.loads(meta["classes"]), int(meta["sample_rate"]), int(meta["clip_samples"]), kind, str(path))


def _from_folder(folder: Path) -> ShippedModel:
    if (folder / "MLmodel").is_file():  # an MLflow pyfunc folder: the exported file is one of its artifacts
        inside = sorted((folder / "artifacts").glob("*.pt")) or sorted((folder / "artifacts").rglob("*.pt"))  # devices/ come second
        if inside:
            return load_model(str(inside[0]))
    for name in MODEL_FILES:
        if (folder / name).is_file():
            return load_model(str(folder / name))
    raise ConfigError(f"--model-file {folder}: the folder holds none of {', '.join(MODEL_FILES)}; give a student folder (RUN/students/NAME)")


def _from_torchscript(path: Path) -> ShippedModel:
    meta = read_metadata(path)
    if meta is None:  # exported before the metadata existed: borrow it from the checkpoint beside the file
        sibling = path.with_name(STUDENT_CHECKPOINT)
        if not sibling.is_file() or is_torchscript(sibling):
            raise ConfigError(f"{path} carries no class list (exported by an older asc-dist) and has no model.pt beside it; re-export it")
        meta = {**_checkpoint_meta(torch.load(sibling, map_location="cpu", weights_only=True)), "kind": "int8" if "int8" in path.name else "fp32"}
    use_engine(meta.get("engine"))
    try:
        module = torch.jit.load(str(path), map_location="cpu").eval()
    except RuntimeError as exc:
        raise ConfigError(f"{path} does not load as TorchScript ({str(exc).splitlines()[0][:150]})") from None
    return ShippedModel(module, list(meta["classes"]), int(meta["sample_rate"]), int(meta["clip_samples"]), meta.get("kind", "int8"), str(path), str(path))


def _checkpoint_meta(ckpt: dict) -> dict:
    from asc_dist.nets.features import STUDENT_MEL

    sr = int(ckpt.get("sample_rate", STUDENT_MEL.sample_rate))
    return {"classes": ckpt["classes"], "sample_rate": sr, "clip_samples": int(ckpt.get("clip_samples", sr))}


def _from_checkpoint(path: Path) -> ShippedModel:
    """A student's `model.pt` (weights, config, classes): rebuilt in fp32 with its front end."""
    from asc_dist.nets.features import FRONT_ENDS, LogMel
    from asc_dist.run.checkpoint import load_plain
    from asc_dist.ship.format import WaveToLogits
    from students.presets import build_student

    wanted = "give model_int8.pt / model.pt, model.onnx / model_int8.onnx, a student folder (RUN/students/NAME) or models:/NAME/VERSION"
    try:
        ckpt = load_plain(path)
    except ConfigError:  # not a torch file of tensors and plain data: not ours, and not the user's to delete
        raise ConfigError(f"--model-file {path} is not a model file asc-dist wrote; {wanted}") from None
    try:
        cfg = dict(ckpt["config"])  # a StudentConfig as a dict (asc_dist/distill/config.py)
        family, preset, norm = cfg["model"], cfg["preset"], cfg["norm"]
        meta = _checkpoint_meta(ckpt)
    except (KeyError, TypeError, RuntimeError, EOFError, OSError) as exc:
        what = f"no {exc} inside" if isinstance(exc, KeyError) else str(exc).splitlines()[0][:120]
        raise ConfigError(f"--model-file {path} is not a student checkpoint written by asc-dist ({what}); {wanted}") from None
    model = build_student(family, preset, n_classes=len(meta["classes"]), norm=norm)
    model.load_state_dict(ckpt["model"])
    front = LogMel(FRONT_ENDS[getattr(model, "front_end", "student")])
    return ShippedModel(WaveToLogits(front, model).eval(), list(meta["classes"]), meta["sample_rate"], meta["clip_samples"], "fp32", str(path), str(path))


def _from_mlflow(uri: str, mlflow_uri: str | None) -> ShippedModel:
    """Download the model folder behind `models:/NAME/VERSION` (or `@alias`) or `runs:/...` from the tracking
    server given, without touching MLflow's process-wide tracking URI (mlflow.set_tracking_uri also sets the
    environment variable, which would redirect every later run of this process and its children)."""
    import os
    import tempfile

    import mlflow

    tracking = mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking:
        raise ConfigError(f"--model-file {uri}: give --mlflow-uri (or MLFLOW_TRACKING_URI) of the tracking server that holds it")
    from asc_dist.infra.tracking import check_reachable
    from asc_dist.run.relocate import reroot_uri

    check_reachable(tracking)
    reroot_uri(tracking)  # a copied run folder: its registry points into the copy
    try:
        source = uri
        if uri.startswith("models:/"):
            name, _, ref = uri.removeprefix("models:/").partition("/")
            client = mlflow.MlflowClient(tracking, registry_uri=tracking)
            if ref.startswith("@"):
                version = client.get_model_version_by_alias(name, ref[1:])
            else:
                version = client.get_model_version(name, ref or "1")
            source = version.source
        local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tempfile.mkdtemp(prefix="asc-dist-model-"),
                                                    tracking_uri=tracking)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds; all mean: not there
        raise ConfigError(f"--model-file {uri}: MLflow at {tracking} cannot give it ({str(exc).splitlines()[0][:200]})") from None
    model = load_model(local)
    model.source = uri
    return model


def load_device_models(spec: str, general: ShippedModel) -> dict[str, ShippedModel]:
    """The device models beside a general student given as its folder, one of its files (RUN/students/NAME/devices/DEV/,
    `asc_dist.distill.devices`) or a registered model version carrying the set, each in the general model's form (the
    same file name): device -> model."""
    local = Path(general.path) if general.path else Path(spec)
    folder = local.parent if local.is_file() else local
    name = local.name if local.is_file() else STUDENT_INT8
    out = {}
    for sub in device_folders(folder).values():
        if (sub / name).is_file():
            model = load_model(str(sub / name))
            if model.classes != general.classes or model.sample_rate != general.sample_rate or model.clip_samples != general.clip_samples:
                raise ConfigError(f"{sub / name} does not match {general.source} (classes, rate or window); re-run the device fine-tuning")
            out[sub.name] = model
    return out
