"""`python -m asc_dist.tune`: the command line of asc_dist/distill/sweep.py."""

from asc_dist.cli import run_main
from asc_dist.distill.sweep import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    run_main(main)
