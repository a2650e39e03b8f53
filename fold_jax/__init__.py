"""fold_jax: training without backpropagation, in JAX, measured against it.

Submodules: checks (argument validation), tasks, heads, nets, perturb, methods, train
(the one loop), programs (compiled programs shared across fits), control (gymnax
control tasks) and policies (their flax policies), ppo (rejax's PPO, the backprop RL
baseline), text (character corpora and sequence tasks, built by gutenberg), pretrain
(cached Adam pretraining of LMs), zo (built from noise, directions, shaping, fusion and
flax_layers, whose linen and nnx halves are flax_linen and flax_nnx), search, snes
(separable NES on regenerated noise), walker (where flax layers keep their kernels;
shared by binary and prune), bcsr (sparse kernels), binary, prune, variants, probes, regions,
parallel, peers (evosax strategies as Methods), recipes (the benchmarked methods and
their search spaces; suite_recipes: the hypotheses' and BBOB's), results, timing;
report and bench (the harness, ``python -m fold_jax.bench``) are imported on demand
(report needs matplotlib).
"""

from fold_jax import (
    bcsr,
    binary,
    checks,
    control,
    directions,
    flax_layers,
    flax_linen,
    flax_nnx,
    fusion,
    gutenberg,
    heads,
    methods,
    nets,
    noise,
    parallel,
    peers,
    perturb,
    policies,
    ppo,
    pretrain,
    probes,
    programs,
    prune,
    recipes,
    regions,
    results,
    search,
    shaping,
    snes,
    suite_recipes,
    tasks,
    text,
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
    "control",
    "directions",
    "flax_layers",
    "flax_linen",
    "flax_nnx",
    "fusion",
    "gutenberg",
    "heads",
    "methods",
    "nets",
    "noise",
    "parallel",
    "peers",
    "perturb",
    "policies",
    "ppo",
    "pretrain",
    "probes",
    "programs",
    "prune",
    "recipes",
    "regions",
    "results",
    "search",
    "shaping",
    "snes",
    "suite_recipes",
    "tasks",
    "text",
    "timing",
    "train",
    "variants",
    "walker",
    "zo",
]
