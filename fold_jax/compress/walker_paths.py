"""Where flax models keep their kernels: leaf paths and the ``select(path, leaf)`` rules
that pick leaves, shared by pruning and binarization. Re-exported by
:mod:`fold_jax.compress.walker` (the layer walker; see its docstring).

A leaf's path is the tuple of its keys (:func:`key_path`): ``("params", "Block_0",
"Dense_1", "kernel")`` in a linen variables dict, the same in an nnx ``State`` (the
attribute a Variable stores its value under is dropped). :func:`is_prunable` (every
leaf of ndim >= 2) picks leaves for masks, :func:`is_kernel` (a 2-D leaf named
``kernel``) for converted inference; :func:`kernel_paths` lists the chosen paths and
:func:`replace_leaves` swaps leaves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import PyTree

from fold_jax.checks import check_callable
from fold_jax.learn import nets

__all__ = ["Path", "Select", "flat_paths", "is_kernel", "is_prunable", "kernel_paths",
           "key_path", "mlp_layers", "replace_leaves", "resolve_select", "show_path"]


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


def flat_paths(tree: PyTree) -> tuple[list[tuple[Path, Any]], Any]:
    """``([(path, leaf), ...], treedef)`` of any pytree (linen dict, nnx State).

    Args:
        tree: any pytree.

    Returns:
        The (path, leaf) pairs in leaf order (paths as :func:`key_path` gives them) and
        the treedef.
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [(key_path(kp), leaf) for kp, leaf in flat], treedef


def show_path(path: Path) -> str:
    """A path as text for messages.

    Args:
        path: a leaf path (:func:`key_path` form).

    Returns:
        ``"params/Dense_0/kernel"``, or ``"<root>"`` for the empty path.
    """
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
    ``fold_jax.learn.nets.Dense``, ``fold_jax.compress.binary.BinaryDense`` and ``flax.nnx.Linear``,
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
    flat, _ = flat_paths(params)
    paths = [path for path, leaf in flat if select(path, leaf)]
    if not paths:
        shown = ", ".join(f"{show_path(p)} {tuple(jnp.shape(leaf))}" for p, leaf in flat[:8])
        raise ValueError(f"params has no Dense kernels to replace (2-D leaves named 'kernel', "
                         f"or what select= chooses); its leaves: [{shown}"
                         f"{', ...' if len(flat) > 8 else ''}]")
    return paths


def mlp_layers(params: PyTree, instead: str) -> list[tuple[str, dict]]:
    """``nets.dense_layers(params)``, its error pointing other models to ``instead``.

    Args:
        params: the params of a :func:`fold_jax.learn.nets.mlp`.
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
