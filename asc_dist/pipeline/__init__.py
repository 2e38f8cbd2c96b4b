"""Stage: every step in order on one run folder, then its report (`python -m asc_dist.pipeline`)."""
