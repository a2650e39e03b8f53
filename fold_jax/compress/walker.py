"""Where flax models keep their kernels, and one way to route a layer's call by its
kernel's type: the layer walker pruning and binarization share.

Paths (:mod:`fold_jax.compress.walker_paths`, re-exported here). A leaf's path is the tuple of
its keys (:func:`key_path`): ``("params", "Block_0", "Dense_1", "kernel")`` in a linen
variables dict, the same in an nnx ``State`` (the attribute a Variable stores its value
under is dropped). A ``select(path, leaf) -> bool`` rule picks leaves:
:func:`is_prunable` (every leaf of ndim >= 2: Dense, nnx Linear and Conv kernels) for
masks, :func:`is_kernel` (a 2-D leaf named ``kernel``: the (in, out) kernel of a Dense
layer) for converted inference; :func:`kernel_paths` lists the chosen paths and
:func:`replace_leaves` swaps leaves.

Layers. The Dense layers whose ``__call__`` is ``y = x @ kernel (+ bias)``:

======================================  ==============================================
layer                                   routed when
======================================  ==============================================
``flax.linen.Dense``                    no custom ``dot_general`` / ``dot_general_cls``
``flax.linen.DenseGeneral``             also: one contracted axis (the last), one
                                        output axis, no ``batch_dims``
``fold_jax.learn.nets.Dense``                 always (no custom dot)
``flax.nnx.Linear``                     default ``dot_general``, no
                                        ``preferred_element_type``
======================================  ==============================================

(:data:`LINEN_DENSE`, :data:`NNX_DENSE`; a format may add its own layers, as
``fold_jax.compress.binary.BinaryDense``). A converted kernel leaf (a BCSR in
:mod:`fold_jax.compress.bcsr`, a ``binary.PackedKernel``) stays where the kernel was in the
params tree, so each layer finds its own. While :func:`kernel_layers` is open (or in a
function wrapped by :func:`with_kernel_layers`), those layers compute ``x @ kernel``
with the :class:`Format` registered for the kernel's type (:func:`register_format`)
instead of their own code; layers of other kinds, or calls with other options, that
hold a converted kernel run their own code on its dense form and a
:class:`KernelFallbackWarning` names them. linen is hooked by
``flax.linen.intercept_methods`` (thread-local), nnx by replacing ``nnx.Linear.__call__``
while a context is open (reference-counted; an array kernel runs the original code, so
other threads see no change).

fold_jax MLPs (:func:`fold_jax.learn.nets.mlp`) have their own fast paths that read the
``dense_i`` layers directly (:func:`mlp_layers`).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp
from flax import nnx
from jax import lax
from jaxtyping import Array, PyTree

from fold_jax.compress.walker_paths import (
    Path,
    Select,
    flat_paths,
    is_kernel,
    is_prunable,
    kernel_paths,
    key_path,
    mlp_layers,
    replace_leaves,
    resolve_select,
    show_path,
)
from fold_jax.estimators.flax_hooks import NnxPatch, View, as_ints, raw_method, unbox
from fold_jax.learn import nets

__all__ = [
    "LINEN_DENSE",
    "NNX_DENSE",
    "Format",
    "KernelFallbackWarning",
    "NnxPatch",
    "Path",
    "Select",
    "View",
    "as_ints",
    "flat_paths",
    "is_kernel",
    "is_prunable",
    "kernel_layers",
    "kernel_paths",
    "key_path",
    "mlp_layers",
    "raw_method",
    "register_format",
    "replace_leaves",
    "resolve_select",
    "show_path",
    "unbox",
    "with_kernel_layers",
]

LINEN_DENSE: tuple[type, ...] = (nn.Dense, nn.DenseGeneral, nets.Dense)
"""linen layers whose ``__call__`` is ``x @ kernel (+ bias)`` (routed to a format)."""
NNX_DENSE: tuple[type, ...] = (nnx.Linear,)
"""nnx layers whose ``__call__`` is routed to a format (patched while a context is open)."""


# ------------------------------------------------- any flax model: Dense layers by path


class KernelFallbackWarning(UserWarning):
    """A layer holding a sparse / packed kernel ran its own code on the dense kernel."""


class Format(NamedTuple):
    """How Dense layers multiply by one kind of converted kernel leaf."""

    name: str
    in_features: Callable[[Any], int]             # kernel -> fan-in
    product: Callable[[Array, Any, Any], Array]   # (x (M, in), kernel, layer) -> (M, out)
    dense: Callable[[Any, Any], Array]            # (kernel, layer) -> (in, out) array
    linen_layers: tuple[type, ...] = LINEN_DENSE  # layers whose __call__ uses product


_FORMATS: dict[type, Format] = {}


def register_format(kind: type, fmt: Format) -> None:
    """Make Dense layers multiply by kernels of type ``kind`` with ``fmt`` (call it at
    module level, once per kind: BCSR in :mod:`fold_jax.compress.bcsr`, ``binary.PackedKernel``
    in :mod:`fold_jax.compress.binary`).

    Args:
        kind: the type of the converted kernel leaf.
        fmt: how Dense layers multiply by it (:class:`Format`).
    """
    _FORMATS[kind] = fmt


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
        axis, features, batch = (as_ints(layer.axis), as_ints(layer.features),
                                 as_ints(layer.batch_dims))
        return (len(features) == 1 and not batch and len(axis) == 1
                and axis[0] % max(jnp.ndim(x), 1) == jnp.ndim(x) - 1)
    return True


def _fallback_warning(where: str, layer: Any, fmt: Format) -> None:
    warnings.warn(f"{where}: {type(layer).__name__} has no {fmt.name} product here (another "
                  f"layer kind or call); it runs its own code on the dense kernel",
                  KernelFallbackWarning, stacklevel=4)


def _linen_interceptor(next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
    """Routes a Dense layer's ``__call__`` with a converted kernel to its format."""
    layer = context.module
    if context.method_name != "__call__" or not layer.has_variable("params", "kernel"):
        return next_fun(*args, **kwargs)
    kernel = unbox(layer.get_variable("params", "kernel"))
    fmt = _FORMATS.get(type(kernel))
    if fmt is None:
        return next_fun(*args, **kwargs)
    raw = getattr(context.orig_method, "func", None)
    known = any(raw is raw_method(cls.__call__) for cls in fmt.linen_layers)
    where = show_path(layer.path)
    if known and _plain(args, kwargs) and _linen_simple(layer, args[0]):
        bias = (unbox(layer.get_variable("params", "bias"))
                if getattr(layer, "use_bias", True) and layer.has_variable("params", "bias")
                else None)
        return _add_bias(_rows(fmt, kernel, layer, jnp.asarray(args[0]), where), bias)
    if not known and isinstance(layer, fmt.linen_layers):
        return next_fun(*args, **kwargs)  # a subclass's __call__: its super() call is routed
    _fallback_warning(where, layer, fmt)
    variables = dict(layer.variables)
    variables["params"] = {**variables.get("params", {}), "kernel": fmt.dense(kernel, layer)}
    return layer.clone(parent=None).apply(variables, *args, **kwargs)


def _nnx_linear(original: Callable) -> Callable:
    """``nnx.Linear.__call__`` routing a converted kernel to its format."""

    @functools.wraps(original)
    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        kernel = unbox(getattr(self, "kernel", None))
        fmt = _FORMATS.get(type(kernel))
        if fmt is None:
            return original(self, *args, **kwargs)
        where = f"nnx.{type(self).__name__}"
        if (_plain(args, kwargs) and getattr(self, "dot_general", lax.dot_general)
                is lax.dot_general and getattr(self, "preferred_element_type", None) is None):
            bias = None if self.bias is None else unbox(self.bias)
            return _add_bias(_rows(fmt, kernel, self, jnp.asarray(args[0]), where), bias)
        _fallback_warning(where, self, fmt)
        return original(View(self, kernel=fmt.dense(kernel, self)), *args, **kwargs)

    return __call__


_NNX_PATCHES = tuple(NnxPatch(layer, _nnx_linear) for layer in NNX_DENSE)


@contextlib.contextmanager
def kernel_layers() -> Iterator[None]:
    """While open (at trace time), Dense layers holding a converted kernel use its
    format (module docstring). Re-entrant and nestable.

    Yields:
        None.
    """
    with contextlib.ExitStack() as stack:
        for patch in _NNX_PATCHES:
            patch.enter()
            stack.callback(patch.exit)
        with nn.intercept_methods(_linen_interceptor):
            yield


def with_kernel_layers(apply: Callable) -> Callable:
    """``apply(params, *args)`` traced inside :func:`kernel_layers`, so Dense layers
    holding a registered format's kernel multiply with the format's product.

    Args:
        apply: the model's ``apply(params, *args, **kwargs)``.

    Returns:
        The wrapped apply, same signature.
    """

    @functools.wraps(apply)
    def call(params: PyTree, *args: Any, **kwargs: Any) -> Any:
        with kernel_layers():
            return apply(params, *args, **kwargs)

    return call
