"""Service: the one training loop (Trainer), batches, augmentations, device impulse responses, context windows, the KD loss, evaluation and metrics."""
