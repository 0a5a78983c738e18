"""``fedgray bench``: what fedgray costs to run, as ratios measured side by side in one run.

On a shared machine absolute times swing with the load from run to run, so every figure
here is a ratio (or a per-unit cost) of modes measured in the same process, interleaved
step by step after warm-up, as the median over repetitions. Nothing under ``simulations/``
is imported: the scripts there wrap these modules.
"""
