"""Peer methods: evosax evolution strategies as fold_jax Methods.

``evosax_method("SNES", loss, population_size=64, sigma=0.05)`` wraps an evosax
(>= 0.3) ask/tell strategy as a :class:`fold_jax.estimators.methods.Method`, so the benchmark's
one loop (:func:`fold_jax.learn.train.fit`) trains it beside backprop and fold_jax's own
zeroth-order estimators, counting the same loss evaluations.

How a step runs (``step(state, key, *args)``, jittable, the state a pytree):

1. ``ask``: the strategy samples ``population_size`` points around its mean; params
   are flattened with :func:`jax.flatten_util.ravel_pytree` (the strategy sees one
   flat vector of ``d`` entries) and unflattened for each loss call.
2. the population's losses ``loss(params_i, *args)`` are evaluated with ``jax.vmap``
   (or ``jax.lax.map`` in chunks of ``chunk_size``). evosax minimizes, so the loss is
   the fitness as it is.
3. non-finite losses are replaced by the worst finite loss of the population (the
   member ranks last and, for raw-fitness strategies such as ARS, moves the mean as
   the worst member does) and counted in ``info["dropped"]``; NaN never reaches the
   strategy's update.
4. ``tell`` updates the strategy; the step is skipped (state unchanged,
   ``info["skipped"] = 1``) when every member's loss was non-finite or the updated
   strategy state holds NaN/inf (its mean, std, paths, covariance...), so params never
   become non-finite.

``state.params`` is the strategy's mean unflattened like the init params (what ``fit``
evaluates). ``info``: ``loss`` (float32 scalar: the loss at the current mean on this
batch, before the update, when ``eval_mean=True``, the default; with
``eval_mean=False``, the best finite loss of the population, NaN if none), ``evals``
(int32: ``population_size``, ``+ 1`` with ``eval_mean``), ``skipped`` (0/1) and
``dropped`` (int32: members with a non-finite loss).

Strategies are listed by :func:`strategies`. evosax's own defaults are kept unless an
option says otherwise; note that its default exploration std is 1.0 (``sigma``), far
too large for network weights (0.01-0.1 is typical).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray, PyTree

from fold_jax.checks import (
    check_bool,
    check_callable,
    check_int,
    check_key,
    check_params,
    check_positive,
)
from fold_jax.estimators.methods import LearningRate, Method, all_finite, optimizer

__all__ = [
    "ANTITHETIC",
    "CMA_MAX_DIMS",
    "MAX_DIMS",
    "STRATEGIES",
    "EvosaxState",
    "evosax_method",
    "strategies",
]

# The evosax strategies this adapter supports and tests: each keeps a mean vector and
# samples a population around it with plain ask/tell (no gradient, no inner loop).
STRATEGIES = ("ARS", "CMA_ES", "Open_ES", "PGPE", "SNES", "Sep_CMA_ES", "SimpleES")

# Strategies that sample mirrored pairs: population_size must be even.
ANTITHETIC = ("ARS", "Open_ES", "PGPE")

# CMA-ES keeps a d x d covariance C and its eigenvectors B (2 d^2 floats: 128 MiB in
# float32 at d = 4096), eigendecomposes C every generation (O(d^3): about 7e10 flops
# at d = 4096, seconds per step on a CPU) and learns C at a rate of about
# mu_eff / d^2 per generation, so above a few thousand parameters it is slow, large and
# barely adapts its covariance: use Sep_CMA_ES or SNES (diagonal) instead.
CMA_MAX_DIMS = 4096

# Default parameter-count limits per strategy (``max_dims=`` overrides them).
MAX_DIMS: dict[str, int] = {"CMA_ES": CMA_MAX_DIMS}

_SKIP_FIELDS = ("best_solution", "best_fitness")  # NaN / inf by design before a best exists


def strategies() -> tuple[str, ...]:
    """Names :func:`evosax_method` accepts (evosax class names, e.g. ``"Open_ES"``).

    Returns:
        The strategy names, a tuple of str.
    """
    return STRATEGIES


class EvosaxState(NamedTuple):
    """A :func:`evosax_method` state (a pytree).

    Attributes:
        params: the strategy's mean, unflattened like the init params.
        es_state: the evosax strategy state (its ``mean`` is the flat ``(d,)`` mean).
        es_params: the evosax strategy params (``strategy.default_params`` with the
            options' overrides).
    """

    params: PyTree
    es_state: Any
    es_params: Any


def _evosax():
    try:
        from evosax import algorithms
    except ImportError as error:  # pragma: no cover - evosax is a dependency
        raise ImportError("fold_jax.peers needs evosax >= 0.3 (pip install evosax)") from error
    return algorithms


def _constructor_options(cls: type) -> set[str]:
    names = set(inspect.signature(cls.__init__).parameters)
    return names - {"self", "population_size", "solution", "metrics_fn"}


def _strong(x: Any) -> Array:
    """``x`` as an array with a fixed (not weak) dtype, so a lax.scan carry keeps its type."""
    x = jnp.asarray(x)
    return jax.lax.convert_element_type(x, x.dtype)


def _split_options(name: str, cls: type, population_size: int, sigma: float | None,
                   options: dict[str, Any], optimizer_lr: LearningRate | None
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(constructor kwargs, strategy-params overrides) from the user's options, or a
    ValueError naming the unknown option and the allowed ones."""
    ctor_names = _constructor_options(cls)
    probe = cls(population_size=population_size, solution=jnp.zeros(4, jnp.float32))
    param_names = {f.name for f in dataclasses.fields(probe.default_params)}
    unknown = sorted(set(options) - ctor_names - param_names)
    if unknown:
        raise ValueError(f"{name} has no option {unknown}; allowed: "
                         f"{sorted(ctor_names | param_names | {'sigma', 'learning_rate'})}")
    ctor = {k: v for k, v in options.items() if k in ctor_names}
    overrides = {k: v for k, v in options.items() if k not in ctor_names}
    if "optimizer" in ctor:
        ctor["optimizer"] = optimizer(ctor["optimizer"], optimizer_lr)
    elif optimizer_lr is not None:
        if "optimizer" not in ctor_names:
            raise ValueError(f"learning_rate={optimizer_lr!r}: {name} takes no optimizer "
                             f"(its mean update has no learning rate); leave it None")
        raise ValueError(f"learning_rate={optimizer_lr!r} needs an optimizer name beside it "
                         f"(e.g. optimizer='adam'); {name}'s default optimizer holds its own "
                         f"learning rate")
    if sigma is not None:
        if "std_schedule" in ctor_names:
            if "std_schedule" in ctor:
                raise ValueError("give sigma= or std_schedule=, not both")
            ctor["std_schedule"] = optax.constant_schedule(sigma)
        elif "std_init" in param_names:
            if "std_init" in overrides:
                raise ValueError("give sigma= or std_init=, not both")
            overrides["std_init"] = jnp.asarray(sigma, jnp.float32)
        else:  # pragma: no cover - every listed strategy has one of the two
            raise ValueError(f"{name} has no exploration std to set; leave sigma=None")
    try:  # the user's constructor arguments, tried on a small probe before any tracing
        cls(population_size=population_size, solution=jnp.zeros(4, jnp.float32), **ctor)
    except (AssertionError, TypeError, ValueError) as error:
        raise ValueError(f"{name}({', '.join(sorted(ctor))}) was refused by evosax: "
                         f"{type(error).__name__}: {error}") from error
    return ctor, overrides


def evosax_method(
    strategy: str | type,
    loss: Callable[..., Array],
    *,
    population_size: int,
    sigma: float | None = None,
    learning_rate: LearningRate | None = None,
    eval_mean: bool = True,
    chunk_size: int | None = None,
    max_dims: int | None = None,
    **strategy_options: Any,
) -> Method:
    """An evosax strategy as a fold_jax :class:`~fold_jax.estimators.methods.Method`.

    Args:
        strategy: an evosax class name from :func:`strategies` (``"Open_ES"``,
            ``"SNES"``, ``"PGPE"``, ``"ARS"``, ``"CMA_ES"``, ``"Sep_CMA_ES"``,
            ``"SimpleES"``), or an evosax-style strategy class of one's own (the door
            of :func:`fold_jax.learn.recipes.register`): ``cls(population_size, solution,
            **options)`` with ``default_params`` (a dataclass with ``replace``),
            ``init(key, mean, params)``, ``ask(key, state, params) -> (population,
            state)`` and ``tell(key, population, fitness, state, params) -> (state,
            metrics)``, its state a dataclass with a flat ``mean``.
        loss: scalar loss ``loss(params, *args)`` (minimized).
        population_size: loss evaluations per step besides the mean's (>= 2; even for
            the mirrored-sampling strategies in ``ANTITHETIC``).
        sigma: initial exploration std in parameter units (``std_schedule`` constant
            for Open_ES / ARS, ``std_init`` for the others); None keeps evosax's
            default, 1.0.
        learning_rate: with ``optimizer=`` given by name (see
            :func:`fold_jax.estimators.methods.optimizer`), its learning rate.
        eval_mean: also evaluate the loss at the current mean each step (one more
            evaluation) and report it as ``info["loss"]``; otherwise ``info["loss"]``
            is the population's best finite loss.
        chunk_size: evaluate the population ``chunk_size`` members at a time
            (``jax.lax.map``), bounding memory by that many forward passes; None
            vmaps the whole population.
        max_dims: refuse params with more entries than this (ValueError in ``init``);
            None uses ``MAX_DIMS`` (CMA_ES: ``CMA_MAX_DIMS`` = 4096, for its d x d
            covariance) and no limit for the diagonal strategies.
        **strategy_options: evosax constructor arguments (``optimizer``: an optax
            transformation or a name, ``fitness_shaping_fn``, ``std_schedule``,
            ``use_antithetic_sampling``) or fields of the strategy's params
            (``std_init``, ``std_lr``, ...), by their evosax names.

    Returns:
        ``Method(init, step, name)``: ``init(params) -> EvosaxState``;
        ``step(state, key, *args) -> (state, info)`` with ``info``: ``loss``, ``evals``,
        ``skipped``, ``dropped`` (module docstring). ``name`` is ``"evosax_<strategy>"``
        (a class: its ``__name__``).

    Raises:
        ValueError / TypeError: an unknown strategy or option, a bad population size,
            sigma, chunk_size or max_dims, before anything is traced; ``init`` raises a
            ValueError when params have more than ``max_dims`` entries.
    """
    if isinstance(strategy, type):  # a strategy class of the evosax API
        missing = [a for a in ("init", "ask", "tell") if not callable(getattr(strategy, a,
                                                                               None))]
        if missing:
            raise TypeError(f"strategy class {strategy.__name__} lacks {missing}: an "
                            f"evosax-style strategy has init, ask and tell")
        cls, strategy = strategy, strategy.__name__
    elif not isinstance(strategy, str):
        raise TypeError(f"strategy must be a name (str) or an evosax-style strategy class, "
                        f"got {type(strategy).__name__}; allowed names: {list(STRATEGIES)}")
    elif strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is not supported; allowed: {list(STRATEGIES)}")
    else:
        cls = getattr(_evosax(), strategy)
    check_callable(loss, "loss", "loss(params, *args) -> scalar")
    population_size = check_int(population_size, "population_size", minimum=2)
    if strategy in ANTITHETIC and population_size % 2:
        raise ValueError(f"population_size={population_size} must be even for {strategy} "
                         f"(it samples mirrored pairs)")
    sigma = None if sigma is None else check_positive(sigma, "sigma")
    eval_mean = check_bool(eval_mean, "eval_mean")
    chunk_size = check_int(chunk_size, "chunk_size", allow_none=True)
    if max_dims is None:
        max_dims = MAX_DIMS.get(strategy)
    else:
        max_dims = check_int(max_dims, "max_dims")
    ctor, overrides = _split_options(strategy, cls, population_size, sigma,
                                     dict(strategy_options), learning_rate)
    built: dict[int, Any] = {}

    def build(d: int):
        """The evosax strategy for a flat vector of d entries (built once per d)."""
        if d not in built:
            built[d] = cls(population_size=population_size,
                           solution=jnp.zeros((d,), jnp.float32), **ctor)
        return built[d]

    def init(params: PyTree) -> EvosaxState:
        check_params(params, "nothing to search over")
        flat, _ = ravel_pytree(params)
        d = int(flat.size)
        if max_dims is not None and d > max_dims:
            raise ValueError(
                f"{strategy} with population_size={population_size}: params have d={d} "
                f"entries, above the limit max_dims={max_dims}"
                + (f" ({strategy} keeps a d x d covariance, {2 * d * d * 4 / 2**30:.1f} GiB "
                   f"in float32 with its eigenvectors, and eigendecomposes it every step, "
                   f"O(d^3)); use 'Sep_CMA_ES' or 'SNES' (diagonal), a smaller net, or "
                   f"pass max_dims= to override" if strategy in MAX_DIMS else
                   "; pass a larger max_dims= to allow it"))
        es = build(d)
        es_params = es.default_params.replace(**overrides) if overrides else es.default_params
        es_params = jax.tree.map(jnp.asarray, es_params)
        # strategies' init ignore the key (their samples come from each step's key)
        es_state = es.init(jax.random.key(0), flat.astype(jnp.float32), es_params)
        es_state = jax.tree.map(_strong, es_state)
        return EvosaxState(params, es_state, es_params)

    def step(state: EvosaxState, key: PRNGKeyArray, *args) -> tuple[EvosaxState, dict]:
        check_key(key)
        flat, unravel = ravel_pytree(state.params)
        es = build(int(flat.size))
        ask_key, tell_key = jax.random.split(key)
        population, es_state = es.ask(ask_key, state.es_state, state.es_params)

        def f(x: Array) -> Array:
            out = jnp.asarray(loss(unravel(x), *args), jnp.float32)
            if out.shape != ():  # static: raised while tracing
                raise ValueError(f"loss must return a scalar; it returned shape {out.shape}")
            return out

        if chunk_size is None:
            losses = jax.vmap(f)(population)
        else:
            losses = jax.lax.map(f, population, batch_size=chunk_size)
        finite = jnp.isfinite(losses)
        n_finite = jnp.sum(finite)
        worst = jnp.max(jnp.where(finite, losses, -jnp.inf))
        fitness = jnp.where(finite, losses, worst)
        new, _ = es.tell(tell_key, population, fitness, es_state, state.es_params)
        checked = [getattr(new, fld.name) for fld in dataclasses.fields(new)
                   if fld.name not in _SKIP_FIELDS]
        floats = [x for x in jax.tree.leaves(checked)
                  if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
        ok = (n_finite > 0) & all_finite(floats)
        new = jax.tree.map(lambda n, o: jax.lax.convert_element_type(
            jnp.where(ok, n, o), jnp.result_type(o)), new, state.es_state)
        params = jax.tree.map(lambda n, o: jnp.where(ok, n, o), unravel(new.mean),
                              state.params)
        if eval_mean:
            value = f(flat)
        else:
            value = jnp.where(n_finite > 0, jnp.min(jnp.where(finite, losses, jnp.inf)),
                              jnp.nan)
        info = {
            "loss": value,
            "evals": jnp.asarray(population_size + (1 if eval_mean else 0), jnp.int32),
            "skipped": (~ok).astype(jnp.int32),
            "dropped": (population_size - n_finite).astype(jnp.int32),
        }
        return EvosaxState(params, new, state.es_params), info

    return Method(init, step, f"evosax_{strategy}")

