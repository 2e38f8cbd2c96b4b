"""Stage: the shipped format (waveform in, logits out, metadata inside), predict, ONNX, the DCASE package, the MLflow pyfunc. Never imports training code."""
