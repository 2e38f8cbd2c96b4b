"""`python -m asc_dist.export --dcase-package LABEL --model-file STUDENT --out DIR`: a DCASE 2025 Task 1 inference
package in the shape the organisers ask for (CPJKU/dcase2025_task1_inference): an installable package LABEL with
the submission module LABEL_1 (`asc_dist/ship/dcase_template.py`: load_model, load_inputs, get_model_for_device,
predict), `resources/dummy.wav`, requirements.txt, setup.py and a test_complexity.py that measures.

Models: the student's general int8 net and, when it was trained with --device-epochs, one per training device
(`asc_dist.distill.devices`), each in the open int8 form (`asc_dist.ship.open_int8`: int8 weights as int8
parameters, so the organisers' check counts their bytes and MACs), behind one shared TorchScript front end
(waveform -> log-mel, no parameters). `get_model_for_device` returns a device's own model, the general one for
devices without one (s4-s6, unknown names).
"""

from __future__ import annotations

import json
import re
import shutil
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from asc_dist.errors import ConfigError
from asc_dist.run.atomic import atomic_path
from asc_dist.run.layout import STUDENT_INT8, STUDENT_INT8_OPEN, device_folders

SETUP = '''from setuptools import find_packages, setup

setup(name="{label}", version="1.0", packages=find_packages(),
      package_data={{"{label}": ["ckpts/*.pt", "resources/*.json", "resources/*.wav"]}},
      install_requires=open("requirements.txt").read().split())
'''
FRONT = "front.pt"  # the package's ckpts/: front.pt, general.pt, device_<DEV>.pt
GENERAL = "general.pt"
DUMMY_SECONDS, DUMMY_RATE = 1.0, 44_100  # a TAU-like clip (44.1 kHz, as the dataset ships) for the complexity check


def device_file(device: str) -> str:
    return f"device_{device}.pt"


def shipped_nets(student: Path) -> dict[str, Path]:
    """The open int8 nets of a student folder: "general" and one per device copy (name -> file)."""
    nets = {"general": student / STUDENT_INT8_OPEN}
    for dev, folder in device_folders(student).items():
        nets[dev] = folder / STUDENT_INT8_OPEN
    missing = [str(p) for p in nets.values() if not p.is_file()]
    if missing:
        raise ConfigError(f"{missing[0]} is missing (written by int8 QAT since this version): re-train the student "
                          f"with --qat-epochs N (and its device copies: --general {student} --device-epochs N)")
    return nets


def traced_front(front_name: str, clip_samples: int) -> torch.jit.ScriptModule:
    """The student's front end (waveform [batch, samples] -> log-mel) as TorchScript: it loads with torch alone."""
    import warnings

    from asc_dist.nets.features import FRONT_ENDS, LogMel

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(LogMel(FRONT_ENDS[front_name]).eval(), torch.zeros(1, clip_samples), check_trace=False)


def measure_package(folder: str | Path) -> dict:
    """Every model of a written package measured as the organisers do (`asc_dist.nets.complexity.measure_as_shipped`)
    on one window of waveform: name -> numbers."""
    from asc_dist.nets.complexity import measure_as_shipped
    from asc_dist.ship.format import WaveToLogits
    from asc_dist.ship.open_int8 import load_open

    ckpts = sorted(Path(folder).glob(f"*/ckpts/{FRONT}"))
    if not ckpts:
        raise ConfigError(f"{folder} is not a DCASE package written by asc-dist (no LABEL/ckpts/{FRONT})")
    ckpts = ckpts[0].parent
    meta = json.loads((ckpts.parent / "resources" / "model.json").read_text())
    front = torch.jit.load(str(ckpts / FRONT), map_location="cpu").eval()
    names = {"general": GENERAL, **{d: device_file(d) for d in meta["devices"]}}
    return {name: measure_as_shipped(WaveToLogits(front, load_open(ckpts / file)).eval(), (1, meta["clip_samples"]))
            for name, file in names.items()}  # fmt: skip


def measure_student(student: str | Path) -> dict:
    """The models a package of this student folder would ship, measured as `measure_package` does."""
    from asc_dist.nets.complexity import measure_as_shipped
    from asc_dist.ship.format import WaveToLogits
    from asc_dist.ship.load import read_metadata
    from asc_dist.ship.open_int8 import load_open

    student = Path(student)
    meta = read_metadata(student / STUDENT_INT8) if (student / STUDENT_INT8).is_file() else None
    if meta is None:
        raise ConfigError(f"{student} has no int8 export (model_int8.pt); train the student with --qat-epochs first")
    front = traced_front("student", int(meta["clip_samples"]))
    return {name: measure_as_shipped(WaveToLogits(front, load_open(path)).eval(), (1, int(meta["clip_samples"])))
            for name, path in shipped_nets(student).items()}  # fmt: skip


def _dummy_wav(path: Path) -> None:
    import soundfile as sf

    rng = np.random.default_rng(0)
    sf.write(str(path), (0.05 * rng.standard_normal(int(DUMMY_SECONDS * DUMMY_RATE))).astype(np.float32), DUMMY_RATE, subtype="PCM_16")


def write_dcase_package(label: str, student: str | Path, out: str | Path) -> Path:
    """The package folder `out` (replaced whole, atomically) for the student folder `student`."""
    from asc_dist.nets.complexity import MAX_MACS, MAX_PARAM_BYTES
    from asc_dist.ship.load import read_metadata

    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9]+_task1", label):
        raise ConfigError(f"--dcase-package {label!r}: a DCASE label looks like Surname_INSTITUTION_task1")
    student = Path(student)
    int8_file = student / STUDENT_INT8
    meta = read_metadata(int8_file) if int8_file.is_file() else None
    if meta is None:
        raise ConfigError(f"{student} has no int8 export with metadata (model_int8.pt); train the student with --qat-epochs first")
    nets = shipped_nets(student)
    devices = [d for d in nets if d != "general"]
    requirements = "\n".join(f"{p}=={version(p)}" for p in ("torch", "torchaudio", "soundfile", "numpy", "torchinfo")) + "\n"
    with atomic_path(out) as tmp:
        pkg = tmp / label
        (pkg / "ckpts").mkdir(parents=True)
        (pkg / "resources").mkdir()
        (pkg / "__init__.py").write_text("")
        (pkg / "resources" / "__init__.py").write_text("")  # importlib.resources reads LABEL.resources/dummy.wav
        shutil.copy(Path(__file__).with_name("dcase_template.py"), pkg / f"{label}_1.py")
        shutil.copy(Path(__file__).with_name("open_int8.py"), pkg / "open_int8.py")
        shutil.copy(Path(__file__).with_name("dcase_complexity.py"), tmp / "test_complexity.py")
        traced_front("student", int(meta["clip_samples"])).save(str(pkg / "ckpts" / FRONT))
        for name, path in nets.items():
            shutil.copy(path, pkg / "ckpts" / (GENERAL if name == "general" else device_file(name)))
        _dummy_wav(pkg / "resources" / "dummy.wav")
        (pkg / "resources" / "model.json").write_text(json.dumps({**meta, "devices": devices}, indent=2))
        (tmp / "requirements.txt").write_text(requirements)
        (tmp / "setup.py").write_text(SETUP.format(label=label))
        measured = measure_package(tmp)
        over = {k: v for k, v in measured.items() if not v["within_limits"]}
        if over:
            name, m = next(iter(over.items()))
            raise ConfigError(f"the {name} model is over the DCASE limits ({m['param_bytes']} parameter bytes of {MAX_PARAM_BYTES}, "
                              f"{m['macs']} MACs of {MAX_MACS}); choose a smaller preset")
        (pkg / "resources" / "model.json").write_text(json.dumps({**meta, "devices": devices, "complexity": measured}, indent=2))
    return Path(out)
