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
read the test split (``fold_jax/bench/suites/races.py``).

``build(name, loss, hparams)`` returns a :class:`fold_jax.methods.Method`; ``tx_wrap``
wraps the optax optimizer (a pruned net keeps its mask through it) and ``mask`` goes
to the zeroth-order and search methods (perturb only unpruned weights).

A researcher's own method enters the registry, and so every race, with
:func:`register` (a Method factory, or an evosax-style ask/tell strategy class through
:func:`fold_jax.peers.evosax_method`); ``python -m fold_jax.bench --imports mypkg
--methods mine`` races it beside the shipped recipes under the same protocol
(docs/adding-a-method.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import optax

from fold_jax import methods
from fold_jax.checks import check_choice, check_int
from fold_jax.peers import MAX_DIMS

__all__ = [
    "LIBRARIES",
    "RECIPES",
    "USER",
    "Choice",
    "LogUniform",
    "Recipe",
    "add_shipped",
    "build",
    "evosax_factory",
    "get",
    "hparams_json",
    "libraries",
    "midpoint",
    "names",
    "register",
    "sample",
    "trials",
    "unregister",
]

LIBRARIES = ("optax", "fold_jax", "evosax", "cma", "rejax")  # the shipped recipes' libraries
# Suites with recipes of their own: "races" (the default: every race task; a
# registered method's suite), "hypotheses" (the essays' workloads: their methods are
# built by each workload, the recipe holds the search space), "bbob" (COCO's
# functions: one setting per method, built on the problem's dimension and budget) and
# "control" (gymnax control tasks: ES on the policy's return, and rejax's PPO).
# A suite's recipes are named "<suite>/<method>" but for the races'.
SUITES = ("races", "hypotheses", "bbob", "control")
USER = "user"  # the library of a registered method unless it names its own


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
    suite: str = "races"  # the suite whose problems it is defined for (SUITES)


def _scale(param: Param, u: float) -> Any:
    """The value of ``param`` at the unit-interval point ``u``."""
    if isinstance(param, LogUniform):
        lo, hi = math.log(param.low), math.log(param.high)
        return float(f"{math.exp(lo + u * (hi - lo)):.4g}")  # 4 digits: readable JSON
    return param.values[min(int(u * len(param.values)), len(param.values) - 1)]


def midpoint(param: Param) -> Any:
    """A space entry's default when none is given.

    Args:
        param: a LogUniform or Choice.

    Returns:
        The log-midpoint ``sqrt(low * high)`` (4 significant digits) or the first value.
    """
    return _scale(param, 0.5) if isinstance(param, LogUniform) else param.values[0]


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


def evosax_factory(strategy: str) -> Callable[..., Any]:
    """The recipe factory of evosax strategy ``strategy`` (a ``learning_rate`` option puts
    Adam on its mean); the races' and the control suite's evosax recipes share it.

    Args:
        strategy: the evosax strategy name (fold_jax.peers).

    Returns:
        ``make(loss, options, tx_wrap, mask) -> Method``.
    """
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
# SNES with factored scales on rank-4 noise (fold_jax.snes, rank=4): SNES's update
# (learning rate 1 on the mean) on the fused low-rank path, with fold_jax's defaults: mirrored pairs
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


RECIPES: dict[str, Recipe] = _recipes()


def libraries() -> tuple[str, ...]:
    """The libraries of the registered recipes, in registry order (the shipped
    ``LIBRARIES`` first, then those of :func:`register`-ed methods, e.g. ``"user"``).

    Returns:
        The library names.
    """
    return tuple(dict.fromkeys(r.library for r in RECIPES.values()))


def names(library: str | None = None, suite: str = "races") -> tuple[str, ...]:
    """Recipe names of one ``suite``, in registry order, optionally of one ``library``.

    Args:
        library: one of :func:`libraries` or None (all).
        suite: one of ``SUITES`` (default "races": every race's candidates).

    Returns:
        The names (registry keys: ``"<suite>/<method>"`` outside the races).
    """
    if library is not None:
        check_choice(library, "library", libraries())
    check_choice(suite, "suite", SUITES)
    return tuple(n for n, r in RECIPES.items()
                 if r.suite == suite and (library is None or r.library == library))


def _check_space(space: Mapping[str, Param], name: str) -> dict[str, Param]:
    if not isinstance(space, Mapping):
        raise TypeError(f"space of {name!r} must be a mapping {{hyperparameter: LogUniform | "
                        f"Choice}}, got {type(space).__name__}")
    bad = sorted(k for k, v in space.items() if not isinstance(v, LogUniform | Choice))
    if bad:
        raise ValueError(f"space entries {bad} of {name!r} must be recipes.LogUniform(low, "
                         f"high) or recipes.Choice(values)")
    for k, v in space.items():
        if isinstance(v, LogUniform) and not 0 < v.low <= v.high:
            raise ValueError(f"space[{k!r}] = {v} of {name!r}: needs 0 < low <= high")
        if isinstance(v, Choice) and not len(v.values):
            raise ValueError(f"space[{k!r}] of {name!r} is an empty Choice")
    return dict(space)


def _is_strategy(factory: Any) -> bool:
    """Whether ``factory`` is an evosax-style ask/tell strategy class (not a factory)."""
    return isinstance(factory, type) and all(
        callable(getattr(factory, a, None)) for a in ("init", "ask", "tell"))


def _user_make(factory: Callable[..., methods.Method], name: str):
    def make(loss, options, tx_wrap, mask):
        if _is_strategy(factory):
            from fold_jax import peers

            return peers.evosax_method(factory, loss, **options)
        m = factory(loss, **options)
        if not isinstance(m, methods.Method):
            raise TypeError(f"recipe {name!r}: its factory returned {type(m).__name__}, not a "
                            f"fold_jax.methods.Method(init, step, name)")
        return m

    return make


def register(name: str, factory: Callable[..., methods.Method] | type | None = None, *,
             space: Mapping[str, Param] | None = None,
             defaults: Mapping[str, Any] | None = None,
             fixed: Mapping[str, Any] | None = None, library: str = USER,
             description: str = "", max_params: int | None = None,
             replace: bool = False) -> Any:
    """Add a researcher's method to the registry, so every race can run it, tuned like
    the shipped recipes (the same number of trials drawn from ``space`` by
    :func:`trials`, the same seeds, step budgets and evaluation intervals).

    ``factory`` is either

    - a function ``factory(loss, **options) -> fold_jax.methods.Method``, called with
      ``fixed`` merged with a trial's hyperparameters (``init(params) -> state`` with
      ``state.params``; ``step(state, key, *batch) -> (state, info)`` with
      ``info["loss"]`` and ``info["evals"]``, the loss evaluations the step spent), or
    - an evosax-style ask/tell strategy class (``cls(population_size, solution,
      **kwargs)`` with ``default_params``, ``init``, ``ask`` and ``tell``, e.g. a subclass
      of an ``evosax.algorithms`` strategy), run through
      :func:`fold_jax.peers.evosax_method`; ``fixed`` then needs ``population_size``.

    Used as a decorator (``factory`` left out) it registers the decorated function or
    class and returns it unchanged: ``@recipes.register("mine", space=...)``.

    Args:
        name: the recipe's name (a new one unless ``replace``; it becomes the rows'
            ``method``).
        factory: the Method factory or strategy class (None: return a decorator).
        space: ``{hyperparameter: LogUniform | Choice}`` tuned per task (None or {}: not
            tuned, every trial runs ``defaults``).
        defaults: values used when not tuned (missing space entries: the log-midpoint
            of a LogUniform, the first value of a Choice); keys outside ``space`` are a
            ValueError (put fixed settings in ``fixed``).
        fixed: settings passed on every call, never tuned.
        library: the rows' ``library`` (default ``"user"``); the report compares the
            best recipe of every library it finds in the rows.
        description: one line for the report.
        max_params: the largest parameter count it runs on (None: any).
        replace: allow replacing a recipe of the same name.

    Returns:
        The :class:`Recipe` (as a decorator: ``factory`` itself).

    Raises:
        ValueError / TypeError: a bad name, library, space, defaults or factory, or a
            name already registered without ``replace``.
    """
    if factory is None:
        def decorator(f):
            register(name, f, space=space, defaults=defaults, fixed=fixed, library=library,
                     description=description, max_params=max_params, replace=replace)
            return f

        return decorator
    if not isinstance(name, str) or not name.strip() or name != name.strip() or "," in name:
        raise ValueError(f"name={name!r} must be a non-empty str without commas or outer "
                         f"spaces (it is a --methods entry)")
    if name in RECIPES and not replace:
        raise ValueError(f"recipe {name!r} is already registered (library "
                         f"{RECIPES[name].library!r}); pick another name or pass replace=True")
    if not isinstance(library, str) or not library.strip():
        raise ValueError(f"library={library!r} must be a non-empty str (e.g. 'user')")
    if not callable(factory):
        raise TypeError(f"factory of {name!r} must be callable (factory(loss, **options) -> "
                        f"Method) or an evosax-style strategy class, got "
                        f"{type(factory).__name__}")
    space = _check_space(space or {}, name)
    defaults = dict(defaults or {})
    outside = sorted(set(defaults) - set(space))
    if outside:
        raise ValueError(f"defaults {outside} of {name!r} are not in its space "
                         f"{sorted(space)}; put fixed settings in fixed=")
    fixed = dict(fixed or {})
    if _is_strategy(factory) and "population_size" not in fixed:
        raise ValueError(f"strategy {name!r}: fixed= needs population_size (evaluations a "
                         f"step)")
    if max_params is not None:
        max_params = check_int(max_params, "max_params")
    recipe = Recipe(name, library, _user_make(factory, name), space,
                    {k: defaults.get(k, midpoint(p)) for k, p in space.items()}, fixed,
                    handles_mask=False, max_params=max_params,
                    why_limited="" if max_params is None else "its registration's max_params",
                    description=description or f"{library} method {name}")
    RECIPES[name] = recipe
    return recipe


def unregister(name: str) -> Recipe:
    """Remove a recipe added by :func:`register` (shipped recipes cannot be removed).

    Args:
        name: its name.

    Returns:
        The removed :class:`Recipe`.

    Raises:
        ValueError: an unknown or shipped recipe.
    """
    recipe = get(name)
    if recipe.name in _SHIPPED:
        raise ValueError(f"recipe {name!r} ships with fold_jax and cannot be unregistered")
    return RECIPES.pop(recipe.name)


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
          mask: Any = None, problem: Mapping[str, Any] | None = None) -> methods.Method:
    """The recipe's Method on ``loss`` with ``hparams`` (None: its defaults).

    Args:
        recipe: a recipe or its name.
        loss: ``loss(params, *batch) -> scalar``.
        hparams: values for the recipe's space (missing ones take the defaults);
            a key outside the space is a ValueError.
        tx_wrap: wraps the optax optimizer (e.g. a pruned net's mask keeper).
        mask: a params-shaped 0/1 tree of trainable weights for the zeroth-order and
            search recipes (None: all).
        problem: what the problem sets, passed beside the settings and never tuned
            (BBOB's recipes: ``dim``, ``budget``, ``slot``, ``population_size``).

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
    options = {**recipe.fixed, **recipe.defaults, **hparams, **(problem or {})}
    return recipe.make(loss, options, tx_wrap, mask)


def hparams_json(hparams: Mapping[str, Any]) -> str:
    """``hparams`` as compact JSON with sorted keys (the results files' ``hparams``).

    Args:
        hparams: the hyperparameters.

    Returns:
        The JSON text.
    """
    return json.dumps(dict(hparams), sort_keys=True, separators=(",", ":"))


_SHIPPED: set[str] = set(RECIPES)  # names that ship with fold_jax (add_shipped adds more)


def add_shipped(new: Mapping[str, Recipe]) -> None:
    """Add recipes that ship with fold_jax from a module built on this one's types:
    :mod:`fold_jax.suite_recipes` adds the hypotheses', BBOB's and control's when it is
    imported (``import fold_jax`` does), so this module never imports it (no circle).
    Shipped recipes cannot be unregistered.

    Args:
        new: name -> recipe; a name already registered is refused.

    Raises:
        ValueError: a name is already registered.
    """
    taken = sorted(set(new) & set(RECIPES))
    if taken:
        raise ValueError(f"recipes {taken} are already registered")
    RECIPES.update(new)
    _SHIPPED.update(new)
