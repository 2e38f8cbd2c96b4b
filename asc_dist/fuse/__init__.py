"""Stage: fit one weight per teacher and one bias per class on held-out logits (`python -m asc_dist.fusion`)."""
