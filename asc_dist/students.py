"""`python -m asc_dist.students`: the command line of asc_dist/distill/student_cli.py."""

from asc_dist.cli import run_main
from asc_dist.distill.student_cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    run_main(main)
