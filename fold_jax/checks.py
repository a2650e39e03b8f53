"""Argument checks shared by the public API: each raises ValueError or TypeError naming
the argument and what is allowed, in Python, before JAX traces anything."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree

__all__ = ["check_callable", "check_int", "check_key", "check_params", "check_positive"]


def check_callable(fun: Any, argument: str, signature: str | None = None) -> None:
    """TypeError unless ``fun`` is callable; ``signature`` (e.g. "f(x) -> y") is shown."""
    if not callable(fun):
        shape = f" ({signature})" if signature else ""
        raise TypeError(f"{argument} must be callable{shape}, got {type(fun).__name__}")


def check_int(value: Any, argument: str, minimum: int = 1, *, allow_none: bool = False,
              allow_numpy: bool = False) -> None:
    """ValueError unless ``value`` is an int >= ``minimum`` (bools never count; numpy
    integers only with ``allow_numpy``; None only with ``allow_none``)."""
    if value is None and allow_none:
        return
    kinds = int | np.integer if allow_numpy else int
    if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
        raise ValueError(f"{argument}={value!r} must be an int >= {minimum}"
                         + (" or None" if allow_none else ""))


def check_positive(value: Any, argument: str) -> None:
    """ValueError unless ``value`` is a positive finite number (bools never count)."""
    if (isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
            or not math.isfinite(value)):
        raise ValueError(f"{argument}={value!r} must be a positive finite number")


def check_key(key, argument: str = "key") -> None:
    """TypeError naming ``argument`` unless ``key`` is one PRNG key: a typed key of
    shape () (``jax.random.key(seed)``) or a legacy raw uint32 key of shape (2,)
    (``jax.random.PRNGKey(seed)``, accepted as jax.random accepts it). Works on
    tracers (only static shape and dtype are read)."""
    shape, dtype = getattr(key, "shape", None), getattr(key, "dtype", None)
    if shape is None or dtype is None:
        raise TypeError(f"{argument} must be a PRNG key from jax.random.key(seed), got "
                        f"{type(key).__name__} {key!r:.40}")
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if tuple(shape) != ():
            raise TypeError(f"{argument} must be a single PRNG key of shape (), got a key "
                            f"array of shape {tuple(shape)} (split keys are vmapped over)")
        return
    if np.dtype(dtype) != np.uint32 or tuple(shape) != (2,):
        raise TypeError(f"{argument} must be a PRNG key from jax.random.key(seed) (or a raw "
                        f"uint32 key of shape (2,)), got an array of dtype {dtype} and shape "
                        f"{tuple(shape)}")


def check_params(params: PyTree, purpose: str) -> None:
    """ValueError when ``params`` has no entries (``purpose`` says why that matters),
    TypeError when a leaf is not floating point; both name params."""
    leaves = jax.tree.leaves(params)
    if sum(math.prod(jnp.shape(w)) for w in leaves) == 0:
        raise ValueError(f"params has no entries: {purpose}")
    for w in leaves:
        if not jnp.issubdtype(jnp.result_type(w), jnp.inexact):
            raise TypeError(f"params leaves must be floating point, got a "
                            f"{jnp.result_type(w)} leaf of shape {jnp.shape(w)}")
