"""Sparse kernels: BCSR copies of (pruned) Dense kernels and their matmuls.

:func:`to_bcsr` stores a kernel W (in, out) as a ``jax.experimental.sparse.BCSR`` of
W.T; :func:`sparse_matmul_t` / :func:`sparse_matmul` multiply by it. BCSR matmuls lower
on CPU to the native ``cpu_csr_sparse_dense_ffi`` kernel (checked in the tests); BCOO
would lower to gathers and scatters. A fold_jax MLP runs every layer as a BCSR product
with :func:`sparse_mlp` / :func:`sparse_apply`; any flax model runs through
:func:`fold_jax.compress.prune.sparse_inference`, for which this module registers the BCSR
:class:`fold_jax.compress.walker.Format` (Dense layers holding a BCSR kernel multiply by it).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse
from jaxtyping import Array, ArrayLike, PyTree

from fold_jax.compress import walker
from fold_jax.learn import nets

__all__ = [
    "SparseLayer",
    "SparseMLP",
    "sparse_apply",
    "sparse_matmul",
    "sparse_matmul_t",
    "sparse_mlp",
    "to_bcsr",
]


def to_bcsr(kernel: ArrayLike) -> sparse.BCSR:
    """BCSR of ``kernel.T`` (out, in) for :func:`sparse_matmul`; stores only nonzeros.

    Args:
        kernel: a 2-D (in, out) kernel.

    Returns:
        The ``jax.experimental.sparse.BCSR`` of shape (out, in).
    """
    kernel = np.asarray(kernel)
    if kernel.ndim != 2:
        raise ValueError(f"kernel must be 2-D (in, out), got shape {kernel.shape}")
    # built in NumPy (the layout BCSR.fromdense gives, without compiling it per shape);
    # an all-zero kernel keeps one padding entry (column index = in, past the end)
    kernel_t = kernel.T
    rows, cols = np.nonzero(kernel_t)
    indptr = np.zeros(kernel_t.shape[0] + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=kernel_t.shape[0]), out=indptr[1:])
    data, indices = kernel_t[rows, cols], cols.astype(np.int32)
    if not rows.size:
        data, indices = np.zeros(1, kernel_t.dtype), np.full(1, kernel_t.shape[1], np.int32)
    return sparse.BCSR((jnp.asarray(data), jnp.asarray(indices), jnp.asarray(indptr)),
                       shape=kernel_t.shape)


def sparse_matmul_t(kernel_t: sparse.BCSR, x_t: ArrayLike) -> Array:
    """``(x @ kernel).T`` in feature-major layout: x_t (in, M) -> (out, M).

    The native CSR kernel multiplies a sparse (out, in) matrix by a dense (in, M) one,
    so activations kept feature-major (as :func:`sparse_apply` does between layers)
    need no transposes; on a 2-core CPU the two transposes of :func:`sparse_matmul`
    cost 15-45% of a 95-99% sparse 1024 x 1024 layer's time.

    Args:
        kernel_t: the BCSR (out, in) from :func:`to_bcsr`.
        x_t: (in, M) dense.

    Returns:
        The (out, M) product.
    """
    x_t = jnp.asarray(x_t)
    if x_t.ndim != 2 or x_t.shape[0] != kernel_t.shape[1]:
        raise ValueError(f"x_t has shape {x_t.shape}; needs ({kernel_t.shape[1]}, M)")
    return kernel_t @ x_t


def sparse_matmul(x: ArrayLike, kernel_t: sparse.BCSR) -> Array:
    """``x @ kernel`` for x (M, in) and ``kernel_t = to_bcsr(kernel)`` (native CSR kernel;
    row-major: transposes x in and the result out, see :func:`sparse_matmul_t`).

    Args:
        x: (M, in) dense.
        kernel_t: the BCSR (out, in) from :func:`to_bcsr`.

    Returns:
        The (M, out) product.
    """
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != kernel_t.shape[1]:
        raise ValueError(f"x has shape {x.shape}; needs (M, {kernel_t.shape[1]})")
    return sparse_matmul_t(kernel_t, x.T).T


class SparseLayer(NamedTuple):
    """One layer of a :class:`SparseMLP`: the BCSR (out, in) kernel from :func:`to_bcsr` and
    the (out,) bias, or None."""

    kernel_t: sparse.BCSR
    bias: Array | None


class SparseMLP(NamedTuple):
    """A BCSR copy of a ``nets.mlp`` from :func:`sparse_mlp`: its layers (:class:`SparseLayer`),
    input first, and the hidden activation's name."""

    layers: tuple[SparseLayer, ...]
    activation: str

    @property
    def nonzeros(self) -> int:
        return int(sum(layer.kernel_t.nse for layer in self.layers))

    @property
    def weight_bytes(self) -> int:
        """Bytes of values + column indices + row pointers of all BCSR kernels."""
        return int(sum(layer.kernel_t.data.nbytes + layer.kernel_t.indices.nbytes
                       + layer.kernel_t.indptr.nbytes for layer in self.layers))


def sparse_mlp(params: PyTree, activation: str = "relu") -> SparseMLP:
    """BCSR copy of a (pruned) ``nets.mlp`` parameter tree for :func:`sparse_apply`
    (feature-major between layers; any other model: :func:`sparse_inference`).

    Args:
        params: the (pruned) params of a ``nets.mlp``.
        activation: the hidden activation's name.

    Returns:
        A :class:`SparseMLP`.
    """
    nets.activation(activation)
    layers = tuple(SparseLayer(to_bcsr(layer["kernel"]), layer.get("bias"))
                   for _, layer in walker.mlp_layers(params, "prune.sparse_inference"))
    return SparseMLP(layers, activation)


def sparse_apply(model: SparseMLP, x: ArrayLike) -> Array:
    """Logits (M, out) of a :class:`SparseMLP` for x (M, in): every layer a BCSR matmul,
    activations feature-major (in, M) in between, so x and the logits are the only
    transposes.

    Args:
        model: the :class:`SparseMLP` from :func:`sparse_mlp`.
        x: (M, in) inputs.

    Returns:
        The (M, out) logits.
    """
    act = nets.activation(model.activation)
    h = jnp.asarray(x, jnp.float32)
    n_in = model.layers[0].kernel_t.shape[1]
    if h.ndim != 2 or h.shape[1] != n_in:
        raise ValueError(f"x has shape {h.shape}; needs (M, {n_in})")
    h = h.T
    for i, layer in enumerate(model.layers):
        h = sparse_matmul_t(layer.kernel_t, h)
        if layer.bias is not None:
            h = h + jnp.asarray(layer.bias)[:, None]
        if i + 1 < len(model.layers):
            h = act(h)
    return h.T


def _bcsr_product(x: Array, kernel_t: sparse.BCSR, layer: Any) -> Array:
    del layer
    return sparse_matmul(x.astype(jnp.result_type(x.dtype, kernel_t.dtype)), kernel_t)


walker.register_format(sparse.BCSR, walker.Format(
    name="BCSR",
    in_features=lambda kernel_t: int(kernel_t.shape[1]),
    product=_bcsr_product,
    dense=lambda kernel_t, layer: kernel_t.todense().T,
    linen_layers=walker.LINEN_DENSE,
))

