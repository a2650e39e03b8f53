"""The shipped recipe table: the races' methods (backprop with optax optimizers, fold_jax's
zeroth-order estimators, direct searches and SNES, evosax peers) with their fixed
settings, search spaces and defaults, and the factories that build them.
:mod:`fold_jax.learn.recipes` fills its registry from :func:`shipped`; the hypotheses', BBOB's
and control's recipes are added by :mod:`fold_jax.learn.suite_recipes`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax

from fold_jax.estimators import methods
from fold_jax.estimators.peers import MAX_DIMS
from fold_jax.learn.recipes_space import Choice, LogUniform, Recipe

__all__ = ["EVOSAX_POPULATION", "SMALL_POPULATIONS", "evosax_factory", "shipped"]


# ------------------------------------------------------------------------ builders


def _gradient(optimizer: str):
    def make(loss, options, tx_wrap, mask):
        return methods.gradient(loss, tx_wrap(methods.optimizer(optimizer,
                                                                options["learning_rate"])))

    return make


def _zeroth_order(loss, options, tx_wrap, mask):
    options = dict(options)
    lr = options.pop("learning_rate")
    if mask is not None:
        options["mask"] = mask
    return methods.zeroth_order(loss, tx_wrap(optax.adam(lr)), **options)


def _forward_gradient(loss, options, tx_wrap, mask):
    return methods.forward_gradient(loss, tx_wrap(optax.adam(options["learning_rate"])),
                                    None, options["num_directions"])


def _search(name: str):
    def make(loss, options, tx_wrap, mask):
        from fold_jax.estimators import search

        return getattr(search, name)(loss, **options, **({} if mask is None else {"mask": mask}))

    return make


def _snes(loss, options, tx_wrap, mask):
    from fold_jax.estimators import snes

    options = dict(options)
    tx = options.pop("optimizer")
    lr = options.pop("learning_rate", 1.0)
    tx = tx_wrap(methods.optimizer(tx, lr))
    return snes.snes(loss, tx, None, **options, **({} if mask is None else {"mask": mask}))


def evosax_factory(strategy: str) -> Callable[..., Any]:
    """The recipe factory of evosax strategy ``strategy`` (a ``learning_rate`` option puts
    Adam on its mean); the races' and the control suite's evosax recipes share it.

    Args:
        strategy: the evosax strategy name (fold_jax.estimators.peers).

    Returns:
        ``make(loss, options, tx_wrap, mask) -> Method``.
    """
    def make(loss, options, tx_wrap, mask):
        from fold_jax.estimators import peers

        options = dict(options)
        extra = {}
        if "learning_rate" in options:  # strategies with an optax optimizer on the mean
            extra = {"optimizer": "adam", "learning_rate": options.pop("learning_rate")}
        return peers.evosax_method(strategy, loss, **options, **extra)

    return make


# --------------------------------------------------------------------------- the table

_LR = LogUniform(1e-3, 3e-2)  # Adam-type step sizes of every optax-driven recipe
_SIGMA = LogUniform(1e-3, 1e-1)  # perturbation scales (0.05 flips binarized weights)
_ZO = dict(num_directions=32)
# SNES with factored scales on rank-4 noise (fold_jax.estimators.snes, rank=4): SNES's
# update (learning rate 1 on the mean) on the fused low-rank path, with fold_jax's
# defaults: mirrored pairs (half the noise draws per evaluation) and one chunk (the
# noise is drawn once a step: at 32 directions the digits MLP's population is 4,096
# rows, small enough)
_LOWRANK_SNES = dict(rank=4, antithetic=True, optimizer="sgd", chunk_size=None)
EVOSAX_POPULATION = 32  # evosax peers: loss evaluations per generation (plus the mean's);
# about SNES's own default 4 + 3 ln d at d = 26,122 (34), and as fold_jax's zo_gaussian
SMALL_POPULATIONS = (16, 8)  # the small tasks' populations, for both libraries (d <= 1,185:
# SNES's default is 23-25; at 8 evosax's Open_ES needed fewer evaluations on spirals than
# at 16 in an exploratory race, so a grid that stopped at 16 favoured fold_jax there)


def shipped() -> dict[str, Recipe]:
    """The races' shipped recipes.

    Returns:
        name -> :class:`~fold_jax.learn.recipes_space.Recipe`, in the registry's order.
    """
    zo = _zeroth_order
    r = [
        Recipe("adam", "optax", _gradient("adam"), {"learning_rate": _LR},
               {"learning_rate": 1e-2}, description="backprop + Adam"),
        Recipe("sgd", "optax", _gradient("momentum"),
               {"learning_rate": LogUniform(1e-2, 1.0)}, {"learning_rate": 0.1},
               description="backprop + SGD with momentum 0.9"),
        Recipe("zo_gaussian", "fold_jax", zo, {"learning_rate": _LR, "sigma": _SIGMA},
               {"learning_rate": 1e-2, "sigma": 1e-3}, {**_ZO, "noise": "gaussian"},
               description="antithetic gaussian ES gradient (32 evaluations) + Adam"),
        Recipe("zo_rademacher", "fold_jax", zo, {"learning_rate": _LR, "sigma": _SIGMA},
               {"learning_rate": 1e-2, "sigma": 1e-3}, {**_ZO, "noise": "rademacher"},
               description="antithetic SPSA (rademacher) gradient (32 evaluations) + Adam"),
        Recipe("zo_sphere", "fold_jax", zo, {"learning_rate": _LR, "sigma": _SIGMA},
               {"learning_rate": 1e-2, "sigma": 1e-3}, {**_ZO, "noise": "sphere"},
               description="antithetic sphere-direction gradient (32 evaluations) + Adam"),
        Recipe("zo_lowrank", "fold_jax", zo, {"learning_rate": _LR, "sigma": _SIGMA},
               {"learning_rate": 1e-2, "sigma": 1e-3}, {**_ZO, "noise": "gaussian", "rank": 1},
               description="rank-1 (EGGROLL-style) gaussian ES gradient (32 evaluations) + Adam"),
        Recipe("zo_lowrank_ranked", "fold_jax", zo, {"learning_rate": _LR, "sigma": _SIGMA},
               {"learning_rate": 3e-3, "sigma": 1e-2},
               {"num_directions": 128, "noise": "gaussian", "rank": 4,
                "shaping": "centered_ranks"},
               description="rank-4 gaussian ES, 128 evaluations, centered ranks + Adam"),
        Recipe("zo_lowrank_ranked32", "fold_jax", zo, {"learning_rate": _LR, "sigma": _SIGMA},
               {"learning_rate": 1e-2, "sigma": 1e-2},
               {"num_directions": 32, "noise": "gaussian", "rank": 4,
                "shaping": "centered_ranks"},
               description="rank-4 gaussian ES, 32 evaluations (the evosax peers' "
                           "population), centered ranks + Adam"),
        Recipe("forward_gradient", "fold_jax", _forward_gradient, {"learning_rate": _LR},
               {"learning_rate": 1e-2}, {"num_directions": 8},
               description="forward gradient (8 jvp tangents) + Adam"),
        Recipe("gld", "fold_jax", _search("gld"), {"max_radius": LogUniform(3e-2, 3.0)},
               {"max_radius": 1.0}, {"min_radius": 1e-3, "acceptance": "reevaluate"},
               description="Gradientless Descent (radii max_radius..1e-3), reevaluated"),
        Recipe("rso", "fold_jax", _search("rso"), {"sigma": LogUniform(1e-2, 1.0)},
               {"sigma": 0.1}, {"acceptance": "reevaluate"},
               description="RSO, 16 candidates per weight block, reevaluated"),
        Recipe("one_plus_one", "fold_jax", _search("one_plus_one"),
               {"sigma": LogUniform(1e-3, 1e-1)}, {"sigma": 1e-2}, {"acceptance": "reevaluate"},
               description="(1+1)-ES with the 1/5 success rule, reevaluated"),
        Recipe("snes", "fold_jax", _snes,
               {"sigma": _SIGMA, "antithetic": Choice((True, False))},
               {"sigma": 0.02, "antithetic": True}, {"num_directions": 32, "optimizer": "sgd"},
               description="separable NES (per-entry adaptive scales, evosax's SNES update), "
                           "32 evaluations, noise regenerated from keys"),
        Recipe("snes_lowrank", "fold_jax", _snes, {"sigma": _SIGMA}, {"sigma": 0.02},
               {**_LOWRANK_SNES, "num_directions": EVOSAX_POPULATION}, handles_mask=False,
               description="SNES on the fused rank-4 path: factored (row x column) adaptive "
                           "scales, 32 evaluations (the evosax peers' population)"),
    ]
    # the small populations of the small tasks, open to both libraries alike (the evosax
    # rows below): per-entry SNES (evosax_snes's update; mirrored pairs a tuned choice,
    # evosax's never mirror) and the rank-4 SNES, at 16 and 8 evaluations a step
    for k in SMALL_POPULATIONS:
        r += [
            Recipe(f"snes{k}", "fold_jax", _snes,
                   {"sigma": _SIGMA, "antithetic": Choice((True, False))},
                   {"sigma": 0.02, "antithetic": True},
                   {"num_directions": k, "optimizer": "sgd", "chunk_size": None},
                   description=f"separable NES (per-entry scales), {k} evaluations a step: "
                               f"evosax_snes{k}'s update and population, mirrored pairs "
                               f"tuned as well (evosax's never mirror; for the small tasks)"),
            Recipe(f"snes_lowrank{k}", "fold_jax", _snes, {"sigma": _SIGMA}, {"sigma": 0.02},
                   {**_LOWRANK_SNES, "num_directions": k}, handles_mask=False,
                   description=f"SNES on the fused rank-4 path, {k} evaluations a step "
                               f"(for the small tasks)"),
        ]
    # (strategy, Adam on the mean, population): every strategy at EVOSAX_POPULATION; the
    # two best peers on the small tasks also at fold_jax's SMALL_POPULATIONS, so those
    # populations are open to both libraries alike
    evosax_rows = [(s, lr, EVOSAX_POPULATION) for s, lr in (
        ("Open_ES", True), ("PGPE", True), ("ARS", True), ("SNES", False),
        ("Sep_CMA_ES", False), ("CMA_ES", False))]
    evosax_rows += [(s, lr, k) for k in SMALL_POPULATIONS
                    for s, lr in (("Open_ES", True), ("SNES", False))]
    for strategy, lr, population in evosax_rows:
        space = {"sigma": _SIGMA, **({"learning_rate": _LR} if lr else {})}
        defaults = {"sigma": 0.02, **({"learning_rate": 3e-3} if lr else {})}
        limit = MAX_DIMS.get(strategy)
        suffix = "" if population == EVOSAX_POPULATION else str(population)
        r.append(Recipe(
            f"evosax_{strategy.lower()}{suffix}", "evosax", evosax_factory(strategy), space,
            defaults,
            {"population_size": population},
            handles_mask=False, max_params=limit,
            why_limited="" if limit is None else (
                f"{strategy} keeps a d x d covariance and eigendecomposes it each generation "
                f"(O(d^3)); above d = {limit} it is slow, large and barely adapts "
                f"(fold_jax.peers.CMA_MAX_DIMS)"),
            description=f"evosax {strategy}, population {population}"
                        + (" + Adam on the mean" if lr else "")))
    return {x.name: x for x in r}
