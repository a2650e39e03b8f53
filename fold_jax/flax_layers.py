"""Standard flax layers on the fused low-rank path, with no change to the user's model.

Inside :func:`intercept` (or in a function wrapped by :func:`wrap`) these layers,
when their ``kernel`` parameter is a :class:`fold_jax.perturb.LowRank`, compute their
output through :func:`fold_jax.perturb.matmul` / :func:`fold_jax.perturb.conv`
(``x @ W + s (x @ A) B^T`` or ``x @ (W + s A B^T)``, as ``kernel.pick`` says) instead of
failing on the non-array kernel:

======================================  ==============================================
layer                                   fused when
======================================  ==============================================
``flax.linen.Dense``                    no custom ``dot_general`` / ``dot_general_cls``
``flax.linen.DenseGeneral``             also: no ``batch_dims``, one output axis (the
                                        kernel (*contracted, out) is then its matrix
                                        view; the contracted axes are moved last)
``flax.linen.Conv``                     no ``mask``, no custom ``conv_general_dilated``
                                        (``feature_group_count`` > 1 included)
``flax.linen.ConvTranspose``            no ``mask``, ``transpose_kernel=False``
``flax.nnx.Linear``                     default ``dot_general``, no
                                        ``preferred_element_type`` / ``out_sharding``
``flax.nnx.Conv``                       also: no ``mask``, default
                                        ``conv_general_dilated``
======================================  ==============================================

Otherwise (and for ``flax.linen.ConvLocal``) the layer's own code runs on
``materialize(kernel)``: correct, at the cost of one perturbed kernel per direction,
and without a call to ``kernel.pick`` (it is the dense association; ``kernel.a`` is
still read, by ``materialize``). Layers whose
kernel is an array run exactly as without the context (the interceptor calls the
original method, the nnx patch calls the original ``__call__``). The convolutions
are the layer's own code (``module.clone(...).apply`` for linen, the original
``__call__`` on a view of the module for nnx), so strides, padding (including
CIRCULAR / REFLECT / CAUSAL), dilation, batch-dim flattening, dtype promotion and
precision are flax's; bias is added after the product as flax does.

How it hooks in:

- linen: :func:`flax.linen.intercept_methods` (thread-local). The interceptor
  recognises a layer by the raw method being called (``context.orig_method``), so a
  subclass that overrides ``__call__`` and calls ``super().__call__`` is fused at the
  super call, and one that replaces ``__call__`` is left alone. Lifted transforms
  keep the interception (``nn.scan`` over ``nn.remat`` blocks with stacked LowRank
  kernels is tested; ``nn.jit`` and ``nn.vmap`` behaved the same in a manual check). Interception
  sees only module methods, so a kernel used outside one (``self.variables`` read in
  a parent and multiplied by hand) is not covered: use :func:`perturb.matmul` there.
- nnx has no method interception: ``nnx.Linear.__call__`` and ``nnx.Conv.__call__``
  are replaced on the classes while any :func:`intercept` is open (reference-counted,
  restored in ``finally``, also after an exception). The patch is process-wide: other
  threads see it too, which changes nothing for array kernels.

Recipes (the loss sees params with LowRank leaves; jit / vmap / scan it as usual)::

    import flax.linen as nn
    from fold_jax import flax_layers

    model = nn.Sequential([nn.Dense(128), nn.relu, nn.Dense(10)])
    params = model.init(key, x)

    @flax_layers.wrap                                    # trace it inside intercept()
    def loss(params, x, y):
        return cross_entropy(model.apply(params, x), y)  # params: {"params": {...}}

    # nnx: split once, merge inside the loss; a LowRank put into the State becomes
    # the Param's value after nnx.merge (nnx.Variable holds any value).
    from flax import nnx
    model = nnx.Linear(64, 128, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)

    @flax_layers.wrap
    def loss(state, x, y):
        return cross_entropy(nnx.merge(graphdef, state)(x), y)

    # jax.tree.map over `state` sees the kernel arrays (Param is a pytree node), so
    # an estimator replaces them by LowRank leaves the same way as in a dict.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import flax.linen as nn
import jax.numpy as jnp
from flax import nnx
from flax.core import meta
from jax import lax
from jaxtyping import Array

from fold_jax import perturb
from fold_jax.perturb import LowRank

__all__ = ["intercept", "wrap"]

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def intercept() -> Iterator[None]:
    """Standard flax layers take the fused path for LowRank kernels while open.

    Covers flax.linen Dense, DenseGeneral, Conv, ConvTranspose and flax.nnx Linear,
    Conv (module docstring: when each is fused, and the fallback). It acts at trace
    time, so open it around the code that traces the loss (inside ``jax.jit``,
    ``jax.vmap``, ``lax.scan``), e.g. with :func:`wrap`. Re-entrant and nestable.

    Yields:
        None.
    """
    with _nnx_patched(), nn.intercept_methods(_linen_interceptor):
        yield


def wrap(fun: F) -> F:
    """``fun`` called inside :func:`intercept` (same signature; for a loss to estimate).

    Args:
        fun: any function, typically ``loss(params, *args)`` applying a flax model.

    Returns:
        A function with fun's signature and result that traces fun inside intercept().
    """

    @functools.wraps(fun)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with intercept():
            return fun(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


# ----------------------------------------------------------------------------- linen


def _unbox(x: Any) -> Any:
    """A boxed (``nn.Partitioned`` etc.) variable's value; anything else as is."""
    return x.unbox() if isinstance(x, meta.AxisMetadata) else x


def _tuple(x: int | Sequence[int]) -> tuple[int, ...]:
    """flax's int-or-sequence field (axis, features, batch_dims) as a tuple."""
    return (x,) if isinstance(x, int) else tuple(x)


def _linen_kernel(module: nn.Module) -> LowRank | None:
    """The module's "params"/"kernel" when it is a LowRank, else None (init: absent)."""
    kernel = _unbox(module.get_variable("params", "kernel"))
    return kernel if isinstance(kernel, LowRank) else None


def _linen_bias(module: nn.Module, x: Array, w: LowRank) -> Array | None:
    """The module's bias promoted as flax promotes it with (inputs, kernel), or None."""
    if not module.use_bias:
        return None
    bias = _unbox(module.get_variable("params", "bias"))
    return module.promote_dtype(x, w.base, bias, dtype=module.dtype)[2]


def _linen_apply(module: nn.Module, params: dict, *args: Any, **fields: Any) -> Any:
    """``module.__call__(*args)`` (fields overridden) as a pure function of params."""
    return module.clone(parent=None, **fields).apply({"params": params}, *args)


def _linen_materialized(module: nn.Module, w: LowRank, args: tuple, kwargs: dict) -> Any:
    """The layer's own code on the dense kernel (the fallback; no pick: it is dense)."""
    params = {**module.variables.get("params", {}), "kernel": perturb.materialize(w)}
    return module.clone(parent=None).apply({"params": params}, *args, **kwargs)


def _add(y: Array, bias: Array | None) -> Array:
    """``y + bias`` (bias (out,) broadcast over y (..., out)), or y without a bias."""
    return y if bias is None else y + bias


def _linen_dense(module: nn.Dense, w: LowRank, x: Array) -> Array | None:
    """Dense: ``matmul(x, kernel) + bias`` in flax's promoted dtype and precision."""
    if module.dot_general is not None or module.dot_general_cls is not None:
        return None
    bias = _linen_bias(module, x, w)
    x, base, _ = module.promote_dtype(x, w.base, None, dtype=module.dtype)
    return _add(perturb.matmul(x, w, precision=module.precision, dtype=base.dtype), bias)


def _linen_dense_general(module: nn.DenseGeneral, w: LowRank, x: Array) -> Array | None:
    """DenseGeneral with the contracted axes moved last and flattened (matrix view)."""
    axis = _tuple(module.axis)
    if (module.dot_general is not None or module.dot_general_cls is not None
            or _tuple(module.batch_dims) or len(_tuple(module.features)) != 1
            or len(w.shape) != len(axis) + 1):
        return None
    ndim = jnp.ndim(x)
    axis = tuple(ax % ndim for ax in axis)
    moved = jnp.moveaxis(x, axis, tuple(range(ndim - len(axis), ndim)))
    return _linen_dense(module, w, jnp.reshape(moved, (*moved.shape[: ndim - len(axis)], -1)))


def _linen_conv(module: nn.Conv, w: LowRank, x: Array) -> Array | None:
    """Conv (shared weights): :func:`perturb.conv` over the layer's own convolution."""
    if (not module.shared_weights or module.mask is not None
            or module.conv_general_dilated is not None
            or module.conv_general_dilated_cls is not None):
        return None
    groups = module.feature_group_count
    return _linen_conv_with(module, w, x, groups)


def _linen_conv_transpose(module: nn.ConvTranspose, w: LowRank, x: Array) -> Array | None:
    """ConvTranspose with kernel (..., in, out): as Conv (transpose_kernel swaps them)."""
    if module.mask is not None or module.transpose_kernel:
        return None
    return _linen_conv_with(module, w, x, 1)


def _linen_conv_with(module: nn.Module, w: LowRank, x: Array, groups: int) -> Array:
    """``perturb.conv`` with conv_fn = this layer without bias and with
    ``features = kernel.shape[-1]`` (flax's own padding, strides, dtype, precision)."""

    def conv_fn(x: Array, kernel: Array) -> Array:
        return _linen_apply(module, {"kernel": kernel}, x, features=jnp.shape(kernel)[-1],
                            use_bias=False)

    return _add(perturb.conv(x, w, conv_fn, feature_group_count=groups),
                _linen_bias(module, x, w))


def _raw(method: Callable) -> Callable:
    """The user function under flax's method wrapper (what ``orig_method`` calls)."""
    return getattr(method, "__wrapped__", method)


_LINEN: dict[Callable, Callable[..., Array | None]] = {
    _raw(nn.Dense.__call__): _linen_dense,
    _raw(nn.DenseGeneral.__call__): _linen_dense_general,
    _raw(nn.Conv.__call__): _linen_conv,  # _Conv's: ConvLocal too (shared_weights False)
    _raw(nn.ConvTranspose.__call__): _linen_conv_transpose,
}


def _linen_interceptor(next_fun: Callable, args: tuple, kwargs: dict, context: Any) -> Any:
    """Routes a known layer's ``__call__`` with a LowRank kernel to its fused form."""
    fused = _LINEN.get(getattr(context.orig_method, "func", None))
    w = None if fused is None else _linen_kernel(context.module)
    if w is None:
        return next_fun(*args, **kwargs)
    y = fused(context.module, w, args[0]) if len(args) == 1 and not kwargs else None
    return _linen_materialized(context.module, w, args, kwargs) if y is None else y


# ------------------------------------------------------------------------------- nnx


class _View:
    """A module's attributes with some replaced, to run its original ``__call__`` on
    another kernel (a plain object: nothing is mutated, nothing is an nnx Variable)."""

    def __init__(self, target: Any, **overrides: Any):
        self.__dict__["_target"] = target
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_target"], name)


def _nnx_kernel(module: Any) -> LowRank | None:
    """The value of the module's ``kernel`` Param when it is a LowRank, else None."""
    kernel = getattr(module, "kernel", None)
    if isinstance(kernel, nnx.Variable):
        kernel = kernel.get_value()
    return kernel if isinstance(kernel, LowRank) else None


def _nnx_bias(module: Any, x: Array, w: LowRank) -> Array | None:
    """The module's bias promoted as nnx promotes it with (inputs, kernel), or None."""
    if module.bias is None:
        return None
    return module.promote_dtype((x, w.base, module.bias[...]), dtype=module.dtype)[2]


def _plain_call(original: Callable, module: Any, args: tuple, kwargs: dict) -> Array | None:
    """The input when the call passes only it (every other argument at its default)."""
    signature = inspect.signature(original)
    bound = signature.bind(module, *args, **kwargs)
    bound.apply_defaults()
    params = signature.parameters
    names = list(params)
    extra = [n for n in names[2:] if bound.arguments[n] is not params[n].default]
    return None if extra else bound.arguments[names[1]]


def _nnx_linear(module: nnx.Linear, original: Callable, w: LowRank, x: Array) -> Array | None:
    """nnx.Linear: ``matmul(x, kernel) + bias`` in nnx's promoted dtype and precision."""
    if module.dot_general is not lax.dot_general or module.preferred_element_type is not None:
        return None
    bias = _nnx_bias(module, x, w)
    x, base, _ = module.promote_dtype((x, w.base, None), dtype=module.dtype)
    return _add(perturb.matmul(x, w, precision=module.precision, dtype=base.dtype), bias)


def _nnx_conv(module: nnx.Conv, original: Callable, w: LowRank, x: Array) -> Array | None:
    """nnx.Conv: :func:`perturb.conv` over the layer's own (original) ``__call__``."""
    if (module.mask is not None or module.conv_general_dilated is not lax.conv_general_dilated
            or module.preferred_element_type is not None):
        return None

    def conv_fn(x: Array, kernel: Array) -> Array:
        view = _View(module, kernel=kernel, bias=None, use_bias=False,
                     out_features=jnp.shape(kernel)[-1], kernel_shape=tuple(jnp.shape(kernel)))
        return original(view, x)

    y = perturb.conv(x, w, conv_fn, feature_group_count=module.feature_group_count)
    return _add(y, _nnx_bias(module, x, w))


def _patched(original: Callable, fused: Callable[..., Array | None]) -> Callable:
    """``__call__`` that routes a LowRank kernel to ``fused`` (array kernels: original)."""

    @functools.wraps(original)
    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        w = _nnx_kernel(self)
        if w is None:
            return original(self, *args, **kwargs)
        x = _plain_call(original, self, args, kwargs)
        y = None if x is None else fused(self, original, w, x)
        if y is None:  # the layer's own code on the dense kernel
            y = original(_View(self, kernel=perturb.materialize(w)), *args, **kwargs)
        return y

    return __call__


class _NnxPatch:
    """Reference-counted replacement of the nnx layers' ``__call__`` (process-wide)."""

    def __init__(self, targets: dict[type, Callable[..., Array | None]]):
        self.targets = targets
        self.lock = threading.Lock()
        self.depth = 0
        self.saved: dict[type, Callable] = {}

    def enter(self) -> None:
        with self.lock:
            if self.depth == 0:
                for layer, fused in self.targets.items():
                    self.saved[layer] = layer.__dict__["__call__"]
                    layer.__call__ = _patched(self.saved[layer], fused)
            self.depth += 1

    def exit(self) -> None:
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                for layer, original in self.saved.items():
                    layer.__call__ = original
                self.saved.clear()


_NNX_PATCH = _NnxPatch({nnx.Linear: _nnx_linear, nnx.Conv: _nnx_conv})


@contextlib.contextmanager
def _nnx_patched() -> Iterator[None]:
    _NNX_PATCH.enter()
    try:
        yield
    finally:
        _NNX_PATCH.exit()
