"""The flax hooks every layer-level rewrite of fold_jax is built on: read a layer's
variables (:func:`unbox`), recognise a layer's own method in a linen interceptor
(:func:`raw_method`, :func:`as_ints` for its int-or-tuple fields), run a layer's method
on replaced attributes (:class:`View`) and patch an nnx layer's method while a context
is open (:class:`NnxPatch`: nnx has no method interception).

Two rewrites use them: the fused low-rank layers (:mod:`fold_jax.estimators.flax_linen`,
:mod:`fold_jax.estimators.flax_nnx`) and the converted kernels of pruning and binarization
(:mod:`fold_jax.compress.walker`), so there is one set of flax hooks. This module imports nothing
of fold_jax: it sits on the estimators' floor, below the layers that use it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from flax import nnx
from flax.core import meta

__all__ = ["NnxPatch", "View", "as_ints", "raw_method", "unbox"]


def unbox(x: Any) -> Any:
    """A boxed linen variable's value (``nn.Partitioned`` etc.), an nnx Variable's value;
    anything else as it is.

    Args:
        x: a variable as a layer holds it.

    Returns:
        The value.
    """
    if isinstance(x, meta.AxisMetadata):
        return x.unbox()
    return x.get_value() if isinstance(x, nnx.Variable) else x


def raw_method(method: Callable) -> Callable:
    """The user function under flax's method wrapper (what ``context.orig_method``
    calls): compare it to recognise a layer's own ``__call__`` in an interceptor.

    Args:
        method: a flax module method, e.g. ``nn.Dense.__call__``.

    Returns:
        The wrapped function (``method`` itself when it is not wrapped).
    """
    return getattr(method, "__wrapped__", method)


def as_ints(x: int | Sequence[int]) -> tuple[int, ...]:
    """flax's int-or-sequence field (axis, features, batch_dims) as a tuple.

    Args:
        x: an int or a sequence of ints.

    Returns:
        The tuple of ints.
    """
    return (x,) if isinstance(x, int) else tuple(x)


class View:
    """A module's attributes with some replaced, to run its own ``__call__`` on them
    (``original(View(module, kernel=dense), x)``)."""

    def __init__(self, target: Any, **overrides: Any):
        self.__dict__["_target"] = target
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_target"], name)


class NnxPatch:
    """Reference-counted replacement of an nnx layer's method (nnx has no method
    interception): ``enter()`` installs ``wrap(original)`` on the class, the matching
    last ``exit()`` restores the original. Process-wide: ``wrap``'s method must run the
    original for ordinary (array) parameters, so other threads see no change. Used by
    the converted kernels here and the low-rank layers of :mod:`fold_jax.estimators.flax_nnx`.

    Args:
        layer: the nnx layer class (``nnx.Linear``).
        wrap: ``wrap(original_method) -> new_method``.
        method: the method's name (default ``"__call__"``; ``"attend"`` for Embed's).
    """

    def __init__(self, layer: type, wrap: Callable[[Callable], Callable],
                 method: str = "__call__"):
        self.layer = layer
        self.wrap = wrap
        self.method = method
        self.lock = threading.Lock()
        self.depth = 0
        self.saved: Callable | None = None

    def enter(self) -> None:
        """Install the wrapped method (first entry) and count the entry."""
        with self.lock:
            if self.depth == 0:
                self.saved = self.layer.__dict__[self.method]
                setattr(self.layer, self.method, self.wrap(self.saved))
            self.depth += 1

    def exit(self) -> None:
        """Count the exit; the last one restores the original method."""
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                setattr(self.layer, self.method, self.saved)
                self.saved = None
