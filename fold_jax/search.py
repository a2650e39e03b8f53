"""Comparison-based direct search: GLD, RSO and the (1+1)-ES, as fold_jax Methods.

Each builder returns :class:`fold_jax.methods.Method` with ``init(params) -> state``
(``state.params`` is the current point) and ``step(state, key, *args) -> (state,
info)``; info holds ``loss`` (the loss of the point kept, on ``args``), ``evals``
(loss evaluations spent: the current point is re-evaluated on ``args`` every step,
so minibatches are compared fairly) and ``accepted`` (0/1).

Invariants: only comparisons of losses are used (all three are invariant to strictly
increasing transforms of the loss); a candidate replaces the current point only if
its loss on the same ``args`` is strictly lower; NaN/inf candidates are never taken
(a non-finite current loss counts as +inf, so any finite candidate may replace it).
Candidates of a step are evaluated together with ``population_map`` (``jax.vmap``
by default; :func:`fold_jax.parallel.population_map` shards them over devices) over
a flat parameter vector (``jax.flatten_util.ravel_pytree``).
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

from fold_jax.checks import check_callable, check_int, check_key, check_params, check_positive
from fold_jax.methods import Method

__all__ = ["GLDState", "OnePlusOneState", "RSOState", "gld", "one_plus_one", "rso"]


class GLDState(NamedTuple):
    params: PyTree


class RSOState(NamedTuple):
    params: PyTree
    scales: Array  # (n,) per-coordinate step std


class OnePlusOneState(NamedTuple):
    params: PyTree
    sigma: Array  # scalar step size


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


def gld(
    fun: Callable[..., Array],
    *,
    max_radius: float = 1.0,
    min_radius: float = 1e-3,
    num_per_radius: int = 1,
    mask: PyTree | None = None,
    population_map: Callable = jax.vmap,
) -> Method:
    """Gradientless Descent, search variant (Golovin et al. 2019, Alg. 1).

    Each step samples ``num_per_radius`` points uniformly in the ball of radius r_k
    around x for every radius of the ladder r_k = max_radius * 2^-k down to
    min_radius (K = ceil(log2(R / r)) + 1 radii) and moves to the best one if it
    beats x. evals = K * num_per_radius + 1.
    """
    check_callable(fun, "fun", "fun(params, *args) -> scalar")
    check_positive(max_radius, "max_radius")
    check_positive(min_radius, "min_radius")
    if min_radius > max_radius:
        raise ValueError(f"min_radius={min_radius} must be <= max_radius={max_radius}")
    check_int(num_per_radius, "num_per_radius")
    n_radii = math.ceil(math.log2(max_radius / min_radius)) + 1
    radii = jnp.repeat(max_radius * 2.0 ** -jnp.arange(n_radii, dtype=jnp.float32),
                       num_per_radius)
    flat_mask = _flat_mask(mask)

    def init(params: PyTree) -> GLDState:
        check_params(params, "nothing to search over")
        return GLDState(params)

    def step(state: GLDState, key: PRNGKeyArray, *args) -> tuple[GLDState, dict]:
        x, unravel = _flat(state.params, key)
        f = _losses(fun, unravel, args)
        m = jnp.ones_like(x) if flat_mask is None else jnp.asarray(flat_mask, x.dtype)
        dim = jnp.sum(m)

        def candidate(j, radius):
            kz, ku = jax.random.split(jax.random.fold_in(key, j))
            z = jax.random.normal(kz, x.shape, x.dtype) * m
            length = radius * jax.random.uniform(ku, dtype=x.dtype) ** (1.0 / dim)
            return x + z * (length / jnp.linalg.norm(z))

        cands = jax.vmap(candidate)(jnp.arange(radii.shape[0]), radii)
        f0 = f(x)
        best, accept, loss = _select(f0, population_map(f)(cands))
        new = jnp.where(accept, cands[best], x)
        info = {"loss": loss, "evals": jnp.int32(radii.shape[0] + 1),
                "accepted": accept.astype(jnp.int32)}
        return GLDState(unravel(new)), info

    return Method(init, step, "gld")


def rso(
    fun: Callable[..., Array],
    *,
    num_candidates: int = 16,
    block_size: int = 1,
    sigma: float = 0.1,
    relative: bool = True,
    mask: PyTree | None = None,
    population_map: Callable = jax.vmap,
) -> Method:
    """Random Search Optimization (Tripathi & Singh 2020), vectorized.

    Each step draws ``num_candidates`` random blocks of ``block_size`` coordinates
    (block_size=1: one weight, as in the paper), a Gaussian change delta for each
    (std ``scales``: ``sigma * std(leaf)`` at init when ``relative`` and the leaf is
    not constant, else ``sigma``), evaluates x + delta and x - delta for every block
    in one vmap and keeps the best if it beats x. evals = 2 * num_candidates + 1.
    """
    check_callable(fun, "fun", "fun(params, *args) -> scalar")
    check_int(num_candidates, "num_candidates")
    check_int(block_size, "block_size")
    check_positive(sigma, "sigma")
    flat_mask = _flat_mask(mask)
    allowed = None if flat_mask is None else np.flatnonzero(flat_mask)

    def init(params: PyTree) -> RSOState:
        def scale(w):
            std = jnp.std(w) if relative and jnp.size(w) > 1 else jnp.float32(0)
            s = jnp.where(std > 0, sigma * std, sigma)
            return jnp.full(jnp.shape(w), s, jnp.float32)

        check_params(params, "nothing to search over")
        x, _ = ravel_pytree(params)
        scales, _ = ravel_pytree(jax.tree.map(scale, params))
        if allowed is None and block_size > x.shape[0]:
            raise ValueError(f"block_size={block_size} exceeds the {x.shape[0]} parameters")
        return RSOState(params, scales.astype(x.dtype))

    def step(state: RSOState, key: PRNGKeyArray, *args) -> tuple[RSOState, dict]:
        x, unravel = _flat(state.params, key)
        f = _losses(fun, unravel, args)
        k_idx, k_delta = jax.random.split(key)
        shape = (num_candidates, block_size)
        if allowed is None:
            idx = jax.random.randint(k_idx, shape, 0, x.shape[0])
        else:
            idx = jnp.asarray(allowed)[jax.random.randint(k_idx, shape, 0, allowed.size)]
        delta = jax.random.normal(k_delta, shape, x.dtype) * state.scales[idx]
        delta = jnp.concatenate([delta, -delta])
        idx = jnp.concatenate([idx, idx])
        f0 = f(x)
        values = population_map(lambda i, d: f(x.at[i].add(d)))(idx, delta)
        best, accept, loss = _select(f0, values)
        new = jnp.where(accept, x.at[idx[best]].add(delta[best]), x)
        info = {"loss": loss, "evals": jnp.int32(2 * num_candidates + 1),
                "accepted": accept.astype(jnp.int32)}
        return RSOState(unravel(new), state.scales), info

    return Method(init, step, "rso")


def one_plus_one(
    fun: Callable[..., Array],
    *,
    sigma: float = 0.01,
    damping: float = 3.0,
    mask: PyTree | None = None,
) -> Method:
    """(1+1)-ES with the 1/5 success rule (Rechenberg; Auger & Hansen's form).

    Candidate y = x + sigma z, z ~ N(0, I) (masked); x <- y if f(y) < f(x). Then
    log sigma += (success - 1/5) / (4/5 * damping): times exp(1/damping) on success,
    exp(-1/(4 damping)) on failure, so sigma is stationary at a 1/5 success rate.
    evals = 2.
    """
    check_callable(fun, "fun", "fun(params, *args) -> scalar")
    check_positive(sigma, "sigma")
    check_positive(damping, "damping")
    flat_mask = _flat_mask(mask)

    def init(params: PyTree) -> OnePlusOneState:
        check_params(params, "nothing to search over")
        return OnePlusOneState(params, jnp.asarray(sigma, jnp.float32))

    def step(state: OnePlusOneState, key: PRNGKeyArray, *args):
        x, unravel = _flat(state.params, key)
        f = _losses(fun, unravel, args)
        z = jax.random.normal(key, x.shape, x.dtype)
        if flat_mask is not None:
            z = z * jnp.asarray(flat_mask, x.dtype)
        y = x + state.sigma.astype(x.dtype) * z
        f0 = f(x)
        _, accept, loss = _select(f0, f(y)[None])
        success = accept.astype(jnp.float32)
        sigma_new = state.sigma * jnp.exp((success - 0.2) / (0.8 * damping))
        info = {"loss": loss, "evals": jnp.int32(2), "accepted": accept.astype(jnp.int32),
                "sigma": sigma_new}
        return OnePlusOneState(unravel(jnp.where(accept, y, x)), sigma_new), info

    return Method(init, step, "one_plus_one")
