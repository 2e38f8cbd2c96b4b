"""`python -m asc_dist.export`: the command line of asc_dist/ship/export.py."""

from asc_dist.cli import run_main
from asc_dist.ship.export import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    run_main(main)
