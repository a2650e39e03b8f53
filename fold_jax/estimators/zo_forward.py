"""The forward gradient (Baydin et al. 2022): the zeroth-order estimators' interface with
exact directional derivatives from ``jax.jvp`` instead of finite differences.

``forward_value_and_grad(fun, ...)(params, key, *args) -> (value, grads)`` draws its
tangents as :func:`fold_jax.estimators.zo.value_and_grad` draws gaussian directions, chunks them
with :func:`fold_jax.estimators.zo_schedule.scan_chunks` and shards them with a
:class:`fold_jax.estimators.zo_schedule.PopulationMap`. Re-exported by
:mod:`fold_jax.estimators.zo`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, PyTree

from fold_jax.checks import (
    check_callable,
    check_choice,
    check_int,
    check_key,
    check_params,
    check_scalar_loss,
    leaf_paths,
)
from fold_jax.estimators import directions as directions_lib
from fold_jax.estimators.info import EstimateInfo
from fold_jax.estimators.noise import PRNGS
from fold_jax.estimators.zo_estimator import Estimator
from fold_jax.estimators.zo_schedule import (
    PopulationMap,
    Sums,
    add_leaves,
    as_population_map,
    chunk_ids,
    flat_leaves,
    normalize,
    scan_chunks,
    shard_rows,
    zero_leaves,
)

__all__ = ["ForwardGradient", "forward_value_and_grad"]


class ForwardGradient(Estimator):
    """:func:`forward_value_and_grad`'s estimator."""

    def __init__(self, fun: Callable[..., Array], num_directions: int, prng: str,
                 population_map: PopulationMap | None, chunk_size: int | None = None):
        self.fun = fun
        self.num_directions = num_directions
        self.prng = prng
        self.population_map = population_map
        self.chunk_size = chunk_size
        per = num_directions if chunk_size is None else min(num_directions, chunk_size)
        self.chunks = (-(-num_directions // per), per)  # (chunks, tangents a chunk)
        # padding tangents are computed, so they are counted (as zo's padding is)
        self.evals = num_directions if population_map else self.chunks[0] * per

    def with_info(self, params, key, *args):
        """Same call as ``vg``; also returns an :class:`~fold_jax.estimators.info.EstimateInfo`
        (``valid_directions``, ``dropped_directions``)."""
        check_key(key)
        check_params(params, "nothing to perturb")
        check_scalar_loss(self.fun, params, args)
        leaves, treedef = flat_leaves(params)
        dirs = directions_lib.directions(leaves, noise="gaussian", prng=self.prng)
        f = lambda ls: jnp.asarray(self.fun(jax.tree.unflatten(treedef, ls), *args),  # noqa: E731
                                   jnp.float32)

        def derivatives(ids, parts=None):
            parts = dirs.stacked(key, ids) if parts is None else parts

            def one(u):
                tangents = [t.astype(w.dtype) for t, w in zip(u, leaves, strict=True)]
                return jax.jvp(f, (leaves,), (tangents,))

            values, derivs = jax.vmap(one)(parts)
            return values, derivs, jnp.isfinite(derivs) & jax.vmap(dirs.finite)(parts)

        pmap = self.population_map
        if pmap is not None:  # each device regenerates its tangents, only derivatives cross
            ks = jnp.arange(self.num_directions, dtype=jnp.uint32)
            parts = dirs.stacked(key, ks)
            values, derivs, valid = (v.reshape(-1)[: self.num_directions] for v in
                                     pmap(derivatives)(shard_rows(ks, pmap.shards)))
            sums = Sums(dirs.contract(derivs, valid, parts), values[0], jnp.sum(valid))
        else:  # chunk by chunk: only one chunk's tangents exist at a time
            def body(carry: Sums, ids: Array):
                parts = dirs.stacked(key, ids)
                values, derivs, valid = derivatives(ids, parts)
                valid = valid & (ids < self.num_directions)  # padding is dropped
                return Sums(add_leaves(carry.grads, dirs.contract(derivs, valid, parts)),
                            values[0], carry.count + jnp.sum(valid)), None

            sums = scan_chunks(body, Sums(zero_leaves(dirs), jnp.float32(0), jnp.int32(0)),
                                chunk_ids(*self.chunks))
        value, grads = normalize(sums, leaves, sums.value)
        n = sums.count.astype(jnp.int32)
        return value, jax.tree.unflatten(treedef, grads), EstimateInfo(
            n, jnp.int32(self.num_directions) - n)

    def describe(self, params: PyTree, *args) -> dict[str, Any]:
        """``path`` (always ``"full_rank"``), ``schedule``, ``evals`` and per-leaf shapes."""
        check_params(params, "nothing to perturb")
        return {"path": "full_rank", "schedule": "sharded" if self.population_map else "jvp",
                "evals": self.evals, "chunks": None if self.population_map else self.chunks,
                "leaves": {
                    p: {"shape": tuple(jnp.shape(w)), "noise": "full_rank",
                        "association": "full_rank"}
                    for p, w in zip(leaf_paths(params), jax.tree.leaves(params), strict=True)}}


def forward_value_and_grad(
    fun: Callable[..., Array],
    *,
    num_directions: int = 1,
    prng: str = "hash",
    chunk_size: int | None = None,
    population_map: PopulationMap | Callable | None = None,
) -> ForwardGradient:
    """Forward gradient (Baydin et al. 2022): ``grads = mean_k (grad f . u_k) u_k``.

    u_k ~ N(0, I); each directional derivative comes from one ``jax.jvp`` (exact,
    unbiased; variance (d+1)|g|^2 / K). Directions with a non-finite derivative or
    noise are dropped as in :func:`value_and_grad`.

    Args:
        fun: scalar loss ``fun(params, *args)``.
        num_directions: tangents per call (``evals``: one forward-with-tangent each).
        prng: ``"hash"`` or ``"threefry"``.
        chunk_size: tangents per chunk (``lax.scan`` over vmapped chunks), so memory
            holds ``chunk_size`` tangents (each the size of params) instead of all
            ``num_directions``; None (default): one chunk. The last chunk is padded
            and the padding dropped (``evals`` counts it: it is computed). The
            directions, so the estimate up to summation order, do not depend on it.
            Unused with ``population_map`` (each device holds its row of tangents).
        population_map: as in :func:`value_and_grad` (tangents sharded over devices).

    Returns:
        A :class:`ForwardGradient`: ``vg(params, key, *args) -> (value, grads)`` with
        ``value = fun(params, *args)`` exactly; ``evals``, ``with_info``, ``describe``
        (``chunks``: (chunks, tangents a chunk), None when sharded).
    """
    check_callable(fun, "fun", "fun(params, *args) -> scalar")
    check_int(num_directions, "num_directions", allow_numpy=True)
    check_choice(prng, "prng", PRNGS)
    check_int(chunk_size, "chunk_size", allow_none=True, allow_numpy=True)
    return ForwardGradient(fun, int(num_directions), prng, as_population_map(population_map),
                           None if chunk_size is None else int(chunk_size))
