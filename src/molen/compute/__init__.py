"""Compute beyond this machine: sweeps on a Ray cluster (:mod:`molen.compute.cluster`)."""
