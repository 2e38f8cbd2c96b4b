"""Service: what turns a zoo network into a model: the log-mel front ends, int8 conversion and TorchScript export, complexity (params, MACs)."""
