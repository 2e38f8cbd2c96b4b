"""Audio: decode and resample wav files once, keep waveforms in a memory-mapped store every worker reads."""
