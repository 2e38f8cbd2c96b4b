"""`python -m asc_dist.predict`: the command line of asc_dist/ship/predict.py."""

from asc_dist.cli import run_main
from asc_dist.ship.predict import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    run_main(main)
