"""Stage: train N teachers in parallel with Ray Tune and write their logits (`python -m asc_dist.teachers`)."""
