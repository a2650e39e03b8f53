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
model's own apply, with ``flax.linen.Dense`` / ``DenseGeneral``, ``fold_jax.learn.nets.Dense``
and ``flax.nnx.Linear`` computing ``x @ kernel`` as a BCSR product; everything else
(LayerNorm, activations, biases, residuals) runs as the model defines it.

BCSR matmuls lower on CPU to the native ``cpu_csr_sparse_dense_ffi`` kernel (checked in
the tests); BCOO would lower to gathers and scatters. Sparse matmuls are for inference:
training keeps dense masked weights (gradients through BCSR are dense-shaped anyway).

Homes: masks, schedules and the inference entry points live here; paths, leaf rules and
the routing of Dense layers by kernel type in :mod:`fold_jax.compress.walker` (shared with
:mod:`fold_jax.compress.binary`); the BCSR kernels and the sparse MLP in
:mod:`fold_jax.compress.bcsr`. Their public names are re-exported here, so
``fold_jax.compress.prune.to_bcsr`` etc. still work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, PRNGKeyArray, PyTree

from fold_jax.checks import check_callable, check_choice, check_fraction, check_int, check_key
from fold_jax.compress.bcsr import (
    SparseLayer,
    SparseMLP,
    sparse_apply,
    sparse_matmul,
    sparse_matmul_t,
    sparse_mlp,
    to_bcsr,
)
from fold_jax.compress.walker import (
    Format,
    KernelFallbackWarning,
    Path,
    Select,
    flat_paths,
    is_kernel,
    is_prunable,
    kernel_paths,
    key_path,
    mlp_layers,
    register_format,
    replace_leaves,
    resolve_select,
    show_path,
    with_kernel_layers,
)

__all__ = [
    "SCHEDULES",
    "SCOPES",
    "Format",
    "GradualPruneState",
    "KernelFallbackWarning",
    "Path",
    "Select",
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

def _keep_top(scores: Array, n_zero) -> Array:
    """1 where ``scores`` (flat) ranks at or above position ``n_zero`` (ties by index)."""
    order = jnp.argsort(scores, stable=True)
    ranks = jnp.zeros(scores.shape, jnp.int32).at[order].set(
        jnp.arange(scores.size, dtype=jnp.int32))
    return ranks >= n_zero


def _score_mask(scores: PyTree, s, scope: str, select: Select = is_prunable) -> PyTree:
    """Masks keeping the highest scores of the selected leaves; s may be traced (scalar)."""
    flat, treedef = flat_paths(scores)
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
    flat, _ = flat_paths(params)
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
        p_paths = {path for path, _ in flat_paths(params)[0]}
        m_paths = {path for path, _ in flat_paths(mask)[0]}
        only_p = sorted(map(show_path, p_paths - m_paths))[:4]
        only_m = sorted(map(show_path, m_paths - p_paths))[:4]
        raise ValueError(f"mask must have the structure of params (a pytree of 0/1 like it); "
                         f"paths only in params: {only_p}, only in mask: {only_m}")
    for (path, p), (_, m) in zip(flat_paths(params)[0], flat_paths(mask)[0], strict=True):
        if jnp.shape(m) != jnp.shape(p):
            raise ValueError(f"mask at {show_path(path)} has shape {jnp.shape(m)}; params there "
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
    float32 sums): ``flax.linen.Dense``, a 2-D ``DenseGeneral``, ``fold_jax.learn.nets.Dense``
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
