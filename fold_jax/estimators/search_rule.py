"""The acceptance rules every direct search shares (``ACCEPTANCE``: "reevaluate",
"batch", "fixed_set"; documented in :mod:`fold_jax.estimators.search`): a checked :class:`Rule`,
:func:`decide` (one step's decision: nominate or confirm, or move on the step's or the
fixed arguments), the flat-vector helpers the methods evaluate candidates on, and the
typed step info :class:`SearchInfo`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PyTree

from fold_jax.checks import check_choice, check_int, check_key, check_params
from fold_jax.estimators.info import info_type

__all__ = ["ACCEPTANCE", "DEFAULT_ACCEPTANCE", "DEFAULT_CONFIRMATIONS", "Outcome", "Propose",
           "Rule", "SearchInfo", "acceptance_rule", "decide", "flat_loss", "flatten_mask",
           "flatten_params", "fresh_trial", "search_info"]

ACCEPTANCE = ("reevaluate", "batch", "fixed_set")
DEFAULT_ACCEPTANCE = "reevaluate"
DEFAULT_CONFIRMATIONS = 2  # fresh-batch wins a challenger needs ("reevaluate")

class Rule(NamedTuple):
    """A checked acceptance rule: its name, confirmations and fixed arguments."""

    name: str
    confirmations: int
    eval_batch: tuple | None


class Outcome(NamedTuple):
    """What a decision gives the step (all arrays)."""

    x: Array  # (n,) the point kept
    loss: Array  # () its loss on the arguments decided on
    accepted: Array  # () bool: moved
    concluded: Array  # () bool: a trial ended (moved, or its candidate was rejected)
    challenger: Array  # (n,)
    needed: Array  # () int32
    cached: Array  # () float32
    evals: Array  # () int32


def acceptance_rule(acceptance: str, confirmations: int | None, eval_batch: tuple | None) -> Rule:
    """The acceptance options of a search builder, checked.

    Args:
        acceptance: one of ``ACCEPTANCE``.
        confirmations: "reevaluate" only: fresh-batch wins a challenger needs (None:
            ``DEFAULT_CONFIRMATIONS``).
        eval_batch: "fixed_set" only (and required there): the fixed arguments.

    Returns:
        The :class:`Rule`.

    Raises:
        ValueError / TypeError: naming the bad argument.
    """
    check_choice(acceptance, "acceptance", ACCEPTANCE)
    if confirmations is not None and acceptance != "reevaluate":
        raise ValueError(f"confirmations={confirmations!r} is only used by acceptance="
                         f"'reevaluate', not {acceptance!r}: leave it None")
    k = DEFAULT_CONFIRMATIONS if confirmations is None else check_int(confirmations,
                                                                     "confirmations")
    if acceptance != "fixed_set":
        if eval_batch is not None:
            raise ValueError(f"eval_batch is only used by acceptance='fixed_set', not "
                             f"{acceptance!r}: pass acceptance='fixed_set' with it, or drop it")
        return Rule(acceptance, k, None)
    if eval_batch is None:
        raise ValueError("acceptance='fixed_set' needs eval_batch=(x_eval, y_eval): the "
                         "arguments fun(params, *eval_batch) is evaluated on for every "
                         "decision")
    return Rule(acceptance, k, _check_eval_batch(eval_batch))


def _check_eval_batch(eval_batch) -> tuple:
    """``eval_batch`` as a tuple of JAX arrays; TypeError / ValueError naming it."""
    if not isinstance(eval_batch, tuple | list):
        raise TypeError(f"eval_batch must be a tuple of the arguments fun takes after params, "
                        f"e.g. (x_eval, y_eval); got {type(eval_batch).__name__}")
    if not eval_batch:
        raise ValueError("eval_batch=() is empty: give the arguments fun takes after params, "
                         "e.g. (x_eval, y_eval)")
    try:
        batch = jax.tree.map(jnp.asarray, tuple(eval_batch))
    except TypeError as error:
        raise TypeError(f"eval_batch must hold arrays or numbers: {error}") from None
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
        if jnp.issubdtype(leaf.dtype, jnp.inexact) and not bool(jnp.all(jnp.isfinite(leaf))):
            raise ValueError(f"eval_batch{jax.tree_util.keystr(path)} has non-finite entries "
                             f"(NaN or inf): every decision would be made on them")
    return batch


def flatten_params(params: PyTree, key) -> tuple[Array, Callable]:
    """Checked ``ravel_pytree(params)`` for a step called with ``key``.

    Args:
        params: the current point (a pytree).
        key: the step's PRNG key (checked).

    Returns:
        ``(x, unravel)``: the flat (n,) point and its inverse.
    """
    check_key(key)
    check_params(params, "nothing to search over")
    return ravel_pytree(params)


def flatten_mask(mask: PyTree | None) -> np.ndarray | None:
    """A params-shaped 0/1 mask as the flat vector the candidates are multiplied by.

    Args:
        mask: a pytree like params (nonzero: searched) or None.

    Returns:
        The (n,) float32 0/1 vector, or None.

    Raises:
        ValueError: the mask has no nonzero entry.
    """
    if mask is None:
        return None
    flat, _ = ravel_pytree(jax.tree.map(lambda m: jnp.asarray(m != 0, jnp.float32), mask))
    flat = np.asarray(flat)
    if not flat.any():
        raise ValueError("mask has no nonzero entry: nothing to search over")
    return flat


def flat_loss(fun: Callable, unravel: Callable, args: tuple) -> Callable[[Array], Array]:
    """``fun`` on flat points with the arguments bound.

    Args:
        fun: ``fun(params, *args) -> scalar``.
        unravel: flat point -> params (from :func:`flatten_params`).
        args: the arguments the step decides on.

    Returns:
        ``f(x) -> float32 scalar``; a non-scalar loss raises ValueError while tracing.
    """
    def f(x):
        out = jnp.asarray(fun(unravel(x), *args), jnp.float32)
        if out.shape != ():  # static: raised while tracing, before anything runs
            raise ValueError(f"fun must return a scalar loss; it returned shape {out.shape}")
        return out

    return f


def _select(f0: Array, values: Array) -> tuple[Array, Array, Array]:
    """Best finite candidate; accept only if strictly below f0 (non-finite f0 = +inf)."""
    values = jnp.where(jnp.isfinite(values), values, jnp.inf)
    best = jnp.argmin(values)
    current = jnp.where(jnp.isfinite(f0), f0, jnp.inf)
    accept = values[best] < current
    return best, accept, jnp.where(accept, values[best], f0)


def fresh_trial(x: Array) -> tuple[Array, Array, Array]:
    """The acceptance fields of a fresh state: no challenger, no cached loss.

    Args:
        x: (n,) the flat starting point.

    Returns:
        ``(challenger zeros (n,), needed 0, loss NaN)``.
    """
    return jnp.zeros_like(x), jnp.int32(0), jnp.float32(jnp.nan)


Propose = Callable[[Callable[[Array], Array]], tuple[Array, Callable[[Array], Array]]]


def decide(rule: Rule, f: Callable[[Array], Array], x: Array, state: NamedTuple,
            propose: Propose, n_candidates: int, population_map: Callable) -> Outcome:
    """One step's decision under ``rule``.

    Args:
        rule: the checked acceptance rule.
        f: flat point (n,) -> scalar loss on the arguments the step decides on (the
            step's args, or ``eval_batch`` for "fixed_set").
        x: (n,) the current point.
        state: the method's state (its ``challenger``, ``needed`` and ``loss`` fields).
        propose: ``propose(f) -> (values, take)``: the K candidates' losses (K,) and
            ``take(i) -> (n,)``, candidate i's point.
        n_candidates: K, the evaluations ``propose`` spends.
        population_map: maps ``f`` over a leading axis (the re-evaluated pair).

    Returns:
        The :class:`Outcome`.
    """
    false = jnp.asarray(False)
    if rule.name != "reevaluate":
        if rule.name == "fixed_set":
            unknown = jnp.isnan(state.loss)
            f0 = jax.lax.cond(unknown, lambda: f(x), lambda: state.loss)
            evals = n_candidates + unknown.astype(jnp.int32)
        else:
            f0, evals = f(x), jnp.int32(n_candidates + 1)
        values, take = propose(f)
        best, accept, loss = _select(f0, values)
        new = jnp.where(accept, take(best), x)
        cached = loss if rule.name == "fixed_set" else state.loss
        return Outcome(new, loss, accept, jnp.asarray(True), state.challenger, state.needed,
                        cached, jnp.asarray(evals, jnp.int32))

    def confirm() -> Outcome:
        f0, fc = population_map(f)(jnp.stack([x, state.challenger]))
        current = jnp.where(jnp.isfinite(f0), f0, jnp.inf)
        win = jnp.isfinite(fc) & (fc < current)
        accept = win & (state.needed == 1)
        return Outcome(jnp.where(accept, state.challenger, x), jnp.where(accept, fc, f0),
                        accept, accept | ~win, state.challenger,
                        jnp.where(win, state.needed - 1, 0).astype(jnp.int32), state.loss,
                        jnp.int32(2))

    def nominate() -> Outcome:
        f0 = f(x)
        values, take = propose(f)
        best, nominated, _ = _select(f0, values)
        return Outcome(x, f0, false, ~nominated,
                        jnp.where(nominated, take(best), state.challenger),
                        jnp.where(nominated, rule.confirmations, 0).astype(jnp.int32),
                        state.loss, jnp.int32(n_candidates + 1))

    return jax.lax.cond(state.needed > 0, confirm, nominate)


@info_type
class SearchInfo(NamedTuple):
    """What a direct-search step reports (reads like a dict too: ``info["loss"]``).

    Attributes:
        loss: float32, the loss of the point kept (never above the previous step's).
        evals: int32, loss evaluations the step spent.
        accepted: int32, 1 when the step moved to a new point.
        pending: int32, confirmations the nominated challenger still needs (None for a
            search without confirmations, e.g. :func:`fold_jax.compress.binary.flip_search`).
        sigma: float32, the new step size ((1+1)-ES only; None for the others).
    """

    loss: Array
    evals: Array
    accepted: Array
    pending: Array | None = None
    sigma: Array | None = None


def search_info(out: Outcome, sigma: Array | None = None) -> SearchInfo:
    """A decision's step info.

    Args:
        out: the :class:`Outcome` of :func:`decide`.
        sigma: the new step size ((1+1)-ES), or None.

    Returns:
        The :class:`SearchInfo`.
    """
    return SearchInfo(out.loss, out.evals, out.accepted.astype(jnp.int32), out.needed, sigma)
