"""Compute stage: per-model windows, references, and the metrics engine."""
