"""Lazy low-rank weight perturbations and the fused matmul that consumes them.

A :class:`LowRank` leaf stands for ``base + scale * a @ b.T`` without forming the
(in x out) sum. fold_jax's own layers call :func:`matmul`, which evaluates
``x @ (base + scale * a b^T)`` in one of two associations:

- ``"factored"``: ``x @ base + scale * (x @ a) @ b.T`` (EGGROLL, 2025). Under ``vmap``
  over directions ``x @ base`` is one large matmul on all examples (computed once
  when x is shared, as in the first layer) and the low-rank term costs
  O(r (in + out)) per example. For rank <= ``UNROLL_MAX_RANK`` (4) the product
  ``(x @ a) @ b.T`` is expanded as r multiply-adds that fuse into the sum, so it
  needs no activation-sized buffer of its own (see :func:`_expand`).
- ``"dense"``: ``x @ (base + scale * a @ b.T)``: forms the perturbed matrix (O(r in
  out)) and multiplies it (per direction, under ``vmap``).

``"auto"`` (default) picks per layer and per call from static shapes: factored when
the factors add at most a quarter to the layer's FLOPs (``4 r (in + out) <= in out``)
or when it is cheaper outright (``rows (in + out) <= in out``), else dense. The FLOP
count alone would pick dense for any batch over in*out/(in+out) rows (64 for a
128 x 128 layer), but the factored form runs one shared GEMM instead of a batch of
per-direction ones and keeps no per-direction weight copies; on the digits MLP with
128 directions it was 1.2-1.4x faster on a 2-core CPU. Thin layers (a 128 -> 10
head) stay dense. A user's own layer opts into the fused path by calling
:func:`matmul` on its kernel instead of ``x @ kernel``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

__all__ = ["ASSOCIATIONS", "UNROLL_MAX_RANK", "LowRank", "is_lowrank", "materialize", "matmul"]

ASSOCIATIONS = ("auto", "factored", "dense")
UNROLL_MAX_RANK = 4  # ranks up to this expand (x @ a) b^T elementwise (see _expand)


@jax.tree_util.register_pytree_node_class
class LowRank:
    """``base + scale * a @ b.T`` kept factored.

    Shapes: base (in, out), a (in, r), b (out, r), scale scalar. ``association``
    (static) says how :func:`matmul` evaluates it (module docstring). Defines no
    arithmetic on purpose: code that is not written for it fails loudly at trace
    time instead of silently computing something else.
    """

    __slots__ = ("a", "association", "b", "base", "scale")

    def __init__(self, base: Any, a: Any, b: Any, scale: Any, association: str = "auto"):
        if association not in ASSOCIATIONS:
            raise ValueError(f"association={association!r}; allowed: {list(ASSOCIATIONS)}")
        self.base, self.a, self.b, self.scale = base, a, b, scale
        self.association = association

    def tree_flatten(self):
        return (self.base, self.a, self.b, self.scale), self.association

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, association=aux)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(jnp.shape(self.base))

    @property
    def dtype(self):
        return jnp.result_type(self.base)

    def __repr__(self) -> str:
        return f"LowRank(shape={self.shape}, rank={jnp.shape(self.a)[-1]})"


def is_lowrank(x: Any) -> bool:
    return isinstance(x, LowRank)


def materialize(w: LowRank | ArrayLike) -> Array:
    """The dense (in, out) matrix a :class:`LowRank` stands for (identity on arrays)."""
    if isinstance(w, LowRank):
        return w.base + w.scale * (w.a @ w.b.T)
    return jnp.asarray(w)


def _factored_is_cheaper(x_shape: tuple[int, ...], w: LowRank) -> bool:
    """The "auto" rule: factored when the low-rank term adds at most a quarter to the
    layer's FLOPs (r (in + out) <= in out / 4), or when it is cheaper outright
    (rows (in + out) <= in out); dense otherwise (thin layers such as a 128 -> 10
    head, where the factors cost nearly as much as the weights)."""
    rows = math.prod(x_shape[:-1])
    n_in, n_out = jnp.shape(w.base)
    rank = jnp.shape(w.a)[-1]
    return 4 * rank * (n_in + n_out) <= n_in * n_out or rows * (n_in + n_out) <= n_in * n_out


def matmul(x: ArrayLike, w: LowRank | ArrayLike) -> Array:
    """``x @ w`` for x (..., in). For a LowRank ``w``: ``x @ base + scale (x @ a) b^T``
    ("factored") or ``x @ (base + scale a b^T)`` ("dense"), by ``w.association``."""
    if not isinstance(w, LowRank):
        return jnp.matmul(x, w)
    factored = w.association == "factored" or (
        w.association == "auto" and _factored_is_cheaper(jnp.shape(x), w))
    if factored:
        return x @ w.base + _expand((x @ w.a) * w.scale, w.b)
    return x @ materialize(w)


def _expand(xa: Array, b: Array) -> Array:
    """``xa @ b.T`` for xa (..., r), b (out, r).

    For r <= ``UNROLL_MAX_RANK`` it is written as r broadcast multiply-adds, which
    XLA fuses into the add that consumes them, so the low-rank term never gets a
    (rows, out) buffer of its own (a dot's output always does). On the digits MLP
    (rank 4, chunk_size 8, 2-core CPU) that buffer was live beside two activations:
    memory 1.25x -> 1.20x of inference on the same rows (1.55x -> 1.20x with every
    layer factored), for about 8% more step time. At rank 8 the unrolled form cost
    25-30% of the speed, so higher ranks keep the dot; set ``UNROLL_MAX_RANK = 0``
    to prefer speed at any rank.
    """
    rank = jnp.shape(b)[-1]
    if rank > UNROLL_MAX_RANK:
        return xa @ b.T
    out = xa[..., 0:1] * b[:, 0]
    for k in range(1, rank):
        out = out + xa[..., k : k + 1] * b[:, k]
    return out
