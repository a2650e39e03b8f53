"""The recipe registry: every benchmarked method, its fixed settings and its search space.

A :class:`Recipe` names one training method as the benchmark runs it (backprop + an
optax optimizer, a fold_jax zeroth-order estimator, a direct search, an evosax peer):
its ``library``, the settings that define it (``fixed``, e.g. ``rank=4`` or
``num_directions=32``), its tunable hyperparameters (``space``, each a
:class:`LogUniform` or :class:`Choice`) and the values used when it is not tuned
(``defaults``). The races, probes and kernel benchmarks build methods from here only,
so a recipe's definition lives in one place.

The tuning protocol (AlgoPerf's external tuning, :func:`trials`): every recipe gets
the same number of trials, drawn quasi-randomly from its space with a scrambled
Halton sequence (``scipy.stats.qmc``), the same draws for every task; trials are
scored on the validation split; the best reruns on fresh seeds and only those runs
read the test split (``bench/suite_races.py``).

``build(name, loss, hparams)`` returns a :class:`fold_jax.methods.Method`; ``tx_wrap``
wraps the optax optimizer (a pruned net keeps its mask through it) and ``mask`` goes
to the zeroth-order and search methods (perturb only unpruned weights).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import optax

from fold_jax import methods
from fold_jax.checks import check_choice
from fold_jax.peers import MAX_DIMS

__all__ = [
    "LIBRARIES",
    "RECIPES",
    "Choice",
    "LogUniform",
    "Recipe",
    "build",
    "get",
    "hparams_json",
    "names",
    "sample",
    "trials",
]

LIBRARIES = ("optax", "fold_jax", "evosax")


class LogUniform(NamedTuple):
    """A positive hyperparameter drawn log-uniformly in [low, high]."""

    low: float
    high: float


class Choice(NamedTuple):
    """A hyperparameter drawn from a finite set of values (equal shares)."""

    values: tuple[Any, ...]


Param = LogUniform | Choice


class Recipe(NamedTuple):
    """One benchmarked method (see the module docstring).

    ``make(loss, options, tx_wrap, mask) -> Method`` receives ``fixed`` merged with the
    hyperparameters; ``handles_mask``: whether it can train a pruned net (keep its
    mask); ``max_params``: the largest parameter count it runs on (None: any), with
    ``why_limited`` saying why.
    """

    name: str
    library: str
    make: Callable[..., methods.Method]
    space: Mapping[str, Param]
    defaults: Mapping[str, Any]
    fixed: Mapping[str, Any] = {}
    handles_mask: bool = True
    max_params: int | None = None
    why_limited: str = ""
    description: str = ""


def _identity(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    return tx


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
        from fold_jax import search

        return getattr(search, name)(loss, **options, **({} if mask is None else {"mask": mask}))

    return make


def _snes(loss, options, tx_wrap, mask):
    from fold_jax import snes

    options = dict(options)
    tx = options.pop("optimizer")
    lr = options.pop("learning_rate", 1.0)
    tx = tx_wrap(methods.optimizer(tx, lr))
    return snes.snes(loss, tx, None, **options, **({} if mask is None else {"mask": mask}))


def _evosax(strategy: str):
    def make(loss, options, tx_wrap, mask):
        from fold_jax import peers

        options = dict(options)
        extra = {}
        if "learning_rate" in options:  # strategies with an optax optimizer on the mean
            extra = {"optimizer": "adam", "learning_rate": options.pop("learning_rate")}
        return peers.evosax_method(strategy, loss, **options, **extra)

    return make


# ------------------------------------------------------------------------ registry

_LR = LogUniform(1e-3, 3e-2)  # Adam-type step sizes of every optax-driven recipe
_SIGMA = LogUniform(1e-3, 1e-1)  # perturbation scales (0.05 flips binarized weights)
_ZO = dict(num_directions=32)
# SNES with factored scales on rank-4 noise (fold_jax.snes, rank=4): SNES's update (learning
# rate 1 on the mean) on the fused low-rank path, with fold_jax's defaults: mirrored pairs
# (half the noise draws per evaluation) and one chunk (the noise is drawn once a step:
# at 32 directions the digits MLP's population is 4,096 rows, small enough)
_LOWRANK_SNES = dict(rank=4, antithetic=True, optimizer="sgd", chunk_size=None)
EVOSAX_POPULATION = 32  # evosax peers: loss evaluations per generation (plus the mean's);
# about SNES's own default 4 + 3 ln d at d = 26,122 (34), and as fold_jax's zo_gaussian
SMALL_POPULATIONS = (16, 8)  # the small tasks' populations, for both libraries (d <= 1,185:
# SNES's default is 23-25; at 8 evosax's Open_ES needed fewer evaluations on spirals than
# at 16 in an exploratory race, so a grid that stopped at 16 favoured fold_jax there)


def _recipes() -> dict[str, Recipe]:
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
            f"evosax_{strategy.lower()}{suffix}", "evosax", _evosax(strategy), space, defaults,
            {"population_size": population},
            handles_mask=False, max_params=limit,
            why_limited="" if limit is None else (
                f"{strategy} keeps a d x d covariance and eigendecomposes it each generation "
                f"(O(d^3)); above d = {limit} it is slow, large and barely adapts "
                f"(fold_jax.peers.CMA_MAX_DIMS)"),
            description=f"evosax {strategy}, population {population}"
                        + (" + Adam on the mean" if lr else "")))
    return {x.name: x for x in r}


RECIPES: dict[str, Recipe] = _recipes()


def names(library: str | None = None) -> tuple[str, ...]:
    """Recipe names, in registry order, optionally of one ``library`` only.

    Args:
        library: one of ``LIBRARIES`` or None (all).

    Returns:
        The names.
    """
    if library is not None:
        check_choice(library, "library", LIBRARIES)
    return tuple(n for n, r in RECIPES.items() if library is None or r.library == library)


def get(name: str | Recipe) -> Recipe:
    """The recipe called ``name`` (a Recipe is returned as it is).

    Args:
        name: a key of ``RECIPES``.

    Returns:
        The :class:`Recipe`.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if isinstance(name, Recipe):
        return name
    return RECIPES[check_choice(name, "recipe", sorted(RECIPES))]


def _scale(param: Param, u: float) -> Any:
    """The value of ``param`` at the unit-interval point ``u``."""
    if isinstance(param, LogUniform):
        lo, hi = math.log(param.low), math.log(param.high)
        return float(f"{math.exp(lo + u * (hi - lo)):.4g}")  # 4 digits: readable JSON
    return param.values[min(int(u * len(param.values)), len(param.values) - 1)]


def sample(space: Mapping[str, Param], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` settings drawn quasi-randomly from ``space``.

    A scrambled Halton sequence (``scipy.stats.qmc.Halton``, one dimension per
    hyperparameter, in sorted name order) mapped onto each range (log-uniform, rounded
    to 4 significant digits) or set; the same ``(space, n, seed)`` gives the same
    settings on any machine.

    Args:
        space: ``{hyperparameter: LogUniform | Choice}`` (not empty).
        n: number of settings (>= 1).
        seed: the sequence's scrambling seed.

    Returns:
        ``n`` dicts ``{hyperparameter: value}`` (Python numbers or the Choice's values).

    Raises:
        ValueError: ``n`` not an integer >= 1, an empty space, or a value that is
            neither LogUniform nor Choice.
    """
    from scipy.stats import qmc

    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n={n!r} must be an integer >= 1 (number of trials)")
    if not space:
        raise ValueError("space is empty: nothing to draw")
    bad = sorted(k for k, v in space.items() if not isinstance(v, LogUniform | Choice))
    if bad:
        raise ValueError(f"space entries {bad} must be LogUniform or Choice")
    keys = sorted(space)
    points = qmc.Halton(d=len(keys), scramble=True, seed=seed).random(int(n))
    return [{k: _scale(space[k], float(u)) for k, u in zip(keys, p, strict=True)}
            for p in points]


def trials(recipe: str | Recipe, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` hyperparameter settings drawn from the recipe's space by :func:`sample`
    (a recipe without a space gets ``n`` copies of its defaults).

    Args:
        recipe: a recipe or its name.
        n: number of trials (>= 1).
        seed: the sequence's scrambling seed.

    Returns:
        ``n`` dicts ``{hyperparameter: value}`` (Python numbers).
    """
    recipe = get(recipe)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n={n!r} must be an integer >= 1 (number of trials)")
    if not recipe.space:
        return [dict(recipe.defaults) for _ in range(int(n))]
    return sample(recipe.space, n, seed)


def build(recipe: str | Recipe, loss: Callable, hparams: Mapping[str, Any] | None = None, *,
          tx_wrap: Callable[[optax.GradientTransformation],
                            optax.GradientTransformation] = _identity,
          mask: Any = None) -> methods.Method:
    """The recipe's Method on ``loss`` with ``hparams`` (None: its defaults).

    Args:
        recipe: a recipe or its name.
        loss: ``loss(params, *batch) -> scalar``.
        hparams: values for the recipe's space (missing ones take the defaults);
            a key outside the space is a ValueError.
        tx_wrap: wraps the optax optimizer (e.g. a pruned net's mask keeper).
        mask: a params-shaped 0/1 tree of trainable weights for the zeroth-order and
            search recipes (None: all).

    Returns:
        The :class:`fold_jax.methods.Method`.

    Raises:
        ValueError: an unknown recipe or hyperparameter, or a mask for a recipe that
            cannot keep one.
    """
    recipe = get(recipe)
    hparams = dict(hparams or {})
    unknown = sorted(set(hparams) - set(recipe.space))
    if unknown:
        raise ValueError(f"hparams {unknown} are not tunable in recipe {recipe.name!r}; "
                         f"allowed: {sorted(recipe.space)}")
    if mask is not None and not recipe.handles_mask:
        raise ValueError(f"recipe {recipe.name!r} cannot keep a mask (mask=...): it does "
                         f"not train pruned nets")
    options = {**recipe.fixed, **recipe.defaults, **hparams}
    return recipe.make(loss, options, tx_wrap, mask)


def hparams_json(hparams: Mapping[str, Any]) -> str:
    """``hparams`` as compact JSON with sorted keys (the results files' ``hparams``).

    Args:
        hparams: the hyperparameters.

    Returns:
        The JSON text.
    """
    return json.dumps(dict(hparams), sort_keys=True, separators=(",", ":"))
