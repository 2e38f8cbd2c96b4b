"""`python -m asc_dist.export --dcase-package LABEL --model-file STUDENT --out DIR`: a DCASE 2025 Task 1 inference
package, in the shape the challenge asks submitters for (CP-JKU's dcase2025_task1_inference): an installable
package LABEL with the submission module LABEL_1 (`asc_dist/ship/dcase_template.py`: load_model, load_inputs,
get_model_for_device, predict), the int8 checkpoint inside, requirements.txt, setup.py and test_complexity.py.
"""

from __future__ import annotations

import json
import re
import shutil
from importlib.metadata import version
from pathlib import Path

from asc_dist.errors import ConfigError
from asc_dist.run.atomic import atomic_path
from asc_dist.run.layout import STUDENT_CHECKPOINT, STUDENT_INT8

SETUP = '''from setuptools import find_packages, setup

setup(name="{label}", version="1.0", packages=find_packages(),
      package_data={{"{label}": ["ckpts/*.pt", "resources/*.json"]}}, install_requires=open("requirements.txt").read().split())
'''

COMPLEXITY = '''"""Complexity of the packaged model against the DCASE limits (counted by asc-dist at export: torchinfo on the
fp32 student, one byte per int8 parameter). Exits 1 if over a limit."""
import json
import sys
from pathlib import Path

c = json.loads((Path(__file__).resolve().parent / "{label}" / "resources" / "model.json").read_text())["complexity"]
print(json.dumps(c, indent=2))
sys.exit(0 if c["param_bytes_int8"] <= c["max_param_bytes"] and c["macs"] <= c["max_macs"] else 1)
'''


def write_dcase_package(label: str, student: str | Path, out: str | Path) -> Path:
    """The package folder `out` (replaced whole, atomically) for the student folder `student`."""
    from asc_dist.nets.complexity import MAX_MACS, MAX_PARAM_BYTES, measure
    from asc_dist.ship.load import load_model, read_metadata

    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9]+_task1", label):
        raise ConfigError(f"--dcase-package {label!r}: a DCASE label looks like Surname_INSTITUTION_task1")
    student = Path(student)
    int8_file = student / STUDENT_INT8
    meta = read_metadata(int8_file) if int8_file.is_file() else None
    if meta is None:
        raise ConfigError(f"{student} has no int8 export with metadata (model_int8.pt); train the student with --qat-epochs first")
    fp32 = load_model(str(student / STUDENT_CHECKPOINT)).module.model  # the student behind its front end
    cx = measure(fp32)
    model_json = {**meta, "complexity": {"params": cx.params, "macs": cx.macs, "param_bytes_int8": cx.int8_bytes,
                                         "max_param_bytes": MAX_PARAM_BYTES, "max_macs": MAX_MACS}}
    requirements = "\n".join(f"{p}=={version(p)}" for p in ("torch", "torchaudio", "soundfile", "numpy")) + "\n"
    with atomic_path(out) as tmp:
        pkg = tmp / label
        (pkg / "ckpts").mkdir(parents=True)
        (pkg / "resources").mkdir()
        (pkg / "__init__.py").write_text("")
        shutil.copy(Path(__file__).with_name("dcase_template.py"), pkg / f"{label}_1.py")
        shutil.copy(int8_file, pkg / "ckpts" / "model_int8.pt")
        (pkg / "resources" / "model.json").write_text(json.dumps(model_json, indent=2))
        (tmp / "requirements.txt").write_text(requirements)
        (tmp / "setup.py").write_text(SETUP.format(label=label))
        (tmp / "test_complexity.py").write_text(COMPLEXITY.format(label=label))
    return Path(out)
