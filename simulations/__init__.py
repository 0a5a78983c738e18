"""Experiment drivers and benchmarks."""
