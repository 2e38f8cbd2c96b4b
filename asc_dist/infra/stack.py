"""The installed torch / torchaudio / torchvision must be the matched set that pyproject.toml pins.

torchaudio's and torchvision's compiled parts load only with the torch build they were made for: a patch
release of one member (torchaudio 2.11.1 beside torch 2.11.0) dies at import with `undefined symbol`. Every
CLI checks this first (see `asc_dist/__init__.py`) and ends with one `error:` line naming the installed
versions and the command that repairs the environment, instead of a traceback from deep inside an import.
The pins are read from the installed asc-dist's own metadata, so pyproject.toml stays the one place they live.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import re
import sys
from pathlib import Path

TRIO = ("torch", "torchaudio", "torchvision")
LOCK = Path(__file__).resolve().parents[2] / "requirements.lock"


def installed_versions(names: tuple[str, ...] = TRIO) -> dict[str, str | None]:
    """Versions as pip sees them (no import); None for a package that is not installed."""
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def pinned_versions(requirements: list[str] | None = None) -> dict[str, str]:
    """The exact `==X` pins of the trio among asc-dist's requirements (empty when asc-dist is not installed)."""
    if requirements is None:
        try:
            requirements = metadata.requires("asc-dist") or []
        except metadata.PackageNotFoundError:
            return {}
    pins = {}
    for req in requirements:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;,*]+)\s*", req)
        if m and m.group(1).lower() in TRIO:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def _public(version: str) -> str:
    """'2.11.0+cu130' -> '2.11.0': the local build tag names the CUDA flavour, not a different release."""
    return version.split("+", 1)[0]


def repair_command() -> str:
    python = sys.executable or "python"
    if LOCK.is_file():
        return f"{python} -m pip install -r {LOCK}"
    pins = pinned_versions()
    return f"{python} -m pip install " + " ".join(f"{n}=={v}" for n, v in sorted(pins.items()))


def mismatch(installed: dict[str, str | None], pins: dict[str, str]) -> str | None:
    """A one-line message when the installed trio differs from the pins, else None."""
    wrong = [n for n, v in pins.items() if installed.get(n) is None or _public(installed[n]) != v]
    if not wrong:
        return None
    have = ", ".join(f"{n} {installed.get(n) or 'missing'}" for n in TRIO)
    want = ", ".join(f"{n} {pins[n]}" for n in TRIO if n in pins)
    return (f"torch, torchaudio and torchvision are not the matched set asc-dist needs: installed {have}; "
            f"needed {want}. Repair the environment with: {repair_command()}")


def compiled_import_failure() -> str | None:
    """Import the compiled parts; a message naming the versions when one fails to load."""
    for name in ("torchaudio", "torchvision"):
        try:
            importlib.import_module(name)
        except (ImportError, OSError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            have = ", ".join(f"{n} {v or 'missing'}" for n, v in installed_versions().items())
            return (f"{name} failed to load its compiled part ({first[:200]}); installed {have}. "
                    f"Repair the environment with: {repair_command()}")
    return None


def problem() -> str | None:
    return mismatch(installed_versions(), pinned_versions()) or compiled_import_failure()


def exit_unless_matched() -> None:
    """For CLIs: one `error:` line and exit 2 when the stack cannot work."""
    message = problem()
    if message:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
