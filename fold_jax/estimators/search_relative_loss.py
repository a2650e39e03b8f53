"""The essay's fixed-radius "relative loss" search:
:func:`fold_jax.estimators.search_gld.gld` with one radius and candidates on the sphere,
under the shared acceptance rule (:mod:`fold_jax.estimators.search_rule`). Re-exported by
:mod:`fold_jax.estimators.search`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray, PyTree

from fold_jax.checks import (
    check_callable,
    check_int,
    check_mask,
    check_params,
    check_positive,
)
from fold_jax.estimators.methods import Method
from fold_jax.estimators.search_gld import GLDState
from fold_jax.estimators.search_rule import (
    DEFAULT_ACCEPTANCE,
    acceptance_rule,
    decide,
    flat_loss,
    flatten_mask,
    flatten_params,
    fresh_trial,
    search_info,
)

__all__ = ["relative_loss"]


def relative_loss(
    fun: Callable[..., Array],
    *,
    radius: float = 0.01,
    num_candidates: int = 1,
    mask: PyTree | None = None,
    acceptance: str = DEFAULT_ACCEPTANCE,
    confirmations: int | None = None,
    eval_batch: tuple | None = None,
    population_map: Callable = jax.vmap,
) -> Method:
    """The essay's "relative loss" search, literally: sample a point at a fixed distance
    ``radius`` around the current point x (uniform on the sphere ||y - x|| = radius),
    and move there if its loss is lower.

    It is :func:`gld` with a single radius and candidates on the sphere rather than in
    the ball, or a (1+1)-ES without step-size adaptation: the radius never changes, so
    it cannot get closer to a minimum than about ``radius`` (tests/test_search.py
    checks both the fixed step and that floor). With ``num_candidates`` K > 1 the best
    of K points on the sphere is the candidate. evals as in :func:`gld`.

    Args:
        fun: ``fun(params, *args) -> scalar`` loss.
        radius: the fixed step length (positive), in parameter units.
        num_candidates: points sampled per step (int >= 1).
        mask: optional pytree like params; only its nonzero entries move (the step is
            ``radius`` long within them).
        acceptance: how a step decides, one of ``ACCEPTANCE`` (:mod:`fold_jax.estimators.search`).
        confirmations: "reevaluate" only, as in :func:`gld`.
        eval_batch: "fixed_set" only (and required there), as in :func:`gld`.
        population_map: as in :func:`gld`.

    Returns:
        A :class:`fold_jax.estimators.methods.Method` named "relative_loss"; ``step(state, key,
        *args) -> (state, info)`` with info ``loss``, ``evals``, ``accepted`` and
        ``pending`` (as in :func:`gld`).

    Raises:
        ValueError / TypeError: naming the bad argument (before anything is traced).
    """
    check_callable(fun, "fun", "fun(params, *args) -> scalar")
    check_positive(radius, "radius")
    check_int(num_candidates, "num_candidates")
    check_callable(population_map, "population_map", "population_map(f) -> batched f")
    rule = acceptance_rule(acceptance, confirmations, eval_batch)
    flat_mask = flatten_mask(mask)

    def init(params: PyTree) -> GLDState:
        check_params(params, "nothing to search over")
        check_mask(mask, params)  # a mask unlike params would move the wrong entries
        x, _ = ravel_pytree(params)
        return GLDState(params, *fresh_trial(x))

    def step(state: GLDState, key: PRNGKeyArray, *args) -> tuple[GLDState, dict]:
        x, unravel = flatten_params(state.params, key)
        f = flat_loss(fun, unravel, args if rule.eval_batch is None else rule.eval_batch)
        m = jnp.ones_like(x) if flat_mask is None else jnp.asarray(flat_mask, x.dtype)

        def candidate(j):
            z = jax.random.normal(jax.random.fold_in(key, j), x.shape, x.dtype) * m
            return x + z * (radius / jnp.linalg.norm(z))

        def propose(f):
            cands = jax.vmap(candidate)(jnp.arange(num_candidates))
            return population_map(f)(cands), lambda i: cands[i]

        out = decide(rule, f, x, state, propose, num_candidates, population_map)
        new = GLDState(unravel(out.x), out.challenger, out.needed, out.cached)
        return new, search_info(out)

    return Method(init, step, "relative_loss")
