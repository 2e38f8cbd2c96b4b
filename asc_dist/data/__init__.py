"""TAU-layout datasets: clip table, splits, validation carve-out, checks, packing and the synthetic generator."""
