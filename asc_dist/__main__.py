"""`python -m asc_dist`: every step with its command line; `--version`: the versions a bug report needs."""

from __future__ import annotations

import argparse
import platform

from asc_dist import __version__
from asc_dist.infra.stack import installed_versions, problem

STEPS = {  # python -m asc_dist.<step>, in the order a run uses them
    "data": "check, pack or synthesise a TAU-layout dataset",
    "teachers": "train N teachers in parallel with Ray and write their logits to Parquet",
    "fusion": "fit one weight per teacher and one bias per class on held-out logits",
    "students": "train one student with knowledge distillation (QAT and int8 optional)",
    "tune": "sweep student presets and KD lambdas with Ray Tune; register each preset's best",
    "study": "the paper's Tables IV, V and II with seeds and spreads",
    "pipeline": "everything above on one run folder, then RUN/report.md",
    "predict": "classify audio files with a shipped student (DCASE submission CSV)",
    "export": "ONNX files or a DCASE 2025 Task 1 inference package from a trained student",
    "complexity": "params, MACs and sizes of a zoo model by the DCASE rule",
    "tracking": "replay into MLflow what a tracking server that went away did not take",
    "runs": "open, pack, unpack or serve a run folder that was copied or moved",
    "ui": "the MLflow UI of a run, its URL landing on the sweep's runs table",
}


def version_report() -> str:
    names = ("torch", "torchaudio", "torchvision", "ray", "mlflow", "timm", "numpy", "pyarrow")
    lines = [f"asc-dist {__version__}"]
    lines += [f"{n} {v or 'not installed'}" for n, v in installed_versions(names).items()]
    lines.append(f"python {platform.python_version()} ({platform.system()} {platform.machine()})")
    lines.append(f"stack: {problem() or 'torch, torchaudio and torchvision form the pinned set'}")
    return "\n".join(lines)


def steps_help() -> str:
    width = max(map(len, STEPS))
    return "steps (python -m asc_dist.<step> --help for each):\n" + "\n".join(f"  {s:<{width}}  {what}" for s, what in STEPS.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asc_dist", description=__doc__, epilog=steps_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="store_true", help="asc-dist, torch, torchaudio, ray, mlflow versions")
    args = parser.parse_args(argv)
    print(version_report() if args.version else parser.format_help())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
