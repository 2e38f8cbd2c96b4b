"""Run folders that travel: a run made on a cluster's shared disk opens on a laptop, copied or moved.

MLflow records absolute artifact locations (experiments, runs, registered model versions, logged models) in the
run's sqlite store, and asc-dist's JSON files record absolute paths of checkpoints; MLflow resolves them as
written, so a copy's `models:/NAME/1` would read (and `mlflow models serve` write into) the original folder.
The folder remembers where it was made (`.root`); opened from anywhere else, every recorded path under the old
root is re-rooted under the new one, in the copy only: the sqlite store in one transaction, each JSON and
Markdown file by temp name and rename. Every step that opens a run's own sqlite store does this first
(`asc_dist.infra.tracking.resolve_uri`), and `python -m asc_dist.runs open RUN` does it alone.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from pathlib import Path

from asc_dist.run.atomic import write_text_atomic

log = logging.getLogger(__name__)
ROOT_FILE = ".root"  # the absolute path the folder was last opened at
TEXT_SUFFIXES = (".json", ".md", ".yaml", ".jsonl")
SKIP_DIRS = ("mlartifacts", "ray_results", "checkpoints", "data")  # artifacts and scratch hold no paths a step reads back


def recorded_root(run_dir: Path) -> str | None:
    try:
        return (run_dir / ROOT_FILE).read_text().strip() or None
    except OSError:
        return None


def inferred_roots(run_dir: Path) -> set[str]:
    """For a folder made before `.root` existed: the folders its MLflow experiments store artifacts under."""
    db = run_dir / "mlflow.db"
    if not db.is_file():
        return set()
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = con.execute("SELECT artifact_location FROM experiments WHERE artifact_location LIKE 'file://%/mlartifacts'").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return set()
    return {r[0].removeprefix("file://").removesuffix("/mlartifacts") for r in rows}


def _writable(run_dir: Path) -> bool:
    return os.access(run_dir, os.W_OK)


def _reroot_db(db: Path, old: str, new: str) -> int:
    """Replace the old root in every text column of the MLflow store (schema-agnostic: MLflow 3 keeps artifact
    locations in several tables); returns the number of changed cells."""
    changed = 0
    pairs = [(f"file://{old}/", f"file://{new}/"), (f"{old}/", f"{new}/")]
    con = sqlite3.connect(db)
    try:
        with con:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
            for table in tables:
                columns = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")') if (r[2] or "").upper() in ("", "TEXT") or "CHAR" in (r[2] or "").upper()]
                for col in columns:
                    for a, b in pairs:
                        cur = con.execute(f'UPDATE "{table}" SET "{col}" = replace("{col}", ?, ?) WHERE instr("{col}", ?) > 0', (a, b, a))
                        changed += cur.rowcount
                    cur = con.execute(f'UPDATE "{table}" SET "{col}" = ? WHERE "{col}" = ?', (new, old))  # the run-folder tag itself
                    changed += cur.rowcount
    finally:
        con.close()
    return changed


def _reroot_files(run_dir: Path, old: str, new: str) -> int:
    """The old root, as a whole path component (not /tmp/run inside /tmp/run2), replaced in each text file."""
    pattern = re.compile(re.escape(old) + r"(?=[/\"'\s)\]`]|$)")
    changed = 0
    for dirpath, dirnames, filenames in os.walk(run_dir):
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) == run_dir and d in SKIP_DIRS)]
        for name in filenames:
            path = Path(dirpath) / name
            if path.suffix not in TEXT_SUFFIXES:
                continue
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError):
                continue
            replaced = pattern.sub(lambda _: new, text)
            if replaced != text:
                write_text_atomic(path, replaced)
                changed += 1
    return changed


def reroot(run_dir: str | os.PathLike) -> str | None:
    """Re-root a run folder opened somewhere other than where it was made; returns the old root if it did."""
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        return None
    new, recorded = str(run_dir), recorded_root(run_dir)
    if recorded == new:
        return None
    olds = sorted(({recorded} if recorded else inferred_roots(run_dir)) - {new})
    if not _writable(run_dir):
        if olds:
            log.warning("%s was made at %s and is read-only here: MLflow paths in it still point there", run_dir, olds[0])
        return None
    for old in olds:
        db = run_dir / "mlflow.db"
        cells = _reroot_db(db, old, new) if db.is_file() else 0
        files = _reroot_files(run_dir, old, new)
        log.info("run folder moved from %s: %d MLflow location(s) and %d file(s) re-rooted here", old, cells, files)
    write_text_atomic(run_dir / ROOT_FILE, new + "\n")
    return olds[0] if olds else None


def reroot_uri(uri: str) -> None:
    """Re-root the run folder behind a `sqlite:///RUN/mlflow.db` tracking URI (other stores are not folders)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if db.name == "mlflow.db" and (db.parent / ROOT_FILE).is_file():
            reroot(db.parent)
