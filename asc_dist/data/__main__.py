"""`python -m asc_dist.data {check,pack,verify,synth,tauify}`: inspect, pack, verify, generate and convert TAU-layout datasets."""

from __future__ import annotations

import argparse
import json
import logging

from asc_dist.cli import add_dirs, add_verbose, parse_list, run_main, setup_logging
from asc_dist.data.tauify import TauifyConfig, tauify
from asc_dist.errors import DatasetError

log = logging.getLogger("asc_dist.data")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m asc_dist.data", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="count clips per split x device x scene and list every problem (exit 2 if any)")
    c.add_argument("root", help="dataset folder holding meta.csv, audio/ and evaluation_setup/")
    c.add_argument("--sr", type=int, default=None, help="expected sample rate (default: the most common one)")
    c.add_argument("--channels", type=int, default=None, help="expected channel count (default: the most common one)")
    c.add_argument("--duration", type=float, default=None, help="expected clip duration in s (default: the most common one)")
    k = sub.add_parser("pack", help="decode once (mono, resampled) into a memory-mapped waveform store")
    k.add_argument("root")
    k.add_argument("--sr", type=int, default=32000, help="target sample rate (default 32000)")
    k.add_argument("--out", default=None, help="store folder (default ROOT/packed/sr<SR>)")
    k.add_argument("--dtype", choices=("float32", "float16", "int16"), default="float32",
                   help="sample type on disk (default float32); float16 and int16 (16-bit PCM) take half the bytes, "
                        "decoded to float32 on read")  # = audio.store.STORE_DTYPES, not imported here: it loads torch
    k.add_argument("--force", action="store_true", help="re-pack even when the fingerprint matches")
    v = sub.add_parser("verify", help="check every file of a packed store against the checksums written at pack time (exit 2 on a mismatch)")
    v.add_argument("store", help="packed store folder (e.g. DATA/packed/sr32000)")
    s = sub.add_parser("synth", help="generate the embedded synthetic TAU-format dataset")
    s.add_argument("--out", required=True, help="folder to create")
    s.add_argument("--clips-per-device", type=int, default=None, help="segments per device (default: the generator's)")
    s.add_argument("--seed", type=int, default=0)
    add_dirs(s)
    s.add_argument("--device-mix", choices=("balanced", "tau"), default="balanced",
                   help="tau: device a holds 72 %% of the train clips, as in TAU22 (DIR augments a only)")
    u = sub.add_parser("tauify", help="your own labelled recordings as a TAU-layout dataset (1-s parts, group-disjoint splits, device variants)")
    d = TauifyConfig
    u.add_argument("src", help="folder the labels CSV's file paths are relative to")
    u.add_argument("out", help="dataset folder to create (replaced only if tauify wrote it)")
    u.add_argument("--labels", default=d.labels, help="labels CSV (comma- or tab-separated; default SRC/meta.csv)")
    u.add_argument("--file-column", default=d.file_column)
    u.add_argument("--label-column", default=d.label_column)
    u.add_argument("--group-column", default=d.group_column, help="recordings of one group never straddle a split (e.g. freesound_id)")
    u.add_argument("--test-column", default=d.test_column, help="with --test-values: the rows that form the test split (e.g. fold)")
    u.add_argument("--test-values", default=None, help="comma-separated values of --test-column for the test split (e.g. 3)")
    u.add_argument("--test-fraction", type=float, default=d.test_fraction, help="without --test-column: this share of the groups, seeded")
    u.add_argument("--city", default=d.city, help="the city field of the clip names (default: SRC's folder name)")
    add_dirs(u)
    u.add_argument("--train-devices", default=",".join(d.train_devices), help="comma-separated devices of both splits (one response each)")
    u.add_argument("--test-devices", default=",".join(d.test_devices), help="comma-separated devices of the test split only")
    u.add_argument("--sr", type=int, default=d.sample_rate, help=f"sample rate to write (default {d.sample_rate})")
    u.add_argument("--part-s", type=float, default=d.part_s, help="seconds per part (default 1)")
    u.add_argument("--seed", type=int, default=d.seed)
    u.add_argument("--skip-short", action="store_true", help="skip recordings shorter than one part instead of refusing")
    for sp in (c, k, v, s, u):
        add_verbose(sp)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.command == "check":
        from asc_dist.data.check import check_dataset

        report = check_dataset(args.root, args.sr, args.channels, args.duration)
        print(report.format())
        return 0 if report.ok else 2
    if args.command == "pack":
        from asc_dist.data.store import PackConfig, WaveformStore, pack

        store_dir, built = pack(args.root, args.out, PackConfig(sample_rate=args.sr, dtype=args.dtype), force=args.force, verify_rows=True)
        store = WaveformStore(store_dir)
        print(json.dumps({"store": str(store_dir), "packed": built, **{k: store.manifest[k] for k in ("fingerprint", "sample_rate", "samples", "dtype", "splits")}}))
        return 0
    if args.command == "verify":
        import time

        from asc_dist.data.store import WaveformStore

        start = time.perf_counter()
        store = WaveformStore(args.store)
        if not store.verified:
            raise DatasetError(f"{args.store} was packed before stores carried checksums: nothing to verify against; re-pack it with "
                               f"`python -m asc_dist.data pack DATA --out {args.store} --force`")
        store.verify()
        print(json.dumps({"store": args.store, "verified": True, "clips": sum(store.manifest["splits"].values()),
                          "seconds": round(time.perf_counter() - start, 2)}))
        return 0
    if args.command == "synth":
        from asc_dist.data.synth import SynthConfig, generate

        kwargs = {"seed": args.seed, "dirs": args.dirs, "device_mix": args.device_mix}
        if args.clips_per_device is not None:
            if args.clips_per_device < 1:
                raise DatasetError(f"--clips-per-device must be >= 1, got {args.clips_per_device}")
            kwargs["clips_per_device"] = args.clips_per_device
        from asc_dist.run.writable import require_writable

        require_writable(args.out, "the dataset folder", "pass --out to a folder you can write")
        summary = generate(args.out, SynthConfig(**kwargs))
        print(summary)
        return 0
    if args.command == "tauify":
        from dataclasses import asdict

        summary = tauify(TauifyConfig(
            src=args.src, out=args.out, labels=args.labels, file_column=args.file_column, label_column=args.label_column,
            group_column=args.group_column, test_column=args.test_column, test_values=tuple(parse_list(args.test_values, flag="--test-values") or ()),
            test_fraction=args.test_fraction, city=args.city, dirs=args.dirs, train_devices=tuple(parse_list(args.train_devices, flag="--train-devices")),
            test_devices=tuple(parse_list(args.test_devices, flag="--test-devices")), sample_rate=args.sr, part_s=args.part_s,
            seed=args.seed, skip_short=args.skip_short))  # fmt: skip
        print(json.dumps(asdict(summary)))
        return 0
    return 2


if __name__ == "__main__":
    run_main(main)
