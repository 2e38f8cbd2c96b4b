"""The study: the seed paper's Tables IV, V and II reproduced in shape on a run's teachers (`python -m asc_dist.study`)."""
