"""The (1+1)-ES with the 1/5th success rule, taken under the shared acceptance rule
(:mod:`fold_jax.estimators.search_rule`). Re-exported by :mod:`fold_jax.estimators.search`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray, PyTree

from fold_jax.checks import (
    check_callable,
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

__all__ = ["OnePlusOneState", "one_plus_one"]


class OnePlusOneState(NamedTuple):
    """State of :func:`one_plus_one`: as :class:`GLDState`, plus the step size ``sigma``."""

    params: PyTree
    sigma: Array  # scalar step size
    challenger: Array  # as in GLDState
    needed: Array
    loss: Array


def one_plus_one(
    fun: Callable[..., Array],
    *,
    sigma: float = 0.01,
    damping: float = 3.0,
    mask: PyTree | None = None,
    acceptance: str = DEFAULT_ACCEPTANCE,
    confirmations: int | None = None,
    eval_batch: tuple | None = None,
) -> Method:
    """(1+1)-ES with the 1/5 success rule (Rechenberg; Auger & Hansen's form).

    Candidate y = x + sigma z, z ~ N(0, I) (masked); x <- y if f(y) < f(x) under
    ``acceptance``. When a trial ends, log sigma += (success - 1/5) / (4/5 * damping):
    times exp(1/damping) on success, exp(-1/(4 damping)) on failure, so sigma is
    stationary at a 1/5 success rate. A trial ends every step under "batch" and
    "fixed_set"; under "reevaluate" it ends when its candidate is rejected (not
    nominated, or losing a confirmation) or accepted, and sigma stays put while a
    nominated candidate awaits confirmation. evals: 2 ("batch", "reevaluate"), 1
    ("fixed_set", 2 on its first step).

    Args:
        fun: ``fun(params, *args) -> scalar`` loss.
        sigma: the initial step size (positive).
        damping: d of the 1/5 rule (positive).
        mask: optional pytree like params; only its nonzero entries move.
        acceptance: how a step decides, one of ``ACCEPTANCE`` (:mod:`fold_jax.estimators.search`):
            "reevaluate" (default), "batch" or "fixed_set".
        confirmations: "reevaluate" only: the fresh batches a nominated candidate must
            also win (an int >= 1; None: ``DEFAULT_CONFIRMATIONS`` = 2).
        eval_batch: "fixed_set" only (and required there): a tuple of the arguments
            fun takes after params, e.g. ``(x_eval, y_eval)``; every decision evaluates
            ``fun(params, *eval_batch)`` and the step's own args are ignored.

    Returns:
        A :class:`fold_jax.estimators.methods.Method`; ``step(state, key, *args) -> (state, info)``
        with info ``loss``, ``evals``, ``accepted`` and ``pending`` (confirmations the
        nominated candidate still needs after the step; 0 when none, always 0 for
        "batch" and "fixed_set") and ``sigma`` (the new step size).

    Raises:
        ValueError / TypeError: naming the bad argument (before anything is traced).
    """
    check_callable(fun, "fun", "fun(params, *args) -> scalar")
    check_positive(sigma, "sigma")
    check_positive(damping, "damping")
    rule = acceptance_rule(acceptance, confirmations, eval_batch)
    flat_mask = flatten_mask(mask)

    def init(params: PyTree) -> OnePlusOneState:
        check_params(params, "nothing to search over")
        check_mask(mask, params)  # a mask unlike params would move the wrong entries
        x, _ = ravel_pytree(params)
        return OnePlusOneState(params, jnp.asarray(sigma, jnp.float32), *fresh_trial(x))

    def step(state: OnePlusOneState, key: PRNGKeyArray, *args):
        x, unravel = flatten_params(state.params, key)
        f = flat_loss(fun, unravel, args if rule.eval_batch is None else rule.eval_batch)

        def propose(f):
            z = jax.random.normal(key, x.shape, x.dtype)
            if flat_mask is not None:
                z = z * jnp.asarray(flat_mask, x.dtype)
            y = x + state.sigma.astype(x.dtype) * z
            return f(y)[None], lambda _: y

        out = decide(rule, f, x, state, propose, 1, jax.vmap)
        success = out.accepted.astype(jnp.float32)
        change = jnp.where(out.concluded, (success - 0.2) / (0.8 * damping), 0.0)
        sigma_new = state.sigma * jnp.exp(change)
        new = OnePlusOneState(unravel(out.x), sigma_new, out.challenger, out.needed, out.cached)
        return new, search_info(out, sigma_new)

    return Method(init, step, "one_plus_one")
