"""Reproducible pipelines: stages declared in molen.yaml, molen.lock, ``molen repro``."""
