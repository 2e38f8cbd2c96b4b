"""Classify audio files with a shipped student: `python -m asc_dist.predict --model MODEL AUDIO...`.

`model.py` opens what a user has (an exported TorchScript file, a student folder, an MLflow model URI) as
one waveform-to-logits callable with the metadata it carries; `audio.py` reads any file soundfile can and
cuts it into the model's windows; `__main__.py` batches, aggregates and writes the DCASE submission CSV.
"""
