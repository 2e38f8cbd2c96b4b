"""asc-dist: distributed multi-teacher knowledge distillation for low-complexity acoustic scene classification."""

__version__ = "0.1.0"
