"""The committed locks and pyproject.toml cannot drift apart: every requirement is locked at a version it allows."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCKS = {"requirements.lock": (), "requirements-dev.lock": ("dev",), "requirements-cluster.lock": ("cluster",), "requirements-onnx.lock": ("onnx",)}


def locked_versions(text: str) -> dict[str, set[str]]:
    """name -> versions pinned in a uv/pip-compile lock (a universal lock may pin one name per marker)."""
    pins: dict[str, set[str]] = {}
    for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", text, re.M):
        pins.setdefault(canonicalize_name(m.group(1)), set()).add(m.group(2))
    return pins


def drift(pyproject: dict, lock_text: str, extras: tuple[str, ...]) -> list[str]:
    """Every way the lock disagrees with pyproject.toml (empty when they agree)."""
    wanted = list(pyproject["project"]["dependencies"])
    for extra in extras:
        wanted += pyproject["project"]["optional-dependencies"][extra]
    pins = locked_versions(lock_text)
    problems = []
    for line in wanted:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req.name} is not in the lock")
            continue
        exact = [s.version for s in req.specifier if s.operator == "==" and "*" not in s.version]
        for version in pins[name]:
            if exact and version != exact[0] or not req.specifier.contains(version, prereleases=True):
                problems.append(f"{req.name}: lock has {version}, pyproject.toml asks {req.specifier}")
    return problems


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_agrees_with_pyproject(lock):
    text = (ROOT / lock).read_text()
    assert "--generate-hashes" in text.splitlines()[1], "the lock is made by ops/lock.sh, with hashes"
    assert drift(pyproject(), text, LOCKS[lock]) == []
    # every pinned package carries hashes, so pip installs exactly the files that were locked
    blocks = re.split(r"\n(?=[A-Za-z0-9])", text)
    assert all("--hash=sha256:" in b for b in blocks if re.match(r"[A-Za-z0-9_.\-]+==", b))


def test_the_trio_is_pinned_exactly():
    deps = {Requirement(d).name: Requirement(d) for d in pyproject()["project"]["dependencies"]}
    for name in ("torch", "torchaudio", "torchvision"):
        (spec,) = deps[name].specifier
        assert spec.operator == "==" and "*" not in spec.version, f"{name} must be an exact pin, not {spec}"


def test_editing_either_side_alone_is_caught():
    project, text = pyproject(), (ROOT / "requirements.lock").read_text()
    bumped = {**project, "project": {**project["project"], "dependencies": [
        "torchaudio==2.11.1" if d.startswith("torchaudio") else d for d in project["project"]["dependencies"]]}}
    assert drift(bumped, text, ()) == ["torchaudio: lock has 2.11.0, pyproject.toml asks ==2.11.1"]
    edited = text.replace("\ntorchaudio==2.11.0 ", "\ntorchaudio==2.11.1 ")
    assert edited != text
    assert drift(project, edited, ()) == ["torchaudio: lock has 2.11.1, pyproject.toml asks ==2.11.0"]
    dropped = re.sub(r"\ntimm==[^\n]*(\n    [^\n]*)*", "", text)
    assert drift(project, dropped, ()) == ["timm is not in the lock"]


def test_every_install_path_goes_through_a_lock():
    readme = (ROOT / "README.md").read_text()
    assert "pip install -r requirements.lock && .venv/bin/python -m pip install --no-deps -e ." in readme
    assert "pip install -r requirements-dev.lock && .venv/bin/python -m pip install --no-deps -e ." in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q -r requirements-dev.lock" in ci and "--no-deps -e ." in ci
    import yaml

    cluster = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert "./requirements-cluster.lock" in cluster["file_mounts"].values()
    setup = "\n".join(cluster["setup_commands"])
    assert "-r ~/asc-dist/requirements-cluster.lock" in setup and "--no-deps -e ~/asc-dist" in setup
    every = setup + "\n".join(cluster["head_setup_commands"] + cluster["worker_setup_commands"])
    assert not re.search(r"pip install[^\n]*(==|>=)", every), "cluster nodes install only what the lock pins"
