"""flax.nnx layers on the fused low-rank path (the nnx half of
:mod:`fold_jax.estimators.flax_layers`).

nnx has no method interception: while :func:`patched` is open the methods in
:data:`LAYERS` are replaced on their classes by :class:`fold_jax.estimators.flax_hooks.NnxPatch`
(reference-counted, restored on exit, also after an exception; process-wide, which
changes nothing for array parameters: the replacement calls the original method then),
the mechanism the converted kernels of pruning and binarization use too. A replaced
method whose module holds a :class:`fold_jax.estimators.perturb.LowRank` parameter value computes
through :mod:`fold_jax.estimators.perturb`; a call with extra arguments or a configuration the
fused form does not cover runs the original method on a :class:`fold_jax.estimators.flax_hooks.View`
of the module whose LowRank parameters are ``materialize``-d (the fallback, reported
by :mod:`fold_jax.estimators.fusion`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax.numpy as jnp
from flax import nnx
from jax import lax
from jaxtyping import Array

from fold_jax.estimators import perturb
from fold_jax.estimators.flax_hooks import NnxPatch, View, unbox
from fold_jax.estimators.perturb import LowRank

__all__ = ["LAYERS", "Layer", "patched"]


def _value(module: Any, name: str) -> Any:
    """The value of the module's Param ``name`` (None when absent)."""
    return unbox(getattr(module, name, None))


def _base(w: Any) -> Any:
    return w.base if isinstance(w, LowRank) else w


def _promoted(module: Any, x: Array, kernel: Any, bias: Any) -> tuple[Array, Any, Any, Any]:
    """(x, kernel, bias, dtype) promoted as nnx promotes (inputs, kernel, bias);
    LowRank leaves stay LowRank (their consumers cast them to dtype)."""
    x, k, b = module.promote_dtype((x, _base(kernel), _base(bias)), dtype=module.dtype)
    return (x, kernel if isinstance(kernel, LowRank) else k,
            bias if isinstance(bias, LowRank) else b, k.dtype)


def _plus_bias(y: Array, bias: Any, dtype: Any) -> Array:
    return y if bias is None else perturb.add(y, bias, dtype=dtype)


def _linear(module: nnx.Linear, original: Callable, x: Array) -> Array | None:
    """nnx.Linear: ``matmul(x, kernel) + bias`` in nnx's promoted dtype and precision."""
    if module.dot_general is not lax.dot_general or module.preferred_element_type is not None:
        return None
    x, kernel, bias, dtype = _promoted(module, x, _value(module, "kernel"),
                                       _value(module, "bias"))
    return _plus_bias(perturb.matmul(x, kernel, precision=module.precision, dtype=dtype),
                      bias, dtype)


def _linear_general(module: nnx.LinearGeneral, original: Callable, x: Array) -> Array | None:
    """nnx.LinearGeneral (no batch_axis, default dot_general): contracted axes moved
    last, :func:`perturb.dense_general`, a (heads, head_dim) bias via perturb.add."""
    if (module.batch_axis or module.dot_general is not None
            or module.dot_general_cls is not None or module.preferred_element_type is not None):
        return None
    ndim = jnp.ndim(x)
    axis = tuple(ax % ndim for ax in module.axis)
    x = jnp.moveaxis(x, axis, tuple(range(ndim - len(axis), ndim)))
    x, kernel, bias, dtype = _promoted(module, x, _value(module, "kernel"),
                                       _value(module, "bias"))
    y = perturb.dense_general(x, kernel, len(axis), precision=module.precision, dtype=dtype)
    return _plus_bias(y, bias, dtype)


def _conv(module: nnx.Conv, original: Callable, x: Array) -> Array | None:
    """nnx.Conv: :func:`perturb.conv` over the layer's own (original) ``__call__``."""
    if (module.mask is not None or module.conv_general_dilated is not lax.conv_general_dilated
            or module.preferred_element_type is not None):
        return None

    def conv_fn(x: Array, kernel: Array) -> Array:
        view = View(module, kernel=kernel, bias=None, use_bias=False,
                     out_features=jnp.shape(kernel)[-1], kernel_shape=tuple(jnp.shape(kernel)))
        return original(view, x)

    kernel = _value(module, "kernel")
    _, _, bias, dtype = _promoted(module, x, kernel, _value(module, "bias"))
    y = perturb.conv(x, kernel, conv_fn, feature_group_count=module.feature_group_count)
    return _plus_bias(y, bias, dtype)


def _embed(module: nnx.Embed, original: Callable, inputs: Array) -> Array | None:
    """nnx.Embed: :func:`perturb.take` (rows of base and of a; no table formed)."""
    if not jnp.issubdtype(jnp.result_type(inputs), jnp.integer) or module.num_embeddings == 1:
        return None
    table = _value(module, "embedding")
    (base,) = module.promote_dtype((_base(table),), dtype=module.dtype, inexact=False)
    return perturb.take(table, inputs, dtype=base.dtype)


def _attend(module: nnx.Embed, original: Callable, query: Array) -> Array:
    """nnx.Embed.attend: ``query @ table.T`` through ``matmul(transpose=True)``."""
    table = _value(module, "embedding")
    query, base = module.promote_dtype((query, _base(table)), dtype=module.dtype)
    return perturb.matmul(query, table, dtype=base.dtype, transpose=True)


class Layer(NamedTuple):
    """An nnx method the patch fuses: its fused form and the Params it reads."""

    fused: Callable[[Any, Callable, Array], Array | None]
    params: tuple[str, ...]


LAYERS: dict[tuple[type, str], Layer] = {
    (nnx.Linear, "__call__"): Layer(_linear, ("kernel", "bias")),
    (nnx.LinearGeneral, "__call__"): Layer(_linear_general, ("kernel", "bias")),
    (nnx.Conv, "__call__"): Layer(_conv, ("kernel", "bias")),
    (nnx.Embed, "__call__"): Layer(_embed, ("embedding",)),
    (nnx.Embed, "attend"): Layer(_attend, ("embedding",)),
}


def _plain_call(original: Callable, module: Any, args: tuple, kwargs: dict) -> Array | None:
    """The input when the call passes only it (every other argument at its default)."""
    signature = inspect.signature(original)
    bound = signature.bind(module, *args, **kwargs)
    bound.apply_defaults()
    params = signature.parameters
    names = list(params)
    extra = [n for n in names[2:] if bound.arguments[n] is not params[n].default]
    return None if extra else bound.arguments[names[1]]


def _patched(original: Callable, layer: Layer) -> Callable:
    """The method, routing a module with a LowRank Param to ``layer.fused``."""

    @functools.wraps(original)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        values = {n: _value(self, n) for n in layer.params}
        low = {n: v for n, v in values.items() if isinstance(v, LowRank)}
        if not low:
            return original(self, *args, **kwargs)
        x = _plain_call(original, self, args, kwargs)
        y = None if x is None else layer.fused(self, original, x)
        if y is None:  # the layer's own code on dense parameters
            dense = {n: perturb.materialize(v) for n, v in low.items()}
            y = original(View(self, **dense), *args, **kwargs)
        return y

    return method


_PATCHES = tuple(NnxPatch(cls, functools.partial(_patched, layer=layer), name)
                 for (cls, name), layer in LAYERS.items())


@contextlib.contextmanager
def patched() -> Iterator[None]:
    """The nnx layers in :data:`LAYERS` take the fused path while open (nestable).

    Yields:
        None.
    """
    with contextlib.ExitStack() as stack:
        for patch in _PATCHES:
            patch.enter()
            stack.callback(patch.exit)
        yield
