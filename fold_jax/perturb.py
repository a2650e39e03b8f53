"""Lazy low-rank weight perturbations and the fused matmul that consumes them.

A :class:`LowRank` leaf stands for ``base + scale * a @ b.T`` without forming the
(in x out) sum. fold_jax's own layers call :func:`matmul`, which evaluates
``x @ (base + scale * a b^T)`` as ``x @ base + scale * (x @ a) @ b.T``: under ``vmap``
over directions ``x @ base`` is one large matmul on all examples and the low-rank
term costs O(r (in + out)) per example, so evaluating a population costs about one
inference (EGGROLL, 2025). A user's own layer opts into the fused path by calling
:func:`matmul` on its kernel instead of ``x @ kernel``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike

__all__ = ["LowRank", "is_lowrank", "materialize", "matmul"]


@jax.tree_util.register_pytree_node_class
class LowRank:
    """``base + scale * a @ b.T`` kept factored.

    Shapes: base (in, out), a (in, r), b (out, r), scale scalar. Defines no
    arithmetic on purpose: code that is not written for it fails loudly at trace
    time instead of silently computing something else.
    """

    __slots__ = ("a", "b", "base", "scale")

    def __init__(self, base: Any, a: Any, b: Any, scale: Any):
        self.base, self.a, self.b, self.scale = base, a, b, scale

    def tree_flatten(self):
        return (self.base, self.a, self.b, self.scale), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        del aux
        return cls(*children)

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


def matmul(x: ArrayLike, w: LowRank | ArrayLike) -> Array:
    """``x @ w`` for x (..., in); fused ``x @ base + scale (x @ a) b^T`` for LowRank."""
    if isinstance(w, LowRank):
        return x @ w.base + w.scale * ((x @ w.a) @ w.b.T)
    return jnp.matmul(x, w)
