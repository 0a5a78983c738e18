"""Engines that run a whole federation on one machine: ``fedgray run`` on Flower's
simulation engine, and a Ray-free in-process grid for tests and benchmarks."""
