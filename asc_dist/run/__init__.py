"""Service: everything inside a run folder: its layout (every path), the one-writer lock, atomic writes, free space, trial checkpoints, the logits/targets Parquet contracts."""
