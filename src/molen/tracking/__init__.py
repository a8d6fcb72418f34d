"""Experiment tracking: recording runs and reading them back."""
