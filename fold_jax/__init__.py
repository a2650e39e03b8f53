"""fold_jax: training without backpropagation, in JAX, measured against it.

Submodules: checks (argument validation), tasks, heads, nets, perturb, methods, train
(the one loop), zo (built from noise, directions, shaping, fusion and flax_layers),
search, snes (separable NES on regenerated noise), walker (where flax layers keep their
kernels; shared by binary and prune), bcsr (sparse kernels), binary, prune, variants, probes,
regions, parallel, peers (evosax strategies as Methods), recipes (the benchmarked
methods and their search spaces), results, timing; report is
imported on demand (it needs matplotlib).
"""

from fold_jax import (
    bcsr,
    binary,
    checks,
    directions,
    flax_layers,
    fusion,
    heads,
    methods,
    nets,
    noise,
    parallel,
    peers,
    perturb,
    probes,
    prune,
    recipes,
    regions,
    results,
    search,
    shaping,
    snes,
    tasks,
    timing,
    train,
    variants,
    walker,
    zo,
)

__version__ = "0.1.0"

__all__ = [
    "bcsr",
    "binary",
    "checks",
    "directions",
    "flax_layers",
    "fusion",
    "heads",
    "methods",
    "nets",
    "noise",
    "parallel",
    "peers",
    "perturb",
    "probes",
    "prune",
    "recipes",
    "regions",
    "results",
    "search",
    "shaping",
    "snes",
    "tasks",
    "timing",
    "train",
    "variants",
    "walker",
    "zo",
]
