"""Comparison-based direct search: GLD, RSO, the (1+1)-ES and the essay's fixed-radius
relative-loss search, as fold_jax Methods.

Each builder returns :class:`fold_jax.methods.Method` with ``init(params) -> state``
(``state.params`` is the current point) and ``step(state, key, *args) -> (state,
info)``; info holds ``loss`` (the loss of the point kept, on the arguments the step
decided on), ``evals`` (loss evaluations the step spent, every re-evaluation counted)
and ``accepted`` (0/1: the step moved).

How a step decides is the ``acceptance`` rule (``ACCEPTANCE``), one option of every
builder. With K candidates a step:

- ``"reevaluate"`` (the default, ``DEFAULT_ACCEPTANCE``): either *nominates* or
  *confirms*. A nominating step evaluates the current point x and its K candidates on
  its args; the best candidate that beats x becomes the challenger, and nothing moves
  (evals K + 1). Each of the next ``confirmations`` steps re-evaluates x and the
  challenger on its own args (evals 2); the challenger replaces x at the last of them
  if it beat x on every one, and is dropped the first time it does not. Why: the best
  of K noisy minibatch losses is biased toward the candidate luckiest on that batch
  (the winner's curse, or "overvaluation" in the noisy-ES literature: Arnold & Beyer
  2002; Hansen et al. 2009's uncertainty handling re-evaluates for the same reason).
  A confirmation is decided on a batch drawn after the challenger was fixed, so it has
  no selection bias, and a challenger that is truly no better than x (median paired
  difference >= 0) passes c independent confirmations with probability <= 2^-c: a
  sign test, which needs no noise level and no loss scale.
  The price: at most one move per ``confirmations`` + 1 steps, so early in a run,
  where the batch signal dominates its noise, it descends more slowly per step than
  "batch" (digits MLP, batch 128, 500 steps: GLD's training loss 2.33 -> 1.91 against
  1.09), but it keeps descending where "batch" turns around.
- ``"batch"``: moves to the best candidate when it beats x on the step's args, the
  rule of the original methods (exact losses). On minibatches its selection bias adds
  up: the full-data loss drifts upward while every step lowers its own batch's loss
  (4000-example, 40-feature, 10-class Gaussian blobs, linear softmax, batch 256: GLD
  2.66 -> 2.67 -> 3.03 over 2000 / 16k steps where "reevaluate" reached 1.73 / 1.40;
  tests/test_search.py checks it). evals K + 1.
- ``"fixed_set"``: every decision evaluates ``fun(params, *eval_batch)`` on fixed
  arguments given to the builder (e.g. ``eval_batch=(x_eval, y_eval)``, a subset of the
  training data); the step's args are ignored. That loss is deterministic, so
  ``info["loss"]`` never increases, and x's loss is kept in the state rather than
  re-evaluated: evals K (K + 1 on the first step). One evaluation covers all of
  ``eval_batch``: compare methods by evals x examples when batch sizes differ. The
  search fits that subset, so take it large beside the parameter count: on the blobs
  above, a 512-example subset for 410 parameters took the full-set loss from 2.66 to
  1.73 in 2000 steps and back up to 2.06 by 16k (the subset's own loss kept falling).

Invariants (every rule): only comparisons of losses are used, so all three methods
are invariant to strictly increasing transforms of the loss; a step moves only to a
point whose loss on the arguments that step decided on is strictly lower than x's (it
never accepts a higher loss); NaN/inf candidates are never taken (a non-finite
current loss counts as +inf, so any finite candidate may replace it). Candidates of
a step are evaluated together with ``population_map`` (``jax.vmap`` by default;
:func:`fold_jax.parallel.population_map` shards them over devices) over a flat
parameter vector (``jax.flatten_util.ravel_pytree``). Nominating and confirming are
the two branches of a ``lax.cond``, so only one runs and ``evals`` counts that one
(under ``jax.vmap`` of the step, both run).
"""

from __future__ import annotations

import math
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
    check_choice,
    check_int,
    check_key,
    check_mask,
    check_params,
    check_positive,
)
from fold_jax.methods import Method, info_type

__all__ = ["ACCEPTANCE", "DEFAULT_ACCEPTANCE", "DEFAULT_CONFIRMATIONS", "GLDState",
           "OnePlusOneState", "RSOState", "SearchInfo", "gld", "one_plus_one",
           "relative_loss", "rso"]

ACCEPTANCE = ("reevaluate", "batch", "fixed_set")
DEFAULT_ACCEPTANCE = "reevaluate"
DEFAULT_CONFIRMATIONS = 2  # fresh-batch wins a challenger needs ("reevaluate")


class GLDState(NamedTuple):
    """State of :func:`gld`: the params, the flat challenger awaiting confirmation, the
    confirmations it still needs, and the cached loss of params (NaN: not known)."""

    params: PyTree
    challenger: Array  # (n,) flat point awaiting confirmation ("reevaluate"), else zeros
    needed: Array  # () int32: confirmations the challenger still needs; 0: none pending
    loss: Array  # () float32: loss of params on eval_batch ("fixed_set"); NaN: not known


class RSOState(NamedTuple):
    """State of :func:`rso`: as :class:`GLDState`, plus the (n,) per-coordinate step
    standard deviations ``scales``."""

    params: PyTree
    scales: Array  # (n,) per-coordinate step std
    challenger: Array  # as in GLDState
    needed: Array
    loss: Array


class OnePlusOneState(NamedTuple):
    """State of :func:`one_plus_one`: as :class:`GLDState`, plus the step size ``sigma``."""

    params: PyTree
    sigma: Array  # scalar step size
    challenger: Array  # as in GLDState
    needed: Array
    loss: Array


class _Rule(NamedTuple):
    """A checked acceptance rule: its name, confirmations and fixed arguments."""

    name: str
    confirmations: int
    eval_batch: tuple | None


class _Outcome(NamedTuple):
    """What a decision gives the step (all arrays)."""

    x: Array  # (n,) the point kept
    loss: Array  # () its loss on the arguments decided on
    accepted: Array  # () bool: moved
    concluded: Array  # () bool: a trial ended (moved, or its candidate was rejected)
    challenger: Array  # (n,)
    needed: Array  # () int32
    cached: Array  # () float32
    evals: Array  # () int32


def _rule(acceptance: str, confirmations: int | None, eval_batch: tuple | None) -> _Rule:
    """The acceptance options checked: ValueError / TypeError naming the argument."""
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
        return _Rule(acceptance, k, None)
    if eval_batch is None:
        raise ValueError("acceptance='fixed_set' needs eval_batch=(x_eval, y_eval): the "
                         "arguments fun(params, *eval_batch) is evaluated on for every "
                         "decision")
    return _Rule(acceptance, k, _check_eval_batch(eval_batch))


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


def _flat(params: PyTree, key) -> tuple[Array, Callable]:
    """Checked ``ravel_pytree(params)`` for a step called with ``key``."""
    check_key(key)
    check_params(params, "nothing to search over")
    return ravel_pytree(params)


def _flat_mask(mask: PyTree | None) -> np.ndarray | None:
    if mask is None:
        return None
    flat, _ = ravel_pytree(jax.tree.map(lambda m: jnp.asarray(m != 0, jnp.float32), mask))
    flat = np.asarray(flat)
    if not flat.any():
        raise ValueError("mask has no nonzero entry: nothing to search over")
    return flat


def _losses(fun, unravel, args):
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


def _trial(x: Array) -> tuple[Array, Array, Array]:
    """The acceptance fields of a fresh state: no challenger, no cached loss."""
    return jnp.zeros_like(x), jnp.int32(0), jnp.float32(jnp.nan)


Propose = Callable[[Callable[[Array], Array]], tuple[Array, Callable[[Array], Array]]]


def _decide(rule: _Rule, f: Callable[[Array], Array], x: Array, state: NamedTuple,
            propose: Propose, n_candidates: int, population_map: Callable) -> _Outcome:
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
        The :class:`_Outcome`.
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
        return _Outcome(new, loss, accept, jnp.asarray(True), state.challenger, state.needed,
                        cached, jnp.asarray(evals, jnp.int32))

    def confirm() -> _Outcome:
        f0, fc = population_map(f)(jnp.stack([x, state.challenger]))
        current = jnp.where(jnp.isfinite(f0), f0, jnp.inf)
        win = jnp.isfinite(fc) & (fc < current)
        accept = win & (state.needed == 1)
        return _Outcome(jnp.where(accept, state.challenger, x), jnp.where(accept, fc, f0),
                        accept, accept | ~win, state.challenger,
                        jnp.where(win, state.needed - 1, 0).astype(jnp.int32), state.loss,
                        jnp.int32(2))

    def nominate() -> _Outcome:
        f0 = f(x)
        values, take = propose(f)
        best, nominated, _ = _select(f0, values)
        return _Outcome(x, f0, false, ~nominated,
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
            search without confirmations, e.g. :func:`fold_jax.binary.flip_search`).
        sigma: float32, the new step size ((1+1)-ES only; None for the others).
    """

    loss: Array
    evals: Array
    accepted: Array
    pending: Array | None = None
    sigma: Array | None = None


def _info(out: _Outcome, sigma: Array | None = None) -> SearchInfo:
    return SearchInfo(out.loss, out.evals, out.accepted.astype(jnp.int32), out.needed, sigma)


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
        acceptance: how a step decides, one of ``ACCEPTANCE`` (module docstring):
            "reevaluate" (default), "batch" or "fixed_set".
        confirmations: "reevaluate" only: the fresh batches a nominated candidate must
            also win (an int >= 1; None: ``DEFAULT_CONFIRMATIONS`` = 2).
        eval_batch: "fixed_set" only (and required there): a tuple of the arguments
            fun takes after params, e.g. ``(x_eval, y_eval)``; every decision evaluates
            ``fun(params, *eval_batch)`` and the step's own args are ignored.
        population_map: maps a loss over the candidates' leading axis (``jax.vmap``;
            :func:`fold_jax.parallel.population_map` shards it over devices).

    Returns:
        A :class:`fold_jax.methods.Method`; ``step(state, key, *args) -> (state, info)``
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
    rule = _rule(acceptance, confirmations, eval_batch)
    n_radii = math.ceil(math.log2(max_radius / min_radius)) + 1
    radii = jnp.repeat(max_radius * 2.0 ** -jnp.arange(n_radii, dtype=jnp.float32),
                       num_per_radius)
    flat_mask = _flat_mask(mask)

    def init(params: PyTree) -> GLDState:
        check_params(params, "nothing to search over")
        check_mask(mask, params)  # a mask unlike params would move the wrong entries
        x, _ = ravel_pytree(params)
        return GLDState(params, *_trial(x))

    def step(state: GLDState, key: PRNGKeyArray, *args) -> tuple[GLDState, dict]:
        x, unravel = _flat(state.params, key)
        f = _losses(fun, unravel, args if rule.eval_batch is None else rule.eval_batch)
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

        out = _decide(rule, f, x, state, propose, radii.shape[0], population_map)
        new = GLDState(unravel(out.x), out.challenger, out.needed, out.cached)
        return new, _info(out)

    return Method(init, step, "gld")


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
        acceptance: how a step decides, one of ``ACCEPTANCE`` (module docstring):
            "reevaluate" (default), "batch" or "fixed_set".
        confirmations: "reevaluate" only: the fresh batches a nominated candidate must
            also win (an int >= 1; None: ``DEFAULT_CONFIRMATIONS`` = 2).
        eval_batch: "fixed_set" only (and required there): a tuple of the arguments
            fun takes after params, e.g. ``(x_eval, y_eval)``; every decision evaluates
            ``fun(params, *eval_batch)`` and the step's own args are ignored.
        population_map: as in :func:`gld`.

    Returns:
        A :class:`fold_jax.methods.Method`; ``step(state, key, *args) -> (state, info)``
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
    rule = _rule(acceptance, confirmations, eval_batch)
    flat_mask = _flat_mask(mask)
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
        return RSOState(params, scales.astype(x.dtype), *_trial(x))

    def step(state: RSOState, key: PRNGKeyArray, *args) -> tuple[RSOState, dict]:
        x, unravel = _flat(state.params, key)
        f = _losses(fun, unravel, args if rule.eval_batch is None else rule.eval_batch)

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

        out = _decide(rule, f, x, state, propose, 2 * num_candidates, population_map)
        new = RSOState(unravel(out.x), state.scales, out.challenger, out.needed, out.cached)
        return new, _info(out)

    return Method(init, step, "rso")


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
        acceptance: how a step decides, one of ``ACCEPTANCE`` (module docstring):
            "reevaluate" (default), "batch" or "fixed_set".
        confirmations: "reevaluate" only: the fresh batches a nominated candidate must
            also win (an int >= 1; None: ``DEFAULT_CONFIRMATIONS`` = 2).
        eval_batch: "fixed_set" only (and required there): a tuple of the arguments
            fun takes after params, e.g. ``(x_eval, y_eval)``; every decision evaluates
            ``fun(params, *eval_batch)`` and the step's own args are ignored.

    Returns:
        A :class:`fold_jax.methods.Method`; ``step(state, key, *args) -> (state, info)``
        with info ``loss``, ``evals``, ``accepted`` and ``pending`` (confirmations the
        nominated candidate still needs after the step; 0 when none, always 0 for
        "batch" and "fixed_set") and ``sigma`` (the new step size).

    Raises:
        ValueError / TypeError: naming the bad argument (before anything is traced).
    """
    check_callable(fun, "fun", "fun(params, *args) -> scalar")
    check_positive(sigma, "sigma")
    check_positive(damping, "damping")
    rule = _rule(acceptance, confirmations, eval_batch)
    flat_mask = _flat_mask(mask)

    def init(params: PyTree) -> OnePlusOneState:
        check_params(params, "nothing to search over")
        check_mask(mask, params)  # a mask unlike params would move the wrong entries
        x, _ = ravel_pytree(params)
        return OnePlusOneState(params, jnp.asarray(sigma, jnp.float32), *_trial(x))

    def step(state: OnePlusOneState, key: PRNGKeyArray, *args):
        x, unravel = _flat(state.params, key)
        f = _losses(fun, unravel, args if rule.eval_batch is None else rule.eval_batch)

        def propose(f):
            z = jax.random.normal(key, x.shape, x.dtype)
            if flat_mask is not None:
                z = z * jnp.asarray(flat_mask, x.dtype)
            y = x + state.sigma.astype(x.dtype) * z
            return f(y)[None], lambda _: y

        out = _decide(rule, f, x, state, propose, 1, jax.vmap)
        success = out.accepted.astype(jnp.float32)
        change = jnp.where(out.concluded, (success - 0.2) / (0.8 * damping), 0.0)
        sigma_new = state.sigma * jnp.exp(change)
        new = OnePlusOneState(unravel(out.x), sigma_new, out.challenger, out.needed, out.cached)
        return new, _info(out, sigma_new)

    return Method(init, step, "one_plus_one")


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
        acceptance: how a step decides, one of ``ACCEPTANCE`` (module docstring).
        confirmations: "reevaluate" only, as in :func:`gld`.
        eval_batch: "fixed_set" only (and required there), as in :func:`gld`.
        population_map: as in :func:`gld`.

    Returns:
        A :class:`fold_jax.methods.Method` named "relative_loss"; ``step(state, key,
        *args) -> (state, info)`` with info ``loss``, ``evals``, ``accepted`` and
        ``pending`` (as in :func:`gld`).

    Raises:
        ValueError / TypeError: naming the bad argument (before anything is traced).
    """
    check_callable(fun, "fun", "fun(params, *args) -> scalar")
    check_positive(radius, "radius")
    check_int(num_candidates, "num_candidates")
    check_callable(population_map, "population_map", "population_map(f) -> batched f")
    rule = _rule(acceptance, confirmations, eval_batch)
    flat_mask = _flat_mask(mask)

    def init(params: PyTree) -> GLDState:
        check_params(params, "nothing to search over")
        check_mask(mask, params)  # a mask unlike params would move the wrong entries
        x, _ = ravel_pytree(params)
        return GLDState(params, *_trial(x))

    def step(state: GLDState, key: PRNGKeyArray, *args) -> tuple[GLDState, dict]:
        x, unravel = _flat(state.params, key)
        f = _losses(fun, unravel, args if rule.eval_batch is None else rule.eval_batch)
        m = jnp.ones_like(x) if flat_mask is None else jnp.asarray(flat_mask, x.dtype)

        def candidate(j):
            z = jax.random.normal(jax.random.fold_in(key, j), x.shape, x.dtype) * m
            return x + z * (radius / jnp.linalg.norm(z))

        def propose(f):
            cands = jax.vmap(candidate)(jnp.arange(num_candidates))
            return population_map(f)(cands), lambda i: cands[i]

        out = _decide(rule, f, x, state, propose, num_candidates, population_map)
        new = GLDState(unravel(out.x), out.challenger, out.needed, out.cached)
        return new, _info(out)

    return Method(init, step, "relative_loss")
