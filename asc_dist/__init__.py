"""asc-dist: distributed multi-teacher knowledge distillation for low-complexity acoustic scene classification."""

import sys as _sys

__version__ = "0.1.0"

# While `python -m asc_dist.<step>` imports this package, sys.argv[0] is "-m" (documented by Python). Check the
# torch/torchaudio/torchvision set then, before the step's own imports can die in a compiled library.
# Library use (Ray workers, tests, notebooks) pays nothing here, and `python -m asc_dist --version` reports a
# broken set instead of refusing to run.
if _sys.argv[:1] == ["-m"] and "asc_dist" not in getattr(_sys, "orig_argv", [])[1:3]:
    from asc_dist.infra.stack import exit_unless_matched as _exit_unless_matched

    _exit_unless_matched()
