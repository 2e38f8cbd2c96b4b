"""`python -m asc_dist.fusion`: the command line of asc_dist/fuse/fusion.py."""

from asc_dist.cli import run_main
from asc_dist.fuse.fusion import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    run_main(main)
