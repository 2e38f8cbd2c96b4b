"""`python -m asc_dist --version`: versions for a bug report; with no option, the steps and their CLIs."""

from __future__ import annotations

import argparse

from asc_dist.stack import version_report

STEPS = ("data", "teachers", "fusion", "students", "tune", "complexity", "pipeline")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m asc_dist",
        description="Steps, one CLI each: " + ", ".join(f"python -m asc_dist.{s}" for s in STEPS),
    )
    parser.add_argument("--version", action="store_true", help="asc-dist, torch, torchaudio, ray, mlflow versions")
    args = parser.parse_args(argv)
    if args.version:
        print(version_report())
    else:
        parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
