"""Gradientless Descent (Golovin et al. 2019), search variant, as a fold_jax Method:
candidates on a ladder of radii, taken under the shared acceptance rule
(:mod:`fold_jax.estimators.search_rule`). Re-exported by :mod:`fold_jax.estimators.search`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

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

__all__ = ["GLDState", "gld"]


class GLDState(NamedTuple):
    """State of :func:`gld`: the params, the flat challenger awaiting confirmation, the
    confirmations it still needs, and the cached loss of params (NaN: not known)."""

    params: PyTree
    challenger: Array  # (n,) flat point awaiting confirmation ("reevaluate"), else zeros
    needed: Array  # () int32: confirmations the challenger still needs; 0: none pending
    loss: Array  # () float32: loss of params on eval_batch ("fixed_set"); NaN: not known


def gld(
    fun: Callable[..., Array],
    *,
    max_radius: float = 1.0,
    min_radius: float = 1e-3,
    num_per_radius: int = 1,
    mask: PyTree | None = None,
    acceptance: str = DEFAULT_ACCEPTANCE,
    confirmations: int | None = None,
    eval_batch: tuple | None = None,
    population_map: Callable = jax.vmap,
) -> Method:
    """Gradientless Descent, search variant (Golovin et al. 2019, Alg. 1).

    Each step samples ``num_per_radius`` points uniformly in the ball of radius r_k
    around x for every radius of the ladder r_k = max_radius * 2^-k down to
    min_radius (K = (ceil(log2(R / r)) + 1) * num_per_radius candidates) and takes the
    best one if it beats x under ``acceptance``. evals: K + 1 ("batch", and
    "reevaluate" when nominating), 2 ("reevaluate" when confirming), K ("fixed_set",
    K + 1 on its first step).

    Args:
        fun: ``fun(params, *args) -> scalar`` loss.
        max_radius: R, the largest radius (positive).
        min_radius: r, the smallest radius (positive, <= R).
        num_per_radius: candidates per radius (int >= 1).
        mask: optional pytree like params; only its nonzero entries move.
        acceptance: how a step decides, one of ``ACCEPTANCE`` (:mod:`fold_jax.estimators.search`):
            "reevaluate" (default), "batch" or "fixed_set".
        confirmations: "reevaluate" only: the fresh batches a nominated candidate must
            also win (an int >= 1; None: ``DEFAULT_CONFIRMATIONS`` = 2).
        eval_batch: "fixed_set" only (and required there): a tuple of the arguments
            fun takes after params, e.g. ``(x_eval, y_eval)``; every decision evaluates
            ``fun(params, *eval_batch)`` and the step's own args are ignored.
        population_map: maps a loss over the candidates' leading axis (``jax.vmap``;
            :func:`fold_jax.learn.parallel.population_map` shards it over devices).

    Returns:
        A :class:`fold_jax.estimators.methods.Method`; ``step(state, key, *args) -> (state, info)``
        with info ``loss``, ``evals``, ``accepted`` and ``pending`` (confirmations the
        nominated candidate still needs after the step; 0 when none, always 0 for
        "batch" and "fixed_set").

    Raises:
        ValueError / TypeError: naming the bad argument (before anything is traced).
    """
    check_callable(fun, "fun", "fun(params, *args) -> scalar")
    check_positive(max_radius, "max_radius")
    check_positive(min_radius, "min_radius")
    if min_radius > max_radius:
        raise ValueError(f"min_radius={min_radius} must be <= max_radius={max_radius}")
    check_int(num_per_radius, "num_per_radius")
    check_callable(population_map, "population_map", "population_map(f) -> batched f")
    rule = acceptance_rule(acceptance, confirmations, eval_batch)
    n_radii = math.ceil(math.log2(max_radius / min_radius)) + 1
    radii = jnp.repeat(max_radius * 2.0 ** -jnp.arange(n_radii, dtype=jnp.float32),
                       num_per_radius)
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
        dim = jnp.sum(m)

        def candidate(j, radius):
            kz, ku = jax.random.split(jax.random.fold_in(key, j))
            z = jax.random.normal(kz, x.shape, x.dtype) * m
            length = radius * jax.random.uniform(ku, dtype=x.dtype) ** (1.0 / dim)
            return x + z * (length / jnp.linalg.norm(z))

        def propose(f):
            cands = jax.vmap(candidate)(jnp.arange(radii.shape[0]), radii)
            return population_map(f)(cands), lambda i: cands[i]

        out = decide(rule, f, x, state, propose, radii.shape[0], population_map)
        new = GLDState(unravel(out.x), out.challenger, out.needed, out.cached)
        return new, search_info(out)

    return Method(init, step, "gld")
