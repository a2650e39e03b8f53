"""Standard flax layers on the fused low-rank path, with no change to the user's model.

Inside :func:`intercept` (or in a function wrapped by :func:`wrap`) these layers,
when a parameter is a :class:`fold_jax.estimators.perturb.LowRank`, compute their output through
:mod:`fold_jax.estimators.perturb` (one ``w.pick`` per use, obeyed) instead of failing on the
non-array parameter:

=========================================  ===========================================
layer (parameter)                          fused as / when
=========================================  ===========================================
``linen.Dense``, ``nnx.Linear`` (kernel)   ``perturb.matmul``; default dot_general
                                           (nnx: no ``preferred_element_type``)
``linen.DenseGeneral``,                    ``perturb.dense_general``: any number of
``nnx.LinearGeneral`` (kernel, bias)       contracted and feature axes (attention's
                                           q/k/v (in, heads, head_dim) and out
                                           (heads, head_dim, out)); a 2-D bias
                                           through ``perturb.add``; no batch dims,
                                           default dot_general
``linen.MultiHeadDotProductAttention``,    through their DenseGeneral / LinearGeneral
``nnx.MultiHeadAttention``                 projections (default ``*_dot_general``)
``linen.Embed``, ``nnx.Embed`` (table)     ``__call__``: ``perturb.take`` (rows of
                                           base and of the factor a: the perturbed
                                           table is never formed); ``attend``:
                                           ``perturb.matmul(transpose=True)``
``linen.Conv``, ``nnx.Conv`` (kernel)      ``perturb.conv``; no ``mask``, default
                                           ``conv_general_dilated`` (groups included)
``linen.ConvTranspose`` (kernel)           no ``mask``, ``transpose_kernel=False``
=========================================  ===========================================

Otherwise (and for ``flax.linen.ConvLocal``, or a call with extra arguments) the
layer's own code runs on ``materialize``-d parameters: correct, at the cost of one
perturbed kernel per direction, and without a call to ``pick``
(:mod:`fold_jax.estimators.fusion` reports such a leaf as materialized and warns). Layers whose
parameters are arrays run exactly as without the context. The convolutions are the
layer's own code (``module.clone(...).apply`` for linen, the original ``__call__`` on
a view of the module for nnx), so strides, padding (including CIRCULAR / REFLECT /
CAUSAL), dilation, dtype promotion and precision are flax's; bias is added after the
product as flax does. 1-D parameters (biases, LayerNorm scales) never are LowRank:
they get full-rank noise (:mod:`fold_jax.estimators.directions`). A table the user adds by hand
(a learned positional embedding ``h + pos[:T]``) is no layer's: the estimator sums
it before the loss, which :mod:`fold_jax.estimators.fusion` classifies as cheap ("summed") when
it is added to an activation at least its size.

How it hooks in (:mod:`fold_jax.estimators.flax_linen`, :mod:`fold_jax.estimators.flax_nnx`):

- linen: :func:`flax.linen.intercept_methods` (thread-local). The interceptor
  recognises a layer by the raw method being called (``context.orig_method``), so a
  subclass that overrides ``__call__`` and calls ``super().__call__`` is fused at the
  super call, and one that replaces ``__call__`` is left alone. Lifted transforms
  keep the interception (``nn.scan`` over ``nn.remat`` blocks with stacked LowRank
  kernels is tested). Interception sees only module methods, so a kernel used
  outside one (``self.variables`` read in a parent and multiplied by hand) is not
  covered: use :func:`perturb.matmul` there.
- nnx has no method interception: the methods above are replaced on the classes
  while any :func:`intercept` is open (reference-counted, restored in ``finally``,
  also after an exception). The patch is process-wide: other threads see it too,
  which changes nothing for array parameters.

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
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import flax.linen as nn

from fold_jax.estimators import flax_linen, flax_nnx

__all__ = ["intercept", "wrap"]

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def intercept() -> Iterator[None]:
    """Standard flax layers take the fused path for LowRank parameters while open.

    Covers the layers of the module docstring's table. It acts at trace time, so
    open it around the code that traces the loss (inside ``jax.jit``, ``jax.vmap``,
    ``lax.scan``), e.g. with :func:`wrap`. Re-entrant and nestable.

    Yields:
        None.
    """
    with flax_nnx.patched(), nn.intercept_methods(flax_linen.interceptor):
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
