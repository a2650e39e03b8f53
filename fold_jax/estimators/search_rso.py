"""Random search optimization (RSO): a few coordinates perturbed per candidate, taken under
the shared acceptance rule (:mod:`fold_jax.estimators.search_rule`). Re-exported by
:mod:`fold_jax.estimators.search`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray, PyTree

from fold_jax.checks import (
    check_bool,
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

__all__ = ["RSOState", "rso"]


class RSOState(NamedTuple):
    """State of :func:`rso`: as :class:`GLDState`, plus the (n,) per-coordinate step
    standard deviations ``scales``."""

    params: PyTree
    scales: Array  # (n,) per-coordinate step std
    challenger: Array  # as in GLDState
    needed: Array
    loss: Array


def rso(
    fun: Callable[..., Array],
    *,
    num_candidates: int = 16,
    block_size: int = 1,
    sigma: float = 0.1,
    relative: bool = True,
    mask: PyTree | None = None,
    acceptance: str = DEFAULT_ACCEPTANCE,
    confirmations: int | None = None,
    eval_batch: tuple | None = None,
    population_map: Callable = jax.vmap,
) -> Method:
    """Random Search Optimization (Tripathi & Singh 2020), vectorized.

    Each step draws ``num_candidates`` random blocks of ``block_size`` coordinates
    (block_size=1: one weight, as in the paper), a Gaussian change delta for each
    (std ``scales``: ``sigma * std(leaf)`` at init when ``relative`` and the leaf is
    not constant, else ``sigma``), evaluates x + delta and x - delta for every block
    in one vmap and keeps the best if it beats x under ``acceptance``. With K =
    2 * num_candidates, evals are as in :func:`gld`.

    Args:
        fun: ``fun(params, *args) -> scalar`` loss.
        num_candidates: blocks per step (int >= 1); each is tried with +delta and -delta.
        block_size: coordinates per block (int >= 1).
        sigma: step std, relative to each leaf's std when ``relative``.
        relative: scale sigma by each non-constant leaf's std at init.
        mask: optional pytree like params; only its nonzero entries move.
        acceptance: how a step decides, one of ``ACCEPTANCE`` (:mod:`fold_jax.estimators.search`):
            "reevaluate" (default), "batch" or "fixed_set".
        confirmations: "reevaluate" only: the fresh batches a nominated candidate must
            also win (an int >= 1; None: ``DEFAULT_CONFIRMATIONS`` = 2).
        eval_batch: "fixed_set" only (and required there): a tuple of the arguments
            fun takes after params, e.g. ``(x_eval, y_eval)``; every decision evaluates
            ``fun(params, *eval_batch)`` and the step's own args are ignored.
        population_map: as in :func:`gld`.

    Returns:
        A :class:`fold_jax.estimators.methods.Method`; ``step(state, key, *args) -> (state, info)``
        with info ``loss``, ``evals``, ``accepted`` and ``pending`` (confirmations the
        nominated candidate still needs after the step; 0 when none, always 0 for
        "batch" and "fixed_set").

    Raises:
        ValueError / TypeError: naming the bad argument (before anything is traced).
    """
    check_callable(fun, "fun", "fun(params, *args) -> scalar")
    check_int(num_candidates, "num_candidates")
    check_int(block_size, "block_size")
    check_positive(sigma, "sigma")
    relative = check_bool(relative, "relative")
    check_callable(population_map, "population_map", "population_map(f) -> batched f")
    rule = acceptance_rule(acceptance, confirmations, eval_batch)
    flat_mask = flatten_mask(mask)
    allowed = None if flat_mask is None else np.flatnonzero(flat_mask)

    def init(params: PyTree) -> RSOState:
        def scale(w):
            std = jnp.std(w) if relative and jnp.size(w) > 1 else jnp.float32(0)
            s = jnp.where(std > 0, sigma * std, sigma)
            return jnp.full(jnp.shape(w), s, jnp.float32)

        check_params(params, "nothing to search over")
        check_mask(mask, params)  # a mask unlike params would move the wrong entries
        x, _ = ravel_pytree(params)
        scales, _ = ravel_pytree(jax.tree.map(scale, params))
        if allowed is None and block_size > x.shape[0]:
            raise ValueError(f"block_size={block_size} exceeds the {x.shape[0]} parameters")
        return RSOState(params, scales.astype(x.dtype), *fresh_trial(x))

    def step(state: RSOState, key: PRNGKeyArray, *args) -> tuple[RSOState, dict]:
        x, unravel = flatten_params(state.params, key)
        f = flat_loss(fun, unravel, args if rule.eval_batch is None else rule.eval_batch)

        def propose(f):
            k_idx, k_delta = jax.random.split(key)
            shape = (num_candidates, block_size)
            if allowed is None:
                idx = jax.random.randint(k_idx, shape, 0, x.shape[0])
            else:
                idx = jnp.asarray(allowed)[jax.random.randint(k_idx, shape, 0, allowed.size)]
            delta = jax.random.normal(k_delta, shape, x.dtype) * state.scales[idx]
            delta = jnp.concatenate([delta, -delta])
            idx = jnp.concatenate([idx, idx])
            def moved(i, d):  # (block,), (block,) -> (n,): x with the block changed
                # scattered into fresh zeros, not into the closed-over x: inside lax.cond,
                # shard_map (parallel.population_map) rejects a gather on a captured x
                return x + jnp.zeros(x.shape, x.dtype).at[i].add(d)

            values = population_map(lambda i, d: f(moved(i, d)))(idx, delta)
            return values, lambda b: moved(idx[b], delta[b])

        out = decide(rule, f, x, state, propose, 2 * num_candidates, population_map)
        new = RSOState(unravel(out.x), state.scales, out.challenger, out.needed, out.cached)
        return new, search_info(out)

    return Method(init, step, "rso")
