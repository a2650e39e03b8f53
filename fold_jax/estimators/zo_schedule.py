"""The population schedule of the zeroth-order estimators: what one call evaluates and
how it sums.

A :class:`Problem` is one call's estimation problem (the loss on the parameter leaves,
the key, the directions, the per-leaf associations); the schedules order its work and
return :class:`Sums` (sum_k c_k u_k per leaf, the summed mean loss, the valid count):

- :func:`one_pass`: chunk by chunk, draw, evaluate, shape and contract (local shapings);
- :func:`two_pass`: every loss first (:func:`population_losses`), then the update from
  regenerated noise (:func:`accumulate`), for population-wide shapings;
- :func:`sharded`: the losses through a :class:`PopulationMap` (directions over
  devices), then the update as in the two-pass schedule.

:func:`normalize` turns the sums into ``(value, grads)``.
:mod:`fold_jax.estimators.zo_estimator` (``zo.value_and_grad``),
:mod:`fold_jax.estimators.zo_forward` and :mod:`fold_jax.estimators.snes` build on these
pieces; every public name is re-exported by :mod:`fold_jax.estimators.zo`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray, PyTree

from fold_jax.estimators import shaping as shaping_lib
from fold_jax.estimators.directions import Directions

__all__ = [
    "PopulationMap",
    "Problem",
    "Sums",
    "accumulate",
    "add_leaves",
    "as_population_map",
    "chunk_ids",
    "flat_leaves",
    "normalize",
    "one_pass",
    "population_losses",
    "scan_chunks",
    "shard_rows",
    "sharded",
    "two_pass",
    "zero_leaves",
]


class PopulationMap(NamedTuple):
    """``map(f)`` is ``f`` batched over a leading axis; ``shards`` rows are mapped at once
    (one per device for :func:`fold_jax.learn.parallel.population_map_factory`)."""

    map: Callable[[Callable], Callable]
    shards: int = 1

    def __call__(self, f: Callable) -> Callable:
        return self.map(f)


def as_population_map(pmap: Any) -> PopulationMap | None:
    """An estimator's ``population_map`` option, checked.

    Args:
        pmap: a :class:`PopulationMap`, a callable ``f -> batched f`` (its ``shards``
            attribute read when present) or None.

    Returns:
        The :class:`PopulationMap`, or None.

    Raises:
        TypeError: anything else.
    """
    if pmap is None or isinstance(pmap, PopulationMap):
        return pmap
    if not callable(pmap):
        raise TypeError("population_map must be a PopulationMap, a callable (f -> batched f) "
                        f"or None, got {type(pmap).__name__}")
    return PopulationMap(pmap, int(getattr(pmap, "shards", 1)))


def flat_leaves(params: PyTree) -> tuple[list[Array], Any]:
    """Leaves as arrays (Python-float and NumPy leaves too, as jax.value_and_grad takes
    them) and the treedef.

    Args:
        params: the parameter pytree.

    Returns:
        ``(leaves, treedef)``.
    """
    leaves, treedef = jax.tree.flatten(params)
    return [jnp.asarray(w) for w in leaves], treedef


class Problem(NamedTuple):
    """One call's estimation problem: what the schedules evaluate and contract.

    Attributes:
        loss: leaves -> float32 scalar (``fun`` with the call's args bound).
        params: the parameter leaves.
        key: the call's key; direction k is drawn from ``fold_in(key, k)``.
        dirs: how directions are drawn.
        associations: per leaf, the LowRank association or None (summed).
        offsets: (signs,) the perturbation sizes ``[s, -s]`` or ``[s]``.
        baseline: ``f(params)`` for one-sided estimates, else None.
        step: the finite-difference distance (2s or s).
        units: real directions; indices >= units are padding.
    """

    loss: Callable[[list], Array]
    params: list[Array]
    key: PRNGKeyArray
    dirs: Directions
    associations: tuple[str | None, ...]
    offsets: Array
    baseline: Array | None
    step: float
    units: int

    def noise(self, idx: Array) -> list:
        """Noise of the directions ``idx``, stacked."""
        return self.dirs.stacked(self.key, idx)

    def evaluate(self, parts: list, idx: Array) -> tuple[Array, Array]:
        """(losses (n, signs), valid (n,)) for directions ``idx`` with noise ``parts``."""
        # Tie the parameters to the chunk's indices: XLA would otherwise hoist what
        # depends on params and args only (the shared x @ W of a first layer) out of
        # the chunk loop, keeping it live beside every chunk's activations.
        ls, _ = jax.lax.optimization_barrier((self.params, idx))

        def one(u):
            at = lambda t: self.loss(self.dirs.apply(ls, u, t, self.associations))  # noqa: E731
            return jax.vmap(at)(self.offsets)

        vals = jax.vmap(one)(parts)
        valid = jnp.all(jnp.isfinite(vals), axis=1) & jax.vmap(self.dirs.finite)(parts)
        return vals, valid & (idx < self.units)

    def population(self, vals: Array, valid: Array) -> shaping_lib.Population:
        return shaping_lib.Population(vals, valid, self.baseline, self.step)

    def value_sum(self, vals: Array, valid: Array) -> Array:
        """Sum over valid directions of their mean loss (the antithetic value)."""
        return jnp.sum(jnp.where(valid, jnp.mean(vals, axis=1), 0.0))

    def zeros(self) -> list[Array]:
        return zero_leaves(self.dirs)


class Sums(NamedTuple):
    """What a schedule returns: sum_k c_k u_k per leaf, the valid directions' summed
    mean loss, and their count."""

    grads: list[Array]
    value: Array
    count: Array


def add_leaves(a: list[Array], b: list[Array]) -> list[Array]:
    """Leafwise sum of two lists of leaves.

    Args:
        a, b: lists of arrays, leaf by leaf the same shapes.

    Returns:
        ``[x + y for x, y in zip(a, b)]``.
    """
    return [x + y for x, y in zip(a, b, strict=True)]


def zero_leaves(dirs: Directions) -> list[Array]:
    """float32 zeros shaped like each leaf: a sum over directions starts there.

    Args:
        dirs: the call's directions (their ``leaves``).

    Returns:
        One float32 zero array per leaf.
    """
    return [jnp.zeros(leaf.shape, jnp.float32) for leaf in dirs.leaves]


def chunk_ids(n_chunks: int, per_chunk: int) -> Array:
    """(n_chunks, per_chunk) direction indices 0, 1, ...; those past the real
    directions are padding (a :class:`Problem` marks them invalid).

    Args:
        n_chunks: chunks (1: the whole population at once).
        per_chunk: directions (pairs, when antithetic) per chunk.

    Returns:
        (n_chunks, per_chunk) uint32 direction indices.
    """
    return jnp.arange(n_chunks * per_chunk, dtype=jnp.uint32).reshape(n_chunks, per_chunk)


def scan_chunks(body: Callable, start: Sums, idx: Array) -> Sums:
    """``body`` folded over the chunks ``idx`` from ``start`` (one chunk: no loop).

    Args:
        body: ``body(carry, ids) -> (carry, None)``, a ``lax.scan`` body.
        start: the initial :class:`Sums`.
        idx: (chunks, per_chunk) direction indices.

    Returns:
        The final carry.
    """
    if idx.shape[0] == 1:
        return body(start, idx[0])[0]
    return jax.lax.scan(body, start, idx)[0]


def one_pass(p: Problem, shape: shaping_lib.Shaping, idx: Array) -> Sums:
    """Chunk by chunk: draw, evaluate, shape and contract each chunk (local shapings).

    Args:
        p: the problem.
        shape: a local shaping.
        idx: (chunks, per_chunk) direction indices.

    Returns:
        The :class:`Sums` over every valid direction of all chunks.
    """
    def body(carry: Sums, ids: Array):
        parts = p.noise(ids)
        vals, valid = p.evaluate(parts, ids)
        coef = shape.fn(p.population(vals, valid))
        return Sums(add_leaves(carry.grads, p.dirs.contract(coef, valid, parts)),
                    carry.value + p.value_sum(vals, valid),
                    carry.count + jnp.sum(valid)), None

    return scan_chunks(body, Sums(p.zeros(), jnp.float32(0), jnp.int32(0)), idx)


def population_losses(evaluate: Callable[[Array], tuple[Array, Array, Any]], idx: Array
                      ) -> tuple[Array, Array, Any]:
    """The first pass of a population-wide schedule: every chunk's losses.

    Args:
        evaluate: ``evaluate(ids) -> (losses (c, signs), valid (c,), noise)`` for one
            chunk of direction indices (e.g. :meth:`Problem.evaluate` on
            :meth:`Problem.noise`).
        idx: (chunks, per_chunk) direction indices.

    Returns:
        ``(losses (chunks, per_chunk, signs), valid (chunks, per_chunk), noise)``:
        with one chunk there is no loop and its noise is kept for the second pass;
        with several the chunks run in a ``lax.map`` and ``noise`` is None (the second
        pass regenerates it from the keys).
    """
    if idx.shape[0] == 1:
        vals, valid, parts = evaluate(idx[0])
        return vals[None], valid[None], parts
    vals, valid = jax.lax.map(lambda ids: evaluate(ids)[:2], idx)
    return vals, valid, None


def accumulate(contract: Callable[[Array, Any, Any], Any], start: Any, idx: Array, xs: Any,
               parts: Any) -> Any:
    """The second pass: ``sum over chunks of contract(ids, x, noise)``.

    Args:
        contract: ``contract(ids, x, noise) -> pytree like start`` for one chunk: ``x``
            is that chunk's slice of ``xs``; ``noise`` is the kept noise (one chunk) or
            None, and then ``contract`` regenerates it from ``ids``.
        start: the zero of the sum (a pytree).
        idx: (chunks, per_chunk) direction indices.
        xs: a pytree of arrays with leading axes (chunks, per_chunk) (coefficients,
            valid flags).
        parts: the noise kept by :func:`population_losses` (one chunk) or None.

    Returns:
        The sum, shaped as ``start``: with kept noise the one chunk's contraction (no
        loop, ``start`` not added), else a ``lax.scan`` over the chunks from ``start``.
    """
    if parts is not None:  # one chunk: its noise is still at hand
        return contract(idx[0], jax.tree.map(lambda x: x[0], xs), parts)

    def body(acc, chunk):
        ids, x = chunk
        return jax.tree.map(jnp.add, acc, contract(ids, x, None)), None

    return jax.lax.scan(body, start, (idx, xs))[0]


def _shaped_update(p: Problem, shape: shaping_lib.Shaping, idx: Array, vals: Array,
                   valid: Array, parts: list | None) -> Sums:
    """Shape the whole population's losses, then contract from (regenerated) noise."""
    coef = shape.fn(p.population(vals.reshape(-1, vals.shape[-1]), valid.reshape(-1)))
    coef = coef.reshape(valid.shape)

    def contract(ids, x, noise):
        c, ok = x
        return p.dirs.contract(c, ok, p.noise(ids) if noise is None else noise)

    grads = accumulate(contract, p.zeros(), idx, (coef, valid), parts)
    return Sums(grads, p.value_sum(vals.reshape(-1, vals.shape[-1]), valid.reshape(-1)),
                jnp.sum(valid))


def two_pass(p: Problem, shape: shaping_lib.Shaping, idx: Array) -> Sums:
    """Every loss first (chunk by chunk), then the update from regenerated noise: for
    shapings that need the whole population (centered ranks, user functions).

    Args:
        p: the problem.
        shape: the shaping (it sees the whole population's losses at once).
        idx: (chunks, per_chunk) direction indices.

    Returns:
        The :class:`Sums` over every valid direction.
    """
    def evaluate(ids):
        parts = p.noise(ids)
        return (*p.evaluate(parts, ids), parts)

    vals, valid, parts = population_losses(evaluate, idx)
    return _shaped_update(p, shape, idx, vals, valid, parts)


def shard_rows(idx: Array, shards: int) -> Array:
    """(n,) direction indices as (rows, size) for a population map: one row per shard.

    Each row's noise is then generated in one loop; a map over single directions ran
    that loop once per index, which XLA removes, and the noise fused into its
    consumers again (the sharded rank-4 digits step ran 2x slower). The padding
    repeats the last index; callers drop its values.

    Args:
        idx: (n,) direction indices.
        shards: rows mapped at once.

    Returns:
        (rows, size) indices, ``rows * size >= n``.
    """
    size = max(1, -(-idx.shape[0] // shards))
    pad = (-idx.shape[0]) % size
    return jnp.concatenate([idx, jnp.repeat(idx[-1:], pad)]).reshape(-1, size)


def sharded(p: Problem, shape: shaping_lib.Shaping, idx: Array, pmap: PopulationMap) -> Sums:
    """Losses through ``pmap`` (one row of directions per shard; only the loss matrix
    crosses devices), then the update from regenerated noise.

    Args:
        p: the problem.
        shape: the shaping (local or population-wide).
        idx: (chunks, per_chunk) direction indices.
        pmap: the population map that spreads the rows of directions over devices.

    Returns:
        The :class:`Sums` over every valid direction.
    """
    flat = idx.reshape(-1)
    vals, valid = pmap(lambda ids: p.evaluate(p.noise(ids), ids))(shard_rows(flat, pmap.shards))
    vals = vals.reshape(-1, vals.shape[-1])[: flat.shape[0]].reshape(*idx.shape, -1)
    valid = valid.reshape(-1)[: flat.shape[0]].reshape(idx.shape)
    return _shaped_update(p, shape, idx, vals, valid, None)


def normalize(sums: Sums, params: list[Array], baseline: Array | None
               ) -> tuple[Array, list[Array]]:
    """Average over the valid directions; grads 0 and value NaN when none is valid.

    Args:
        sums: a schedule's :class:`Sums`.
        params: the parameter leaves (their dtypes).
        baseline: ``f(params)`` (one-sided estimates: the value) or None (the value is
            the mean over valid directions).

    Returns:
        ``(value, grads)``, grads leaf by leaf in the params' dtypes.
    """
    ok = sums.count > 0
    n = jnp.maximum(sums.count, 1).astype(jnp.float32)
    grads = [jnp.where(ok, g / n, 0.0).astype(w.dtype) for g, w in zip(sums.grads, params,
                                                                       strict=True)]
    value = sums.value / n if baseline is None else baseline
    return jnp.where(ok, value, jnp.nan), grads
