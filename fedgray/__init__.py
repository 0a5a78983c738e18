"""fedgray: federated adaptation of sealed (gray-box) CLIP backbones.

OpenMP threads that finish early spin before they sleep: libgomp spins 300,000 iterations
by default, which on a busy machine burns the time slice a partner thread needs, and a
two-thread training step slowed 20 to 40 times beside two busy processes. At 10,000 the
step is as fast alone and slows about 3.5 times under that load
(``python -m simulations.bench_load``). libgomp reads the setting once, when torch loads
it, so it is defaulted here, before fedgray imports torch; a value the user sets wins.
"""

import os

os.environ.setdefault("GOMP_SPINCOUNT", "10000")

__version__ = "0.1.0"
