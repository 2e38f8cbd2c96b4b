"""The best student of each preset as an MLflow model: a pyfunc around the exported file, registered as
`asc-dist-<model>-<preset>` with its accuracies, size and complexity as version tags.

Input: float32 mono waveforms [batch, samples] at the model's rate (one window each); output: one
probability column per class. `mlflow models serve -m models:/asc-dist-dsflexinet-sm2/1 --env-manager local`
serves it; `python -m asc_dist.predict --model-file models:/...` predicts files with it.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import mlflow.pyfunc
import numpy as np

log = logging.getLogger(__name__)
MODEL_CODE = Path(__file__).with_name("mlflow_model_code.py")  # what MLflow runs to build the pyfunc ("models from code")


with warnings.catch_warnings():  # MLflow asks for type hints at class creation; the signature says it all
    warnings.filterwarnings("ignore", message=".*type hints.*")

    class StudentPyfunc(mlflow.pyfunc.PythonModel):
        """The pyfunc flavour of a shipped student (the exported TorchScript file is its one artifact)."""

        def load_context(self, context):
            from asc_dist.ship.load import load_model

            self.model = load_model(context.artifacts["model"])

        def predict(self, context, model_input, params=None):
            import pandas as pd
            import torch

            if isinstance(model_input, dict):  # a named tensor input
                model_input = next(iter(model_input.values()))
            waves = np.asarray(model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input, dtype=np.float32)
            if waves.ndim == 1:
                waves = waves[None]
            probs = torch.softmax(self.model.logits(torch.from_numpy(waves)).float(), dim=1).numpy()
            return pd.DataFrame(probs.astype(np.float64), columns=self.model.classes)


def _requirements() -> list[str]:
    """The stack the model was exported with (asc-dist itself is installed from its checkout; serve with
    `--env-manager local` in its environment)."""
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "torchaudio", "numpy", "pandas", "soundfile", "mlflow")]


def registered_name(model: str, preset: str) -> str:
    return f"asc-dist-{model}-{preset}"


def register_student(model_file: str | Path, example: np.ndarray, run_id: str, uri: str, name: str, tags: dict,
                     devices: dict[str, Path] | None = None) -> int:
    """Log the pyfunc under the run's `model` artifact and register it; returns the new version number.

    `devices` (device -> its int8 file): the student's device copies travel in the same version, under
    artifacts/devices/DEV/: a set trained together is deployed together (`predict --device auto` on the
    version's URI routes by device; the served pyfunc, whose input carries no device, runs the general model)."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    from asc_dist.errors import ConfigError
    from asc_dist.ship.load import load_model, read_metadata

    if read_metadata(Path(model_file)) is None:
        raise ConfigError(f"{model_file} carries no metadata (classes, rate): only files exported by this asc-dist are registered")
    shipped = load_model(str(model_file))
    signature = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, shipped.clip_samples))]),
                               outputs=Schema([ColSpec("double", c) for c in shipped.classes]))
    client = mlflow.MlflowClient(uri)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        artifacts = {"model": str(model_file)}
        if devices:
            import shutil

            for dev, file in devices.items():
                (Path(tmp) / "devices" / dev).mkdir(parents=True)
                shutil.copy(file, Path(tmp) / "devices" / dev / Path(model_file).name)
            artifacts["devices"] = str(Path(tmp) / "devices")
            tags = {**tags, "devices": ",".join(devices)}
        mlflow.pyfunc.save_model(str(folder), python_model=str(MODEL_CODE), artifacts=artifacts,
                                 signature=signature, input_example=example.astype(np.float32)[None], pip_requirements=_requirements(),
                                 metadata={"classes": shipped.classes, "sample_rate": shipped.sample_rate, "clip_samples": shipped.clip_samples})
        client.log_artifacts(run_id, str(folder), "model")
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name, description="asc-dist student: float32 waveform windows in, class probabilities out")
    version = client.create_model_version(name, source, run_id=run_id, tags={k: str(v) for k, v in tags.items() if v is not None})
    log.info("registered %s version %s (models:/%s/%s)", name, version.version, name, version.version)
    return int(version.version)
