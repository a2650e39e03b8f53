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

``build(name, loss, hparams)`` returns a :class:`fold_jax.estimators.methods.Method`; ``tx_wrap``
wraps the optax optimizer (a pruned net keeps its mask through it) and ``mask`` goes
to the zeroth-order and search methods (perturb only unpruned weights).

A researcher's own method enters the registry, and so every race, with
:func:`register` (a Method factory, or an evosax-style ask/tell strategy class through
:func:`fold_jax.estimators.peers.evosax_method`); ``python -m fold_jax.bench --imports mypkg
--methods mine`` races it beside the shipped recipes under the same protocol
(docs/adding-a-method.md).

Where each piece lives (every public name is importable from here): the types, spaces
and draws in :mod:`fold_jax.learn.recipes_space`, the shipped table in
:mod:`fold_jax.learn.recipes_shipped`; this module is the registry (:func:`register`,
:func:`get`, :func:`names`, :func:`build`, :func:`trials`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import optax

from fold_jax.checks import check_choice, check_int
from fold_jax.estimators import methods
from fold_jax.learn.recipes_shipped import (
    EVOSAX_POPULATION,
    SMALL_POPULATIONS,
    evosax_factory,
    shipped,
)
from fold_jax.learn.recipes_space import (
    LIBRARIES,
    SUITES,
    USER,
    Choice,
    LogUniform,
    Param,
    Recipe,
    check_space,
    hparams_json,
    midpoint,
    sample,
)

__all__ = [
    "EVOSAX_POPULATION",
    "LIBRARIES",
    "RECIPES",
    "SMALL_POPULATIONS",
    "SUITES",
    "USER",
    "Choice",
    "LogUniform",
    "Param",
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

def _identity(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    return tx


RECIPES: dict[str, Recipe] = shipped()


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


def _is_strategy(factory: Any) -> bool:
    """Whether ``factory`` is an evosax-style ask/tell strategy class (not a factory)."""
    return isinstance(factory, type) and all(
        callable(getattr(factory, a, None)) for a in ("init", "ask", "tell"))


def _user_make(factory: Callable[..., methods.Method], name: str):
    def make(loss, options, tx_wrap, mask):
        if _is_strategy(factory):
            from fold_jax.estimators import peers

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

    - a function ``factory(loss, **options) -> fold_jax.estimators.methods.Method``, called with
      ``fixed`` merged with a trial's hyperparameters (``init(params) -> state`` with
      ``state.params``; ``step(state, key, *batch) -> (state, info)`` with
      ``info["loss"]`` and ``info["evals"]``, the loss evaluations the step spent), or
    - an evosax-style ask/tell strategy class (``cls(population_size, solution,
      **kwargs)`` with ``default_params``, ``init``, ``ask`` and ``tell``, e.g. a subclass
      of an ``evosax.algorithms`` strategy), run through
      :func:`fold_jax.estimators.peers.evosax_method`; ``fixed`` then needs ``population_size``.

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
    space = check_space(space or {}, name)
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
        The :class:`fold_jax.estimators.methods.Method`.

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


_SHIPPED: set[str] = set(RECIPES)  # names that ship with fold_jax (add_shipped adds more)


def add_shipped(new: Mapping[str, Recipe]) -> None:
    """Add recipes that ship with fold_jax from a module built on this one's types:
    :mod:`fold_jax.learn.suite_recipes` adds the hypotheses', BBOB's and control's when it is
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
