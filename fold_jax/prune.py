"""Pruning: magnitude / random / N:M masks, the gradual cubic schedule, masks kept
through optax, and real sparse inference with ``jax.experimental.sparse.BCSR``, for
fold_jax MLPs and for any flax model.

Masks are pytrees shaped like ``params`` (any tree: a linen variables dict, an nnx
``State``) with 0/1 entries in each leaf's dtype. Which leaves are pruned is decided by
their path and shape: by default every leaf of ndim >= 2 (Dense / nnx Linear / Conv
kernels, wherever they sit, e.g. ``params["Block_0"]["Dense_1"]["kernel"]``); 1-D and
scalar leaves (biases, LayerNorm / BatchNorm scales and offsets) get all-ones masks.
``select(path, leaf) -> bool`` overrides the rule (a path is the tuple of the leaf's
keys, ``("params", "Block_0", "Dense_1", "kernel")``; read only the leaf's shape, it
may be traced). Sparsity is exact: a kernel of n entries at sparsity s has exactly
``round(s * n)`` zeros in its mask (layer scope), or the kernels together have
``round(s * total)`` (global scope); ties in magnitude are broken by position, so masks
are deterministic.

Sparse inference of any flax model (:func:`sparse_inference`) replaces every Dense
kernel (:func:`is_kernel`: a 2-D leaf named ``kernel``) by a BCSR copy and runs the
model's own apply, with ``flax.linen.Dense`` / ``DenseGeneral``, ``fold_jax.nets.Dense``
and ``flax.nnx.Linear`` computing ``x @ kernel`` as a BCSR product; everything else
(LayerNorm, activations, biases, residuals) runs as the model defines it.

BCSR matmuls lower on CPU to the native ``cpu_csr_sparse_dense_ffi`` kernel (checked in
the tests); BCOO would lower to gathers and scatters. Sparse matmuls are for inference:
training keeps dense masked weights (gradients through BCSR are dense-shaped anyway).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax.core import meta
from jax import lax
from jax.experimental import sparse
from jaxtyping import Array, ArrayLike, PRNGKeyArray, PyTree

from fold_jax import nets
from fold_jax.checks import check_callable, check_choice, check_fraction, check_int, check_key

__all__ = [
    "SCHEDULES",
    "SCOPES",
    "Format",
    "GradualPruneState",
    "KernelFallbackWarning",
    "SparseLayer",
    "SparseMLP",
    "apply_mask",
    "constant_schedule",
    "cubic_schedule",
    "gradual_prune",
    "is_kernel",
    "is_prunable",
    "keep_masked",
    "kernel_paths",
    "key_path",
    "magnitude_mask",
    "mlp_layers",
    "nm_mask",
    "random_mask",
    "register_format",
    "replace_leaves",
    "resolve_select",
    "sparse_apply",
    "sparse_inference",
    "sparse_matmul",
    "sparse_matmul_t",
    "sparse_mlp",
    "sparse_params",
    "sparsity",
    "to_bcsr",
    "with_kernel_layers",
]

SCOPES = ("layer", "global")


Path = tuple[Any, ...]
Select = Callable[[Path, Any], bool]


def _key_name(entry: Any) -> Any:
    """One key-path entry as the key itself: a dict key, attribute name or index."""
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return getattr(entry, attr)
    return str(entry)


def key_path(keypath: Sequence[Any]) -> Path:
    """A jax key path as a tuple of plain keys, ``("params", "Dense_0", "kernel")``;
    the attribute an nnx Variable stores its value under is dropped.

    Args:
        keypath: a key path from ``jax.tree_util.tree_flatten_with_path``.

    Returns:
        The path as a tuple of dict keys, attribute names and indices.
    """
    names = tuple(_key_name(entry) for entry in keypath)
    return names[:-1] if names and names[-1] in ("value", "raw_value") else names


def _flat(tree: PyTree) -> tuple[list[tuple[Path, Any]], Any]:
    """``([(path, leaf), ...], treedef)`` of any pytree (linen dict, nnx State)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [(key_path(kp), leaf) for kp, leaf in flat], treedef


def _show(path: Path) -> str:
    return "/".join(map(str, path)) or "<root>"


def is_prunable(path: Path, leaf: Any) -> bool:
    """The default mask rule: every leaf of ndim >= 2 (kernels) is pruned.

    Args:
        path: the leaf's keys (unused).
        leaf: the leaf (only its ndim is read).

    Returns:
        True for leaves of ndim >= 2.
    """
    del path
    return jnp.ndim(leaf) >= 2


def is_kernel(path: Path, leaf: Any) -> bool:
    """The kernel rule of sparse / packed inference: a 2-D leaf named ``kernel``.

    That is the (in, out) kernel of ``flax.linen.Dense``, a 2-D ``DenseGeneral``,
    ``fold_jax.nets.Dense``, ``fold_jax.binary.BinaryDense`` and ``flax.nnx.Linear``,
    wherever the layer sits in the tree; conv kernels (ndim > 2), embeddings, biases and
    LayerNorm parameters are not kernels. Compose your own ``select`` with it, e.g.
    ``lambda path, w: is_kernel(path, w) and "head" not in path``.

    Args:
        path: the leaf's keys, ``("params", "Block_0", "Dense_1", "kernel")``.
        leaf: the leaf (only its shape is read).

    Returns:
        True when the leaf is a Dense kernel.
    """
    return bool(path) and path[-1] == "kernel" and jnp.ndim(leaf) == 2


def resolve_select(select: Select | None, default: Select) -> Select:
    """The leaf rule to use: ``select`` checked as a callable, or ``default`` for None.

    Args:
        select: ``select(path, leaf) -> bool`` or None.
        default: the rule for None (:func:`is_kernel`, :func:`is_prunable`).

    Returns:
        The rule.

    Raises:
        TypeError: naming ``select`` when it is not callable.
    """
    if select is None:
        return default
    check_callable(select, "select", "select(path, leaf) -> bool")
    return select


def kernel_paths(params: PyTree, select: Select | None = None) -> list[Path]:
    """Paths of the Dense kernels that sparse / packed inference replaces, in tree order.

    Args:
        params: any parameter tree (linen variables ``{"params": ...}``, an nnx State).
        select: ``select(path, leaf) -> bool`` choosing the kernels; default
            :func:`is_kernel` (2-D leaves named ``kernel``).

    Returns:
        A list of paths (tuples of keys), e.g. ``[("params", "Dense_0", "kernel"), ...]``.

    Raises:
        ValueError: when no leaf is selected (naming params and some of its leaves).
    """
    select = resolve_select(select, is_kernel)
    flat, _ = _flat(params)
    paths = [path for path, leaf in flat if select(path, leaf)]
    if not paths:
        shown = ", ".join(f"{_show(p)} {tuple(jnp.shape(leaf))}" for p, leaf in flat[:8])
        raise ValueError(f"params has no Dense kernels to replace (2-D leaves named 'kernel', "
                         f"or what select= chooses); its leaves: [{shown}"
                         f"{', ...' if len(flat) > 8 else ''}]")
    return paths


def _keep_top(scores: Array, n_zero) -> Array:
    """1 where ``scores`` (flat) ranks at or above position ``n_zero`` (ties by index)."""
    order = jnp.argsort(scores, stable=True)
    ranks = jnp.zeros(scores.shape, jnp.int32).at[order].set(
        jnp.arange(scores.size, dtype=jnp.int32))
    return ranks >= n_zero


def _score_mask(scores: PyTree, s, scope: str, select: Select = is_prunable) -> PyTree:
    """Masks keeping the highest scores of the selected leaves; s may be traced (scalar)."""
    flat, treedef = _flat(scores)
    leaves = [leaf for _, leaf in flat]
    out = [None] * len(leaves)
    idx = [i for i, (path, leaf) in enumerate(flat) if select(path, leaf)]
    if scope == "layer":
        for i in idx:
            leaf = leaves[i]
            k = jnp.round(s * leaf.size).astype(jnp.int32)
            out[i] = _keep_top(leaf.ravel(), k).reshape(leaf.shape)
    elif idx:
        flat_scores = jnp.concatenate([leaves[i].ravel() for i in idx])
        keep = _keep_top(flat_scores, jnp.round(s * flat_scores.size).astype(jnp.int32))
        offset = 0
        for i in idx:
            n = leaves[i].size
            out[i] = keep[offset:offset + n].reshape(leaves[i].shape)
            offset += n
    for i, leaf in enumerate(leaves):
        out[i] = (jnp.ones(jnp.shape(leaf), bool) if out[i] is None else out[i])
    return jax.tree.unflatten(treedef, out)


def _as_dtype(mask: PyTree, params: PyTree) -> PyTree:
    return jax.tree.map(lambda m, p: m.astype(jnp.result_type(p)), mask, params)


def _check_params(params: PyTree) -> None:
    if not jax.tree.leaves(params):
        raise ValueError("params has no leaves: nothing to mask")


def _check_prunable(params: PyTree, select: Select) -> None:
    flat, _ = _flat(params)
    if not any(select(path, leaf) for path, leaf in flat):
        raise ValueError("params has no leaves to prune: masks prune the leaves of ndim >= 2 "
                         "(kernels), or what select= chooses; 1-D leaves (biases, LayerNorm "
                         "scales) never")


def magnitude_mask(params: PyTree, sparsity: float, *, scope: str = "layer",
                   select: Select | None = None) -> PyTree:
    """Keep the largest-|w| entries of each kernel ("layer") or of all kernels ("global").

    Args:
        params: any parameter tree (fold_jax MLP, linen variables, nnx State).
        sparsity: fraction of zeros, in [0, 1).
        scope: "layer" (each kernel exactly at ``sparsity``) or "global" (all together).
        select: ``select(path, leaf) -> bool``, the leaves to prune; default every leaf
            of ndim >= 2 (biases and LayerNorm scales / offsets are never pruned).

    Returns:
        A mask tree like params: 0/1 in each leaf's dtype, all ones on unselected leaves.
    """
    _check_params(params)
    s = check_fraction(sparsity, "sparsity")
    check_choice(scope, "scope", SCOPES)
    select = resolve_select(select, is_prunable)
    _check_prunable(params, select)
    scores = jax.tree.map(lambda p: jnp.abs(jnp.asarray(p, jnp.float32)), params)
    return _as_dtype(_score_mask(scores, s, scope, select), params)


def random_mask(key: PRNGKeyArray, params: PyTree, sparsity: float, *,
                scope: str = "layer", select: Select | None = None) -> PyTree:
    """A uniformly random mask with the same exact sparsity (and ``select`` rule) as
    :func:`magnitude_mask`.

    Args:
        key: the PRNG key.
        params: a parameter pytree.
        sparsity: the pruned fraction in [0, 1).
        scope: "layer" or "global", as in :func:`magnitude_mask`.
        select: ``select(path, leaf) -> bool`` choosing the pruned leaves.

    Returns:
        A 0/1 mask pytree like params (its dtypes).
    """
    check_key(key)
    _check_params(params)
    s = check_fraction(sparsity, "sparsity")
    check_choice(scope, "scope", SCOPES)
    select = resolve_select(select, is_prunable)
    _check_prunable(params, select)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    scores = jax.tree.unflatten(
        treedef, [jax.random.uniform(k, jnp.shape(p)) for k, p in zip(keys, leaves,
                                                                         strict=False)])
    return _as_dtype(_score_mask(scores, s, scope, select), params)


def nm_mask(params: PyTree, n: int = 2, m: int = 4) -> PyTree:
    """N:M structured mask: in each group of m consecutive inputs (axis 0) keep the n
    largest |w| (sparsity 1 - n/m). Kernels need fan-in divisible by m.

    Args:
        params: a parameter pytree; its 2-D leaves are masked, others get all ones.
        n: entries kept per group.
        m: the group size along axis 0.

    Returns:
        A 0/1 mask pytree like params (its dtypes).
    """
    if not (isinstance(m, int) and isinstance(n, int) and 0 < n <= m):
        raise ValueError(f"n={n!r}, m={m!r} must be ints with 0 < n <= m")

    def one(p):
        if jnp.ndim(p) < 2:
            return jnp.ones(jnp.shape(p), jnp.result_type(p))
        p = jnp.asarray(p)
        if p.ndim != 2 or p.shape[0] % m:
            raise ValueError(f"params kernel of shape {p.shape}: N:M needs 2-D with fan-in "
                             f"divisible by m={m}")
        g = jnp.abs(p).reshape(p.shape[0] // m, m, p.shape[1])
        rank = jnp.argsort(jnp.argsort(-g, axis=1, stable=True), axis=1)
        return (rank < n).reshape(p.shape).astype(p.dtype)

    return jax.tree.map(one, params)


def _check_mask(params: PyTree, mask: PyTree) -> None:
    """ValueError naming the paths where ``mask`` does not fit ``params``."""
    if jax.tree.structure(mask) != jax.tree.structure(params):
        p_paths = {path for path, _ in _flat(params)[0]}
        m_paths = {path for path, _ in _flat(mask)[0]}
        only_p = sorted(map(_show, p_paths - m_paths))[:4]
        only_m = sorted(map(_show, m_paths - p_paths))[:4]
        raise ValueError(f"mask must have the structure of params (a pytree of 0/1 like it); "
                         f"paths only in params: {only_p}, only in mask: {only_m}")
    for (path, p), (_, m) in zip(_flat(params)[0], _flat(mask)[0], strict=True):
        if jnp.shape(m) != jnp.shape(p):
            raise ValueError(f"mask at {_show(path)} has shape {jnp.shape(m)}; params there "
                             f"has shape {jnp.shape(p)} (they must be equal)")


def apply_mask(params: PyTree, mask: PyTree) -> PyTree:
    """params * mask, leafwise (mask: the structure and leaf shapes of params).

    Args:
        params: any pytree of arrays.
        mask: a pytree of params's structure and leaf shapes (0/1 or bool).

    Returns:
        The masked pytree, params's dtypes.
    """
    _check_mask(params, mask)
    return jax.tree.map(lambda p, m: p * m.astype(jnp.result_type(p)), params, mask)


def sparsity(tree: PyTree) -> float:
    """Fraction of exact zeros among the leaves of ndim >= 2 (kernels) of params or a mask.

    Args:
        tree: params or a mask.

    Returns:
        The fraction in [0, 1] (0.0 when there is no kernel).
    """
    leaves = [np.asarray(x) for x in jax.tree.leaves(tree) if jnp.ndim(x) >= 2]
    total = sum(x.size for x in leaves)
    return float(sum((x == 0).sum() for x in leaves) / total) if total else 0.0


# ------------------------------------------------------------------ schedules / optax


def cubic_schedule(final_sparsity: float, total_steps: int, *, begin_step: int = 0,
                   initial_sparsity: float = 0.0) -> Callable[[ArrayLike], Array]:
    """Zhu & Gupta (2017): s_t = s_f + (s_i - s_f) (1 - (t - t0)/T)^3, clamped to [t0, t0+T].

    Args:
        final_sparsity: s_f in [0, 1).
        total_steps: T, the steps from s_i to s_f.
        begin_step: t0, the first pruning step.
        initial_sparsity: s_i in [0, 1).

    Returns:
        ``schedule(t) -> sparsity``, a float32 array.
    """
    s_f = check_fraction(final_sparsity, "final_sparsity")
    s_i = check_fraction(initial_sparsity, "initial_sparsity")
    check_int(total_steps, "total_steps")
    check_int(begin_step, "begin_step", 0)

    def schedule(t):
        frac = jnp.clip((jnp.asarray(t, jnp.float32) - begin_step) / total_steps, 0.0, 1.0)
        return s_f + (s_i - s_f) * (1.0 - frac) ** 3

    return schedule


def constant_schedule(final_sparsity: float, total_steps: int = 1, *, begin_step: int = 0,
                      initial_sparsity: float = 0.0) -> Callable[[ArrayLike], Array]:
    """One-shot: sparsity s_f from ``begin_step`` on (0 before).

    Args:
        final_sparsity: the sparsity s_f in [0, 1).
        total_steps: unused (the schedule signature's).
        begin_step: the step from which the sparsity is s_f.
        initial_sparsity: unused (the schedule signature's).

    Returns:
        ``schedule(t) -> sparsity``, an array.
    """
    s_f = check_fraction(final_sparsity, "final_sparsity")
    check_int(begin_step, "begin_step", 0)
    del total_steps, initial_sparsity
    return lambda t: jnp.where(jnp.asarray(t) >= begin_step, s_f, 0.0)


SCHEDULES: dict[str, Callable] = {"cubic": cubic_schedule, "constant": constant_schedule}


def keep_masked(tx: optax.GradientTransformation, mask: PyTree) -> optax.GradientTransformation:
    """Wrap any optimizer so masked-out weights stay exactly zero.

    Gradients are masked before ``tx`` (its moments never see pruned weights) and
    updates after it; with ``params`` given, pruned entries are also set to zero by the
    update (``-params`` there), so params that were not masked yet become masked.

    Args:
        tx: the optimizer to wrap.
        mask: a 0/1 pytree of params's structure.

    Returns:
        The wrapped ``optax.GradientTransformation`` (same state as ``tx``).
    """
    if not isinstance(tx, optax.GradientTransformation):
        raise TypeError(f"tx must be an optax.GradientTransformation, got {type(tx).__name__}")

    def update(grads, state, params=None):
        grads = apply_mask(grads, mask)
        updates, state = tx.update(grads, state, params)
        updates = apply_mask(updates, mask)
        if params is not None:
            updates = jax.tree.map(lambda u, p, m: u - p * (1 - m.astype(p.dtype)),
                                   updates, params, mask)
        return updates, state

    return optax.GradientTransformation(tx.init, update)


class GradualPruneState(NamedTuple):
    """State of :func:`gradual_prune`: the bool mask (params's structure) and the step count."""

    mask: PyTree
    count: Array


def gradual_prune(final_sparsity: float, total_steps: int, *, begin_step: int = 0,
                  frequency: int = 10, scope: str = "layer", schedule: str = "cubic",
                  select: Select | None = None) -> optax.GradientTransformation:
    """Gradual magnitude pruning as an optax transform (chain it after the optimizer).

    State holds the mask and the step count. Every update keeps pruned weights at zero;
    every ``frequency`` steps in ``[begin_step, begin_step + total_steps]`` the mask is
    recomputed on the new weights at sparsity ``schedule(count)`` (never un-pruning).
    After ``begin_step + total_steps`` the sparsity is exactly ``final_sparsity``.
    ``select(path, leaf) -> bool`` chooses the pruned leaves as in :func:`magnitude_mask`
    (default: every leaf of ndim >= 2).

    Args:
        final_sparsity: the sparsity reached at ``begin_step + total_steps``.
        total_steps: steps over which the sparsity grows.
        begin_step: the first pruning step.
        frequency: steps between mask updates.
        scope: "layer" (each leaf pruned to the sparsity) or "global" (one threshold).
        schedule: the schedule's name, "cubic" or "constant".
        select: ``select(path, leaf) -> bool`` choosing the pruned leaves.

    Returns:
        An ``optax.GradientTransformation`` whose update needs ``params``.
    """
    check_choice(schedule, "schedule", sorted(SCHEDULES))
    check_choice(scope, "scope", SCOPES)
    select = resolve_select(select, is_prunable)
    sched = SCHEDULES[schedule](final_sparsity, total_steps, begin_step=begin_step)
    check_int(frequency, "frequency")
    end = begin_step + total_steps

    def init(params):
        return GradualPruneState(jax.tree.map(lambda p: jnp.ones(jnp.shape(p), bool), params),
                                 jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("gradual_prune needs params: call tx.update(grads, state, params)")
        count = state.count + 1
        new = jax.tree.map(lambda p, u, m: (p + u) * m, params, updates, state.mask)
        due = (count >= begin_step) & (count <= end) & (
            ((count - begin_step) % frequency == 0) | (count == end))
        def recompute():  # argsorts only on pruning steps (lax.cond runs one branch)
            fresh = _score_mask(jax.tree.map(jnp.abs, new), sched(count), scope, select)
            return jax.tree.map(jnp.logical_and, fresh, state.mask)

        mask = jax.lax.cond(due, recompute, lambda: state.mask)
        updates = jax.tree.map(lambda n, m, p: n * m - p, new, mask, params)
        return updates, GradualPruneState(mask, count)

    return optax.GradientTransformation(init, update)


# ------------------------------------------------------------------ sparse inference


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
                   for _, layer in mlp_layers(params, "prune.sparse_inference"))
    return SparseMLP(layers, activation)


def mlp_layers(params: PyTree, instead: str) -> list[tuple[str, dict]]:
    """``nets.dense_layers(params)``, its error pointing other models to ``instead``.

    Args:
        params: the params of a :func:`fold_jax.nets.mlp`.
        instead: the function for any other flax model, named in the error.

    Returns:
        ``(name, {"kernel", "bias"})`` pairs in layer order.

    Raises:
        ValueError: params is not an mlp tree; the message names ``instead``.
    """
    try:
        return nets.dense_layers(params)
    except ValueError as e:
        raise ValueError(f"{e}; for any other flax model use {instead}(apply, params)") from None


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


# ------------------------------------------------- any flax model: Dense layers by path
#
# A converted kernel leaf (a BCSR here, a binary.PackedKernel in fold_jax.binary) stays
# where the kernel was in the params tree, so each layer finds its own (the path is the
# key). While :func:`_kernel_layers` is open, the Dense layers below compute ``x @ kernel``
# with the format's product instead of their own code; layers of other kinds that hold a
# converted kernel run their own code on its dense form (``KernelFallbackWarning``).


class KernelFallbackWarning(UserWarning):
    """A layer holding a sparse / packed kernel ran its own code on the dense kernel."""


class Format(NamedTuple):
    """How Dense layers multiply by one kind of converted kernel leaf."""

    name: str
    in_features: Callable[[Any], int]             # kernel -> fan-in
    product: Callable[[Array, Any, Any], Array]   # (x (M, in), kernel, layer) -> (M, out)
    dense: Callable[[Any, Any], Array]            # (kernel, layer) -> (in, out) array
    linen_layers: tuple[type, ...]                # layers whose __call__ uses product


_FORMATS: dict[type, Format] = {}


def register_format(kind: type, fmt: Format) -> None:
    """Make Dense layers multiply by kernels of type ``kind`` with ``fmt`` (call it at
    module level, once per kind: BCSR here, ``binary.PackedKernel`` in fold_jax.binary).

    Args:
        kind: the type of the converted kernel leaf.
        fmt: how Dense layers multiply by it (:class:`Format`).
    """
    _FORMATS[kind] = fmt


def _unbox(x: Any) -> Any:
    """A boxed (``nn.Partitioned`` etc.) variable's value; anything else as is."""
    return x.unbox() if isinstance(x, meta.AxisMetadata) else x


def _raw(method: Callable) -> Callable:
    """The user function under flax's method wrapper (what ``orig_method`` calls)."""
    return getattr(method, "__wrapped__", method)


def _rows(fmt: Format, kernel: Any, layer: Any, x: Array, where: str) -> Array:
    """``x @ kernel`` for x (..., in) through the format's (M, in) product."""
    n_in = fmt.in_features(kernel)
    if jnp.ndim(x) == 0 or jnp.shape(x)[-1] != n_in:
        raise ValueError(f"{where}: input has shape {jnp.shape(x)}; the {fmt.name} kernel "
                         f"takes {n_in} input features (last axis)")
    y = fmt.product(jnp.reshape(x, (-1, n_in)), kernel, layer)
    return jnp.reshape(y, (*jnp.shape(x)[:-1], y.shape[-1]))


def _add_bias(y: Array, bias: Any) -> Array:
    return y if bias is None else y + jnp.asarray(bias)


def _plain(args: tuple, kwargs: dict) -> bool:
    """One positional input and every keyword at None (flax's defaults)."""
    return len(args) == 1 and all(v is None for v in kwargs.values())


def _linen_simple(layer: nn.Module, x: Any) -> bool:
    """The layer is ``y = x @ kernel (+ bias)`` over the last axis, default dot."""
    if getattr(layer, "dot_general", None) is not None or getattr(
            layer, "dot_general_cls", None) is not None:
        return False
    if isinstance(layer, nn.DenseGeneral):
        axis, features, batch = (_ints(layer.axis), _ints(layer.features),
                                 _ints(layer.batch_dims))
        return (len(features) == 1 and not batch and len(axis) == 1
                and axis[0] % max(jnp.ndim(x), 1) == jnp.ndim(x) - 1)
    return True


def _ints(x: int | Sequence[int]) -> tuple[int, ...]:
    """flax's int-or-sequence field (axis, features, batch_dims) as a tuple."""
    return (x,) if isinstance(x, int) else tuple(x)


def _fallback_warning(where: str, layer: Any, fmt: Format) -> None:
    warnings.warn(f"{where}: {type(layer).__name__} has no {fmt.name} product here (another "
                  f"layer kind or call); it runs its own code on the dense kernel",
                  KernelFallbackWarning, stacklevel=4)


def _linen_interceptor(next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
    """Routes a Dense layer's ``__call__`` with a converted kernel to its format."""
    layer = context.module
    if context.method_name != "__call__" or not layer.has_variable("params", "kernel"):
        return next_fun(*args, **kwargs)
    kernel = _unbox(layer.get_variable("params", "kernel"))
    fmt = _FORMATS.get(type(kernel))
    if fmt is None:
        return next_fun(*args, **kwargs)
    raw = getattr(context.orig_method, "func", None)
    known = any(raw is _raw(cls.__call__) for cls in fmt.linen_layers)
    where = _show(layer.path)
    if known and _plain(args, kwargs) and _linen_simple(layer, args[0]):
        bias = (_unbox(layer.get_variable("params", "bias"))
                if getattr(layer, "use_bias", True) and layer.has_variable("params", "bias")
                else None)
        return _add_bias(_rows(fmt, kernel, layer, jnp.asarray(args[0]), where), bias)
    if not known and isinstance(layer, fmt.linen_layers):
        return next_fun(*args, **kwargs)  # a subclass's __call__: its super() call is routed
    _fallback_warning(where, layer, fmt)
    variables = dict(layer.variables)
    variables["params"] = {**variables.get("params", {}), "kernel": fmt.dense(kernel, layer)}
    return layer.clone(parent=None).apply(variables, *args, **kwargs)


class _View:
    """A module's attributes with some replaced (to run its own ``__call__`` on them)."""

    def __init__(self, target: Any, **overrides: Any):
        self.__dict__["_target"] = target
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_target"], name)


def _nnx_value(x: Any) -> Any:
    return x.get_value() if isinstance(x, nnx.Variable) else x


def _nnx_linear(original: Callable) -> Callable:
    """``nnx.Linear.__call__`` routing a converted kernel to its format."""

    @functools.wraps(original)
    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        kernel = _nnx_value(getattr(self, "kernel", None))
        fmt = _FORMATS.get(type(kernel))
        if fmt is None:
            return original(self, *args, **kwargs)
        where = f"nnx.{type(self).__name__}"
        if (_plain(args, kwargs) and getattr(self, "dot_general", lax.dot_general)
                is lax.dot_general and getattr(self, "preferred_element_type", None) is None):
            bias = None if self.bias is None else _nnx_value(self.bias)
            return _add_bias(_rows(fmt, kernel, self, jnp.asarray(args[0]), where), bias)
        _fallback_warning(where, self, fmt)
        return original(_View(self, kernel=fmt.dense(kernel, self)), *args, **kwargs)

    return __call__


class _NnxPatch:
    """Reference-counted replacement of ``nnx.Linear.__call__`` (process-wide; an array
    kernel runs the original, so other threads see no change)."""

    def __init__(self, layer: type):
        self.layer = layer
        self.lock = threading.Lock()
        self.depth = 0
        self.saved: Callable | None = None

    def enter(self) -> None:
        with self.lock:
            if self.depth == 0:
                self.saved = self.layer.__dict__["__call__"]
                self.layer.__call__ = _nnx_linear(self.saved)
            self.depth += 1

    def exit(self) -> None:
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                self.layer.__call__ = self.saved
                self.saved = None


_NNX_PATCH = _NnxPatch(nnx.Linear)


@contextlib.contextmanager
def _kernel_layers() -> Iterator[None]:
    """While open (at trace time), Dense layers holding a converted kernel use its format."""
    _NNX_PATCH.enter()
    try:
        with nn.intercept_methods(_linen_interceptor):
            yield
    finally:
        _NNX_PATCH.exit()


def with_kernel_layers(apply: Callable) -> Callable:
    """``apply(params, *args)`` traced inside :func:`_kernel_layers`, so Dense layers
    holding a registered format's kernel multiply with the format's product.

    Args:
        apply: the model's ``apply(params, *args, **kwargs)``.

    Returns:
        The wrapped apply, same signature.
    """

    @functools.wraps(apply)
    def call(params: PyTree, *args: Any, **kwargs: Any) -> Any:
        with _kernel_layers():
            return apply(params, *args, **kwargs)

    return call


def replace_leaves(params: PyTree, paths: Sequence[Path],
                   convert: Callable[[Path, Any], Any]) -> PyTree:
    """params with the leaf at each of ``paths`` replaced by ``convert(path, leaf)``.

    Args:
        params: any pytree.
        paths: leaf paths (:func:`key_path` form), e.g. from :func:`kernel_paths`.
        convert: ``convert(path, leaf) -> new leaf`` (a BCSR, a packed kernel, ...).

    Returns:
        params with those leaves converted; every other leaf unchanged.
    """
    chosen = set(paths)
    return jax.tree_util.tree_map_with_path(
        lambda kp, leaf: convert(key_path(kp), leaf) if key_path(kp) in chosen else leaf, params)


def _bcsr_product(x: Array, kernel_t: sparse.BCSR, layer: Any) -> Array:
    del layer
    return sparse_matmul(x.astype(jnp.result_type(x.dtype, kernel_t.dtype)), kernel_t)


register_format(sparse.BCSR, Format(
    name="BCSR",
    in_features=lambda kernel_t: int(kernel_t.shape[1]),
    product=_bcsr_product,
    dense=lambda kernel_t, layer: kernel_t.todense().T,
    linen_layers=(nn.Dense, nn.DenseGeneral, nets.Dense),
))


def sparse_params(params: PyTree, mask: PyTree | None = None, *,
                  select: Select | None = None) -> PyTree:
    """params (times ``mask``) with every Dense kernel replaced by its BCSR copy.

    Args:
        params: any flax parameter tree: linen variables (``{"params": {...}}``, what
            ``model.init`` returns) or an nnx State.
        mask: optional 0/1 tree like params (e.g. :func:`magnitude_mask`); params are
            multiplied by it first, so masked leaves that are not kernels stay masked.
        select: which kernels become BCSR, ``select(path, leaf) -> bool``; default
            :func:`is_kernel` (2-D leaves named ``kernel``).

    Returns:
        The tree with each selected kernel W (in, out) replaced by ``to_bcsr(W)`` (a BCSR
        of W.T, (out, in), storing only the nonzeros); every other leaf unchanged.

    Raises:
        ValueError: when mask does not fit params (naming the path) or params has no
            kernel to convert.
    """
    _check_params(params)
    if mask is not None:
        params = apply_mask(params, mask)
    return replace_leaves(params, kernel_paths(params, select), lambda path, w: to_bcsr(w))


def sparse_inference(apply: Callable[..., Array], params: PyTree, mask: PyTree | None = None,
                     *, select: Select | None = None) -> jax.tree_util.Partial:
    """Run any flax model with its Dense kernels as BCSR sparse matmuls.

    ``infer(*args)`` equals ``apply(apply_mask(params, mask), *args)`` (up to the order of
    float32 sums): ``flax.linen.Dense``, a 2-D ``DenseGeneral``, ``fold_jax.nets.Dense``
    and ``flax.nnx.Linear`` multiply their input by the BCSR kernel
    (:func:`sparse_matmul`, the native CSR kernel on CPU) and add their bias; LayerNorm,
    activations, residuals and everything else are the model's own code. A layer of
    another kind that holds a converted kernel runs its own code on the dense kernel
    (:class:`KernelFallbackWarning`). Only layers called as modules are covered: a kernel
    read by hand from ``self.variables`` in a parent is not.

    Args:
        apply: ``apply(params, *args, **kwargs)``, e.g. ``model.apply`` of a linen model
            or ``lambda state, x: nnx.merge(graphdef, state)(x)``.
        params: the model's parameter tree (as :func:`sparse_params`).
        mask: optional 0/1 tree like params.
        select: which kernels become BCSR (default :func:`is_kernel`).

    Returns:
        ``infer(*args, **kwargs)``, a ``jax.tree_util.Partial`` holding the sparse params
        (``infer.args[0]``): call it, ``jax.jit`` it, or pass it to a jitted function as
        an argument (it is a pytree).

    Raises:
        TypeError: apply is not callable. ValueError: as :func:`sparse_params`.
    """
    check_callable(apply, "apply", "apply(params, *args) -> outputs")
    return jax.tree_util.Partial(with_kernel_layers(apply),
                                 sparse_params(params, mask, select=select))
