"""The study: DS-FlexiNet's (arXiv 2412.20722) Tables IV, V and II reproduced in shape on a run's teachers (`python -m asc_dist.study`)."""
