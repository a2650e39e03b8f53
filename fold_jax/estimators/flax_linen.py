"""flax.linen layers on the fused low-rank path (the linen half of
:mod:`fold_jax.estimators.flax_layers`).

:func:`interceptor` is a :func:`flax.linen.intercept_methods` interceptor: a known
layer's method whose parameters include a :class:`fold_jax.estimators.perturb.LowRank` is
computed through :mod:`fold_jax.estimators.perturb` (one ``kernel.pick`` per use, obeyed);
array parameters run the layer's own method untouched. A layer configuration the
fused form does not cover runs the layer's own code on ``materialize``-d parameters
(the fallback: no pick is made, :mod:`fold_jax.estimators.fusion` reports the leaf as
materialized). The table of layers and conditions is in :mod:`fold_jax.estimators.flax_layers`.
Variables are read and layers recognised with the flax hooks
(:func:`~fold_jax.estimators.flax_hooks.unbox`,
:func:`~fold_jax.estimators.flax_hooks.raw_method`), shared with the converted kernels of
pruning and binarization (:mod:`fold_jax.compress.walker`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp
from jaxtyping import Array

from fold_jax.estimators import perturb
from fold_jax.estimators.flax_hooks import as_ints, raw_method, unbox
from fold_jax.estimators.perturb import LowRank

__all__ = ["LAYERS", "Layer", "interceptor"]


def _param(module: nn.Module, name: str) -> Any:
    """The module's "params"/name (None when absent, e.g. no bias)."""
    if not module.has_variable("params", name):
        return None
    return unbox(module.get_variable("params", name))


def _base(w: Any) -> Any:
    """The array a parameter's dtype is read from (a LowRank's base)."""
    return w.base if isinstance(w, LowRank) else w


def _promoted(module: nn.Module, x: Array, kernel: Any, bias: Any
              ) -> tuple[Array, Any, Any, Any]:
    """(x, kernel, bias, dtype) promoted as flax promotes (inputs, kernel, bias);
    LowRank leaves stay LowRank (their consumers cast them to dtype)."""
    x, k, b = module.promote_dtype(x, _base(kernel), _base(bias), dtype=module.dtype)
    return (x, kernel if isinstance(kernel, LowRank) else k,
            bias if isinstance(bias, LowRank) else b, k.dtype)


def _plus_bias(y: Array, bias: Any, dtype: Any) -> Array:
    """``y + bias`` (bias broadcast over y's leading axes; a LowRank through
    :func:`perturb.add`), or y without a bias."""
    return y if bias is None else perturb.add(y, bias, dtype=dtype)


def _dense(module: nn.Dense, x: Array) -> Array | None:
    """Dense: ``matmul(x, kernel) + bias`` in flax's promoted dtype and precision."""
    if module.dot_general is not None or module.dot_general_cls is not None:
        return None
    bias = _param(module, "bias") if module.use_bias else None
    x, kernel, bias, dtype = _promoted(module, x, _param(module, "kernel"), bias)
    y = perturb.matmul(x, kernel, precision=module.precision, dtype=dtype)
    return _plus_bias(y, bias, dtype)


def _dense_general(module: nn.DenseGeneral, x: Array) -> Array | None:
    """DenseGeneral (any number of contracted and feature axes, no batch_dims): the
    contracted axes moved last, then :func:`perturb.dense_general`; a 2-D (heads,
    head_dim) bias through :func:`perturb.add`."""
    axis = as_ints(module.axis)
    kernel = _param(module, "kernel")
    if (module.dot_general is not None or module.dot_general_cls is not None
            or as_ints(module.batch_dims) or len(kernel.shape) != len(axis)
            + len(as_ints(module.features))):
        return None
    ndim = jnp.ndim(x)
    axis = tuple(ax % ndim for ax in axis)
    x = jnp.moveaxis(x, axis, tuple(range(ndim - len(axis), ndim)))
    bias = _param(module, "bias") if module.use_bias else None
    x, kernel, bias, dtype = _promoted(module, x, kernel, bias)
    y = perturb.dense_general(x, kernel, len(axis), precision=module.precision, dtype=dtype)
    return _plus_bias(y, bias, dtype)


def _conv(module: nn.Conv, x: Array) -> Array | None:
    """Conv (shared weights): :func:`perturb.conv` over the layer's own convolution."""
    if (not module.shared_weights or module.mask is not None
            or module.conv_general_dilated is not None
            or module.conv_general_dilated_cls is not None):
        return None
    return _conv_with(module, x, module.feature_group_count)


def _conv_transpose(module: nn.ConvTranspose, x: Array) -> Array | None:
    """ConvTranspose with kernel (..., in, out): as Conv (transpose_kernel swaps them)."""
    if module.mask is not None or module.transpose_kernel:
        return None
    return _conv_with(module, x, 1)


def _conv_with(module: nn.Module, x: Array, groups: int) -> Array:
    """``perturb.conv`` with conv_fn = this layer without bias and with
    ``features = kernel.shape[-1]`` (flax's own padding, strides, dtype, precision)."""

    def conv_fn(x: Array, kernel: Array) -> Array:
        layer = module.clone(parent=None, features=jnp.shape(kernel)[-1], use_bias=False)
        return layer.apply({"params": {"kernel": kernel}}, x)

    kernel = _param(module, "kernel")
    bias = _param(module, "bias") if module.use_bias else None
    _, _, bias, dtype = _promoted(module, x, kernel, bias)
    return _plus_bias(perturb.conv(x, kernel, conv_fn, feature_group_count=groups), bias,
                      dtype)


def _embed(module: nn.Embed, inputs: Array) -> Array | None:
    """Embed: :func:`perturb.take` (rows of base and of the factor a; no table formed)."""
    if not jnp.issubdtype(jnp.result_type(inputs), jnp.integer) or module.num_embeddings == 1:
        return None  # flax's own code raises / broadcasts
    table = _param(module, "embedding")
    (base,) = module.promote_dtype(_base(table), dtype=module.dtype, inexact=False)
    return perturb.take(table if isinstance(table, LowRank) else base, inputs,
                        dtype=base.dtype)


def _attend(module: nn.Embed, query: Array) -> Array:
    """Embed.attend (tied output layer): ``query @ table.T`` through ``matmul(transpose)``."""
    table = _param(module, "embedding")
    query, base = module.promote_dtype(query, _base(table), dtype=module.dtype)
    return perturb.matmul(query, table if isinstance(table, LowRank) else base,
                          dtype=base.dtype, transpose=True)


class Layer(NamedTuple):
    """A linen method the interceptor fuses: its fused form and the params it reads."""

    fused: Callable[[nn.Module, Array], Array | None]
    params: tuple[str, ...]


LAYERS: dict[Callable, Layer] = {
    raw_method(nn.Dense.__call__): Layer(_dense, ("kernel",)),
    raw_method(nn.DenseGeneral.__call__): Layer(_dense_general, ("kernel", "bias")),
    raw_method(nn.Conv.__call__): Layer(_conv, ("kernel",)),  # _Conv's: ConvLocal too
    raw_method(nn.ConvTranspose.__call__): Layer(_conv_transpose, ("kernel",)),
    raw_method(nn.Embed.__call__): Layer(_embed, ("embedding",)),
    raw_method(nn.Embed.attend): Layer(_attend, ("embedding",)),
}


def _materialized(module: nn.Module, method: str, args: tuple, kwargs: dict) -> Any:
    """The layer's own method on dense parameters (the fallback; no pick: it is dense)."""
    params = {k: perturb.materialize(v) if isinstance(unbox(v), LowRank) else v
              for k, v in module.variables.get("params", {}).items()}
    return module.clone(parent=None).apply({"params": params}, *args, method=method,
                                           **kwargs)


def interceptor(next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
    """Routes a known layer's method with a LowRank parameter to its fused form.

    Args:
        next_fun, args, kwargs, context: as :func:`flax.linen.intercept_methods` passes
            them.

    Returns:
        The method's output.
    """
    layer = LAYERS.get(getattr(context.orig_method, "func", None))
    module = context.module
    if layer is None or not any(isinstance(_param(module, n), LowRank) for n in layer.params):
        return next_fun(*args, **kwargs)
    y = layer.fused(module, args[0]) if len(args) == 1 and not kwargs else None
    return _materialized(module, context.method_name, args, kwargs) if y is None else y
