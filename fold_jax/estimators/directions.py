"""Random perturbation directions over a parameter pytree, regenerated from keys.

A :class:`Directions` says how direction ``k`` of a key is drawn (noise kind, word
source, rank, mask) and does the four things the estimators need with it: draw it,
apply it to the parameters, test it for finiteness and contract a population of them
with per-direction coefficients. The (directions x parameters) noise is never kept:
direction k is regenerated from ``jax.random.fold_in(key, k)``.

Per leaf (see :func:`layout`):

- ``rank=None``, 1-D leaves, and leaves whose matrix view is thinner than ``rank``:
  full-rank noise ``u`` of the leaf's shape (``"gaussian"``, ``"rademacher"``, or
  ``"sphere"``: the whole masked vector scaled to radius ``sqrt(d_eff)``).
- leaves of ndim >= 2 with ``rank=r`` and both sides of their matrix view
  ``(prod(shape[:-1]), shape[-1])`` at least r: ``A B^T / sqrt(r)`` with A (in, r),
  B (out, r) drawn from the noise kind. ``E[(A B^T)(A B^T)^T] / r = I``, so estimates
  stay unbiased; a thin leaf (a (h, 1) binary head) falls back to full rank, which
  is unbiased too. A masked low-rank perturbation is materialized and masked.

Every kind has ``E[u u^T] = I`` on the perturbed coordinates.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from fold_jax.estimators import noise as noise_lib
from fold_jax.estimators import perturb

__all__ = ["NOISES", "Directions", "LeafLayout", "directions", "layout"]

NOISES = ("gaussian", "rademacher", "sphere")


class LeafLayout(NamedTuple):
    """Where one leaf's noise sits in a direction's flat noise vector."""

    shape: tuple[int, ...]
    lowrank: bool  # perturbed by A B^T / sqrt(r) over its matrix view
    offset: int  # start in the flat noise vector
    size: int  # noise entries (r (in + out) for low-rank leaves)

    @property
    def matrix(self) -> tuple[int, int]:
        """The (in, out) matrix view of a leaf of ndim >= 2."""
        return math.prod(self.shape[:-1]), self.shape[-1]


def layout(shapes: list[tuple[int, ...]], rank: int | None) -> tuple[tuple[LeafLayout, ...], int]:
    """Each leaf's noise layout and the flat noise length of one direction.

    Args:
        shapes: the leaves' shapes.
        rank: low-rank rank, or None for full-rank noise everywhere.

    Returns:
        (layouts, total entries per direction).
    """
    out, offset = [], 0
    for shape in shapes:
        low = rank is not None and len(shape) >= 2 and min(
            math.prod(shape[:-1]), shape[-1]) >= rank
        size = rank * (math.prod(shape[:-1]) + shape[-1]) if low else math.prod(shape)
        out.append(LeafLayout(tuple(shape), low, offset, size))
        offset += size
    return tuple(out), offset


class Directions(NamedTuple):
    """How each direction is drawn for one parameter tree (see the module docstring).

    ``masks`` holds one float 0/1 array per leaf (or None); ``d_eff`` is the number
    of perturbed coordinates. Build it with :func:`directions`.
    """

    noise: str
    prng: str
    rank: int | None
    leaves: tuple[LeafLayout, ...]
    size: int
    masks: tuple[Array | None, ...]
    d_eff: Any

    @property
    def matrices(self) -> dict[int, tuple[int, int]]:
        """Leaf index -> (in, out) matrix view, for the low-rank leaves only."""
        return {i: leaf.matrix for i, leaf in enumerate(self.leaves) if leaf.lowrank}

    def draw(self, key: PRNGKeyArray, k: Array) -> list:
        """Direction ``k``: per leaf an array of its shape, or an (A, B) factor pair."""
        kind = "gaussian" if self.noise == "sphere" else self.noise
        flat = noise_lib.draw(jax.random.fold_in(key, k), self.size, kind, self.prng)
        parts = []
        for leaf, m in zip(self.leaves, self.masks, strict=True):
            seg = flat[leaf.offset: leaf.offset + leaf.size]
            if leaf.lowrank:
                n_in, _ = leaf.matrix
                parts.append((seg[: n_in * self.rank].reshape(n_in, self.rank),
                              seg[n_in * self.rank:].reshape(-1, self.rank)))
            else:
                u = seg.reshape(leaf.shape)
                parts.append(u if m is None else u * m)
        if self.noise == "sphere":  # the masked vector, scaled to radius sqrt(d_eff)
            sq = sum(jnp.sum(u * u) for u in parts)
            scale = jnp.where(sq > 0, jnp.sqrt(self.d_eff / jnp.where(sq > 0, sq, 1.0)), 0.0)
            parts = [u * scale for u in parts]
        return parts

    def stacked(self, key: PRNGKeyArray, idx: Array) -> list:
        """:meth:`draw` over the direction indices ``idx``, stacked on a leading axis.

        A loop (``lax.map``), not ``vmap``: the loop's output is a buffer, so XLA cannot
        fuse the noise generation (hash, ``erf_inv``) into its consumers; fused, a
        bias's noise would be recomputed for every activation entry it is broadcast to
        (a rank-4 step on the digits MLP ran about 2x slower on CPU). An optimization
        barrier does not stop that fusion on CPU (XLA removes it first), and seeding all
        directions at once outside the loop (vectorized threefry) measured no faster in
        alternating rounds.
        """
        return jax.lax.map(lambda k: self.draw(key, k), idx)

    def dense(self, parts: list) -> list[Array]:
        """The perturbation each leaf's noise stands for, as arrays of the leaves' shapes."""
        out = []
        for leaf, u, m in zip(self.leaves, parts, self.masks, strict=True):
            if leaf.lowrank:
                a, b = u
                u = ((a @ b.T) / math.sqrt(self.rank)).reshape(leaf.shape)
                u = u if m is None else u * m
            out.append(u)
        return out

    def apply(self, params: list[Array], parts: list, t: Array,
              associations: tuple[str | None, ...]) -> list:
        """``params + t * u``. Low-rank leaves whose association is not None stay factored
        as :class:`fold_jax.estimators.perturb.LowRank` (that association); the rest are summed."""
        out = []
        dense = None
        for i, (leaf, w, u, assoc) in enumerate(zip(self.leaves, params, parts, associations,
                                                    strict=True)):
            if leaf.lowrank and assoc is not None:
                a, b = u
                scale = (t / math.sqrt(self.rank)).astype(w.dtype)
                out.append(perturb.LowRank(w, a.astype(w.dtype), b.astype(w.dtype), scale,
                                           assoc))
                continue
            if dense is None:
                dense = self.dense(parts)
            out.append(w + (t * dense[i]).astype(w.dtype))
        return out

    def finite(self, parts: list) -> Array:
        """Whether every entry of one direction's noise is finite (bool scalar)."""
        return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(parts)]))

    def contract(self, coef: Array, valid: Array, parts: list) -> list[Array]:
        """``sum_k c_k u_k`` per leaf over the directions where ``valid``.

        Invalid directions are removed by selection on their noise, never by a zero
        coefficient (``0 * inf = NaN``).

        Args:
            coef: (K,) float32 coefficients.
            valid: (K,) bool.
            parts: noise stacked on a leading axis K (from :meth:`stacked`).

        Returns:
            One float32 array per leaf, of the leaf's shape.
        """
        c = jnp.where(valid, coef, 0.0)
        out = []
        for leaf, u, m in zip(self.leaves, parts, self.masks, strict=True):
            if leaf.lowrank:
                a, b = u
                keep = valid[:, None, None]
                a = jnp.where(keep, a * c[:, None, None], 0.0)
                g = jnp.einsum("kir,kor->io", a, jnp.where(keep, b, 0.0)) / math.sqrt(self.rank)
                g = g.reshape(leaf.shape)
                out.append(g if m is None else g * m)
            else:
                # a dot, not sum(c * u, axis=0): XLA's CPU reduction over the
                # direction axis ran 40-100x slower at 1.1M parameters
                keep = valid.reshape((-1,) + (1,) * len(leaf.shape))
                out.append(jnp.tensordot(c, jnp.where(keep, u, 0.0), axes=1))
        return out


def directions(params: list[Array], *, noise: str = "gaussian", prng: str = "hash",
               rank: int | None = None, mask: list | None = None) -> Directions:
    """The :class:`Directions` for a list of parameter leaves.

    Args:
        params: the parameter leaves (arrays).
        noise: one of ``NOISES``.
        prng: one of :data:`fold_jax.estimators.noise.PRNGS`.
        rank: low-rank rank or None.
        mask: one 0/1 array per leaf (perturb where != 0), or None.

    Returns:
        A Directions; ``d_eff`` is the perturbed dimension (a traced count with a mask).
    """
    leaves, size = layout([tuple(jnp.shape(w)) for w in params], rank)
    if mask is None:
        masks = (None,) * len(params)
        d_eff = float(sum(math.prod(leaf.shape) for leaf in leaves))
    else:
        masks = tuple(jnp.asarray(m != 0, jnp.float32) for m in mask)
        d_eff = sum(jnp.sum(m) for m in masks)
    return Directions(noise, prng, rank, leaves, size, masks, d_eff)
