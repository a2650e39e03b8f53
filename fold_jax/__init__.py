"""fold_jax: training without backpropagation, in JAX, measured against it.

Submodules: checks (argument validation), tasks, heads, nets, perturb, methods, train
(the one loop), zo, search, binary, prune, variants, probes, regions, parallel,
results, timing; report is imported on demand (it needs matplotlib).
"""

from fold_jax import (
    binary,
    checks,
    heads,
    methods,
    nets,
    parallel,
    perturb,
    probes,
    prune,
    regions,
    results,
    search,
    tasks,
    timing,
    train,
    variants,
    zo,
)

__version__ = "0.1.0"

__all__ = [
    "binary",
    "checks",
    "heads",
    "methods",
    "nets",
    "parallel",
    "perturb",
    "probes",
    "prune",
    "regions",
    "results",
    "search",
    "tasks",
    "timing",
    "train",
    "variants",
    "zo",
]
