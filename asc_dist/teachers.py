"""`python -m asc_dist.teachers`: the command line of asc_dist/teach/driver.py."""

from asc_dist.cli import run_main
from asc_dist.teach.driver import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    run_main(main)
