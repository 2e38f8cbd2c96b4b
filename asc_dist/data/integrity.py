"""Checksums of the packed store's own files, so a flipped byte is an error, not a wrong model.

The store's fingerprint covers the dataset it was packed from, not the store: a corrupted `index.parquet` gave
logits keyed by mangled file names, a corrupted manifest renamed a class, a corrupted waveform a 5.6e35 sample.
`pack` writes into the manifest a BLAKE2b digest of the index, one per block of `ROWS_PER_BLOCK` waveform rows of
each split, and one of the manifest itself (over its other keys). Every step checks the manifest and the index
when it opens the store (a few milliseconds) and each waveform block the first time a process reads a row of it
(hashing runs at about 1 GB/s: well under a second for a 700 MB store, once per process); `data verify` checks
everything at once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from asc_dist.errors import DatasetError

ROWS_PER_BLOCK = 256
CHECKSUMS = "checksums"


def digest(data) -> str:
    return hashlib.blake2b(memoryview(data).cast("B"), digest_size=16).hexdigest()


def manifest_digest(manifest: dict) -> str:
    """The manifest's digest over every key but its own (canonical JSON)."""
    rest = {k: v for k, v in manifest.items() if k != CHECKSUMS}
    rest[CHECKSUMS] = {k: v for k, v in manifest.get(CHECKSUMS, {}).items() if k != "manifest"}
    return digest(json.dumps(rest, sort_keys=True).encode())


def corrupt(path: Path, what: str) -> DatasetError:
    store = path.parent
    return DatasetError(f"{path} is corrupted ({what}): the packed store cannot be trusted; re-pack it with "
                        f"`python -m asc_dist.data pack DATA --out {store} --force` (DATA: the dataset it was packed from)")  # fmt: skip


class BlockDigests:
    """Digests of an array's row blocks while it is written; `finish()` -> the manifest entry."""

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self._pending = b""
        self._row_bytes = 0
        self._rows = 0

    def add(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows)
        self._row_bytes = rows[0].nbytes if len(rows) else self._row_bytes
        self._pending += rows.tobytes()
        self._rows += len(rows)
        block = ROWS_PER_BLOCK * self._row_bytes
        while block and len(self._pending) >= block:
            self.blocks.append(digest(self._pending[:block]))
            self._pending = self._pending[block:]

    def finish(self) -> list[str]:
        if self._pending:
            self.blocks.append(digest(self._pending))
            self._pending = b""
        return self.blocks


def check_meta(store_dir: Path, manifest: dict) -> bool:
    """Verify the manifest and the index; False for a store packed before checksums existed (nothing to check)."""
    sums = manifest.get(CHECKSUMS)
    if sums is None:
        return False
    if sums.get("manifest") != manifest_digest(manifest):
        raise corrupt(store_dir / "manifest.json", "its checksum does not match its contents")
    index = store_dir / "index.parquet"
    try:
        data = index.read_bytes()
    except OSError as exc:
        raise corrupt(index, f"unreadable: {exc.strerror or exc}") from None
    if digest(data) != sums.get("index"):
        raise corrupt(index, "its checksum does not match the one written at pack time")
    return True


class RowVerifier:
    """Checks each block of a memory-mapped split array against its digest the first time a row of it is read."""

    def __init__(self, path: Path, source: np.ndarray, blocks: list[str]):
        self.path, self.source, self.blocks = path, source, blocks
        self.checked: set[int] = set()
        if len(blocks) != -(-len(source) // ROWS_PER_BLOCK):
            raise corrupt(path, f"{len(source)} rows where the manifest lists {len(blocks)} blocks of {ROWS_PER_BLOCK}")

    def __call__(self, rows: np.ndarray) -> None:
        for b in np.unique(np.asarray(rows) // ROWS_PER_BLOCK).tolist():
            if b not in self.checked:
                lo = b * ROWS_PER_BLOCK
                if digest(np.ascontiguousarray(self.source[lo : lo + ROWS_PER_BLOCK])) != self.blocks[b]:
                    raise corrupt(self.path, f"rows {lo}-{min(lo + ROWS_PER_BLOCK, len(self.source)) - 1} do not match their checksum")
                self.checked.add(b)

    def check_all(self) -> None:
        self(np.arange(0, len(self.source), ROWS_PER_BLOCK))
