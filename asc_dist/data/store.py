"""The packed waveform store: decode once, memory-map everywhere.

A store folder holds `manifest.json` (fingerprint, sample rate, clip length, classes), one `<split>.npy`
array per TAU split (`train` = fold1_train, `test` = fold1_evaluate; opened with `mmap_mode="r"`) and
`index.parquet` (filename, tau_split, row, label, identifier, city, device), with checksums of all three in the
manifest (asc_dist/data/integrity.py). The folder is built under a
temporary name and renamed into place, so an interrupted pack never leaves a store that looks complete.
The validation split is carved from `train` at load time (whole locations), so changing its fraction or
seed needs no re-pack.

Store dtypes (`PackConfig.dtype`, part of the fingerprint and the manifest): float32; float16 and int16 take half
the bytes. int16 is 16-bit PCM: samples in [-1, 1] scaled by 32768 (the convention soundfile reads PCM_16 with,
so a 16-bit source at the store's rate is kept exactly), rounded, clipped to the int16 range; every reader decodes
it to float32 with `x * (1 / 32768)`. The two half-size stores round differently: int16 in fixed steps of
2^-15 (about -90 dBFS, so quiet clips keep fewer significant bits), float16 relative to each sample (11 bits).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from asc_dist.data.check import check_dataset
from asc_dist.data.decode import decode_batch
from asc_dist.data.integrity import (
    CHECKSUMS,
    ROWS_PER_BLOCK,
    BlockDigests,
    RowVerifier,
    check_meta,
    corrupt,
    digest,
    manifest_digest,
)
from asc_dist.data.table import ClipTable, TauLayout, build_clip_table, carve_validation, read_layout
from asc_dist.errors import DatasetError
from asc_dist.run.atomic import atomic_path, remove_stale_temps
from asc_dist.run.diskspace import full_disk_means, require_free
from asc_dist.run.writable import require_writable

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
TAU_SPLITS = ("train", "test")
STORE_DTYPES = ("float32", "float16", "int16")
INT16_FULL_SCALE = 32768  # int16 sample / 32768 = float sample in [-1, 1)


@dataclass(frozen=True)
class PackConfig:
    sample_rate: int = 32000
    dtype: str = "float32"  # float16 or int16 halve the store for full TAU22 (29 GB -> 15 GB at 32 kHz)
    chunk: int = 256  # clips decoded and resampled together

    def check(self) -> None:
        if self.dtype not in STORE_DTYPES:
            raise DatasetError(f"store dtype {self.dtype!r} is not one of {', '.join(STORE_DTYPES)}; pass --dtype with one of them")


def encode_int16(waves: np.ndarray) -> tuple[np.ndarray, int]:
    """float audio [-1, 1] -> int16 (x 32768, rounded, clipped); returns the array and how many samples lay
    outside [-1, 1] (clipped; a sample at exactly +1.0 saturates to 32767 / 32768 and is not counted)."""
    clipped = int(np.count_nonzero(np.abs(waves) > 1.0))
    scaled = np.multiply(waves, np.float32(INT16_FULL_SCALE), dtype=np.float32)
    np.rint(scaled, out=scaled)
    np.clip(scaled, -INT16_FULL_SCALE, INT16_FULL_SCALE - 1, out=scaled)
    return scaled.astype(np.int16), clipped


def decode_rows(source: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Rows of a store array (any store dtype) into the float32 `out` of the same shape.

    int16: a cast, then an in-place scale by 2^-15 (exact) while the row is still in cache; one mixed-type
    `np.multiply(int16, float32, out=)` goes through numpy's buffered casting and ran at half the speed."""
    out[...] = source
    if source.dtype == np.int16:
        out *= np.float32(1 / INT16_FULL_SCALE)
    return out


def default_store_dir(root: str | Path, sample_rate: int) -> Path:
    return Path(root) / "packed" / f"sr{sample_rate}"


def fingerprint(layout: TauLayout, table: ClipTable, cfg: PackConfig, n_samples: int) -> str:
    """Hash of the file list (name, size, mtime), the csv contents and the audio parameters."""
    h = hashlib.sha256()
    h.update(json.dumps([FORMAT_VERSION, cfg.sample_rate, cfg.dtype, n_samples]).encode())
    root = layout.root
    for csv_path in [root / "meta.csv", *sorted((root / "evaluation_setup").glob("fold1_*.csv"))]:
        h.update(csv_path.read_bytes())
    for filename in table.filename:
        st = (root / filename).stat()
        h.update(f"{filename}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _read_manifest(store_dir: Path) -> dict | None:
    try:
        return json.loads((store_dir / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _verified(store_dir: Path, manifest: dict, full: bool) -> str | None:
    """Why an up-to-date-looking store must be rebuilt (None: it verifies): no checksums, or a mismatch."""
    try:
        if not check_meta(store_dir, manifest):
            return "it was packed before stores carried checksums"
        if full:
            WaveformStore(store_dir).verify()
    except DatasetError as exc:
        return str(exc).split(": the packed store")[0]
    return None


def packed_dtype(store_dir: str | Path) -> str | None:
    """The dtype of the store at `store_dir`; None where there is no readable store."""
    manifest = _read_manifest(Path(store_dir))
    dtype = manifest.get("dtype") if manifest else None
    return dtype if dtype in STORE_DTYPES else None


def pack(root: str | Path, out: str | Path | None = None, cfg: PackConfig = PackConfig(), force: bool = False,
         verify_rows: bool = False) -> tuple[Path, bool]:
    """Pack the dataset at `root`; returns (store folder, whether it was (re)built). A store with the same
    fingerprint is kept if its checksums hold (manifest and index; every waveform row too with `verify_rows`),
    rebuilt otherwise.

    Refuses (DatasetError) a dataset that `check` finds problems in, naming the first problem.
    """
    cfg.check()
    root = Path(root)
    out = Path(out) if out else default_store_dir(root, cfg.sample_rate)
    report = check_dataset(root)
    if not report.ok:
        kind, items = next(iter(report.problems.items()))
        raise DatasetError(
            f"{root} fails the dataset check ({sum(map(len, report.problems.values()))} problems; first: {kind}: "
            f"{', '.join(items[:3])}); run `python -m asc_dist.data check {root}` for the full list"
        )
    layout = read_layout(root)
    table = build_clip_table(layout, val_fraction=0.0)
    n_samples = int(round(report.expected["duration_s"] * cfg.sample_rate))
    fp = fingerprint(layout, table, cfg, n_samples)
    remove_stale_temps(out)  # a pack killed earlier (or stopped by a full disk) left its partial arrays here
    manifest = _read_manifest(out)
    if not force and manifest and manifest.get("fingerprint") == fp:
        why = _verified(out, manifest, verify_rows)
        if why is None:
            log.info("store %s is up to date (fingerprint %s, checksums hold); nothing to pack", out, fp)
            return out, False
        log.warning("store %s: %s; re-packing it", out, why)
    require_writable(out.parent, "the packed store's folder", "pass --store (pack: --out) to a writable folder for the packed store")
    need = len(table) * n_samples * np.dtype(cfg.dtype).itemsize
    require_free(out.parent, need, f"the packed store ({len(table):,} clips x {n_samples:,} samples, {cfg.dtype})",
                 "free space there or pass --store (pack: --out) to a disk with room")
    with full_disk_means(f"the disk under {out.parent} filled up while packing the store; the partial store was removed. "
                         "Free space there or pass --store (pack: --out) to a disk with room"), atomic_path(out) as tmp:
        tmp.mkdir()
        _write_store(tmp, root, table, cfg, n_samples, fp)
    return out, True


def _write_rows(path: Path, dtype: str, shape: tuple[int, int]):
    """An .npy file written front to back with plain writes (a full disk raises ENOSPC; a memory map would
    die of SIGBUS). Returns the open file, header written; the caller appends rows in order."""
    f = open(path, "wb")
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape})
    return f


def _write_store(tmp: Path, root: Path, table: ClipTable, cfg: PackConfig, n_samples: int, fp: str) -> None:
    rows = np.zeros(len(table), dtype=np.int64)
    start, total, done, clipped = time.perf_counter(), len(table), 0, 0
    blocks: dict[str, list[str]] = {}
    with ThreadPoolExecutor(max_workers=4) as pool:
        for split in TAU_SPLITS:
            idx = np.flatnonzero(table.split == split)
            rows[idx] = np.arange(len(idx))
            digests = BlockDigests()
            with _write_rows(tmp / f"{split}.npy", cfg.dtype, (len(idx), n_samples)) as rows_file:
                for lo in range(0, len(idx), cfg.chunk):
                    chunk = idx[lo : lo + cfg.chunk]
                    waves = decode_batch([root / f for f in table.filename[chunk]], cfg.sample_rate, n_samples, pool)
                    if cfg.dtype == "int16":
                        waves, n_clipped = encode_int16(waves)
                        clipped += n_clipped
                    packed = np.ascontiguousarray(waves, dtype=cfg.dtype)
                    rows_file.write(packed.tobytes())
                    digests.add(packed)
                    done += len(chunk)
                    rate = done / max(time.perf_counter() - start, 1e-9)
                    log.info("pack %s: %d/%d clips, %.0f clips/s, ETA %.0f s", split, done, total, rate, (total - done) / rate)
            blocks[split] = digests.finish()
    if clipped:
        log.warning("pack: %d samples (%.4f %% of %d) lay outside [-1, 1] and were clipped to the int16 range; "
                    "pack with --dtype float32 or float16 to keep them", clipped, 100 * clipped / (total * n_samples), total * n_samples)
    pq.write_table(
        pa.table(
            {
                "filename": table.filename.tolist(),
                "tau_split": table.split.tolist(),
                "row": rows,
                "label": table.label,
                "identifier": table.identifier.tolist(),
                "city": table.city.tolist(),
                "device": table.device.tolist(),
            }
        ),
        tmp / "index.parquet",
    )
    manifest = {
        "format_version": FORMAT_VERSION,
        "fingerprint": fp,
        "sample_rate": cfg.sample_rate,
        "samples": n_samples,
        "dtype": cfg.dtype,
        **({"int16_full_scale": INT16_FULL_SCALE, "clipped_samples": clipped} if cfg.dtype == "int16" else {}),
        "classes": table.classes,
        "splits": {s: int((table.split == s).sum()) for s in TAU_SPLITS},
        "source": str(root.resolve()),
        "pack_seconds": round(time.perf_counter() - start, 2),
        CHECKSUMS: {"rows_per_block": ROWS_PER_BLOCK, "index": digest((tmp / "index.parquet").read_bytes()), **blocks},
    }
    manifest[CHECKSUMS]["manifest"] = manifest_digest(manifest)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))


@dataclass
class SplitData:
    """The clips of one split and where their waveforms live (rows of one memory-mapped array).

    `source` holds the store's dtype (int16 stores: PCM, not float); read waveforms with `waves`."""

    name: str
    table: ClipTable
    source: np.ndarray
    rows: np.ndarray
    verify: RowVerifier | None = None  # checks each block of `source` against its checksum on first read

    def __len__(self) -> int:
        return len(self.rows)

    def of_device(self, device: str) -> "SplitData":
        """The clips of one recording device."""
        mask = self.table.device == device
        return SplitData(self.name, self.table.take(mask), self.source, self.rows[mask], self.verify)

    def waves(self, index: np.ndarray) -> np.ndarray:
        """float32 [len(index), samples]; reads rows in ascending order (sequential on disk).

        Row by row into the output (ops/bench_scale.py): a fancy-index gather of the memory map followed by a
        scattering assignment copied every clip twice and ran at 1/9 of a plain gather (17 K vs 153 K
        clips/s from the page cache); this loop runs at about 120 K. An int16 row is decoded to float32 as it is copied (`decode_rows`)."""
        rows = self.rows[index]
        if self.verify is not None:
            self.verify(rows)
        out = np.empty((len(rows), self.source.shape[1]), dtype=np.float32)
        for k in np.argsort(rows, kind="stable"):
            decode_rows(self.source[rows[k]], out[k])
        return out


class WaveformStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest = _read_manifest(self.path)
        if manifest is None and (self.path / "manifest.json").is_file():
            raise corrupt(self.path / "manifest.json", "not readable as JSON")
        if manifest is None:
            raise DatasetError(
                f"{self.path} is not a packed waveform store (no readable manifest.json); "
                "run `python -m asc_dist.data pack ROOT` first"
            )
        self.manifest = manifest
        if manifest.get("dtype", "float32") not in STORE_DTYPES:
            raise DatasetError(f"{self.path} holds {manifest.get('dtype')!r} waveforms; this version reads {', '.join(STORE_DTYPES)}: "
                               f"re-pack it with `python -m asc_dist.data pack ROOT --out {self.path} --force`")
        checked = self.verified = check_meta(self.path, manifest)
        if not checked:
            log.warning("store %s was packed before stores carried checksums: its files are not verified; re-pack it with "
                        "`python -m asc_dist.data pack DATA --out %s --force`", self.path, self.path)
        index = pq.read_table(self.path / "index.parquet").to_pydict()
        self.index = {k: np.array(v, dtype=object if isinstance(v[0], str) else None) for k, v in index.items()} if index["filename"] else {}
        self._arrays, self._verifiers = {}, {}
        for s in TAU_SPLITS:
            path = self.path / f"{s}.npy"
            try:
                self._arrays[s] = np.load(path, mmap_mode="r")
            except (ValueError, OSError) as exc:
                raise corrupt(path, f"not a readable array: {str(exc).splitlines()[0][:100]}") from None
            if checked:
                self._verifiers[s] = RowVerifier(path, self._arrays[s], manifest[CHECKSUMS][s])

    def verify(self) -> None:
        """Every waveform block against its checksum (the manifest and index were checked on open)."""
        for verifier in self._verifiers.values():
            verifier.check_all()

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def sample_rate(self) -> int:
        return int(self.manifest["sample_rate"])

    def table(self, val_fraction: float = 0.15, seed: int = 0) -> ClipTable:
        idx = self.index
        split = idx["tau_split"].copy()
        is_train = split == "train"
        val = carve_validation(idx["identifier"][is_train], idx["label"][is_train].astype(np.int64), val_fraction, seed)
        split[np.flatnonzero(is_train)[val]] = "val"
        return ClipTable(
            self.classes, idx["filename"], idx["label"].astype(np.int64), idx["identifier"], idx["city"], idx["device"], split
        )

    def split(self, name: str, val_fraction: float = 0.15, seed: int = 0) -> SplitData:
        table = self.table(val_fraction, seed)
        mask = table.split == name
        tau = "test" if name == "test" else "train"
        return SplitData(name, table.take(mask), self._arrays[tau], self.index["row"][mask].astype(np.int64), self._verifiers.get(tau))
