"""Argument checks shared by the public API: each raises ValueError or TypeError naming
the argument and what is allowed, in Python, before JAX traces anything. One traced
check sits beside them: :func:`all_finite`, the test a step passes before it is kept.

Numbers may be given as Python numbers, NumPy scalars (or 0-d arrays) and concrete
0-d JAX arrays; :func:`check_int` and :func:`check_positive` return them as Python
``int`` / ``float``, so the caller can use the value in Python (shapes, loop counts,
optax hyperparameters). A traced value (inside ``jax.jit``) is a TypeError: these
arguments must be known when the function is built.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree

__all__ = ["all_finite", "check_bool", "check_bool_or", "check_callable", "check_choice",
           "check_finite", "check_fraction", "check_int", "check_key", "check_mask", "check_params",
           "check_positive", "check_scalar_loss", "leaf_paths"]


def check_callable(fun: Any, argument: str, signature: str | None = None) -> None:
    """TypeError unless ``fun`` is callable; ``signature`` (e.g. "f(x) -> y") is shown.

    Args:
        fun: the value to check.
        argument: the argument's name, used in the error message.
        signature: the expected call signature, shown in the message (optional).
    """
    if not callable(fun):
        shape = f" ({signature})" if signature else ""
        raise TypeError(f"{argument} must be callable{shape}, got {type(fun).__name__}")


def _scalar(value: Any, argument: str, integer: bool) -> int | float | None:
    """``value`` as a Python int (``integer``) or real number, or None when it is not
    one (bools never count). TypeError for a tracer."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"{argument} must be a concrete number, not traced (got a traced "
                        f"{value.dtype} of shape {value.shape} inside a jax transformation); "
                        f"pass it as a Python or NumPy number, or mark it static")
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return None if integer else float(value)
    if isinstance(value, np.generic | np.ndarray | jax.Array):
        if np.shape(value) != ():
            return None
        dtype = value.dtype
        if jnp.issubdtype(dtype, jnp.integer):
            return int(value)
        if not integer and jnp.issubdtype(dtype, jnp.floating):
            return float(value)
    return None


def check_int(value: Any, argument: str, minimum: int = 1, *, allow_none: bool = False,
              allow_numpy: bool = True) -> int | None:
    """``value`` as a Python int, checked to be >= ``minimum``.

    Args:
        value: a Python int, a NumPy integer scalar or a concrete 0-d JAX integer array
            (bools and floats never count); None only with ``allow_none``.
        argument: the argument's name, shown in the error.
        minimum: the smallest allowed value.
        allow_none: accept None (and return it).
        allow_numpy: kept for callers that pass it; NumPy and JAX integers are always
            accepted.

    Returns:
        The value as a Python ``int``, or None when ``allow_none`` and it is None.

    Raises:
        ValueError: naming ``argument`` when ``value`` is not an allowed int >= minimum.
        TypeError: when ``value`` is a tracer (it must be concrete).
    """
    del allow_numpy
    if value is None and allow_none:
        return None
    number = _scalar(value, argument, integer=True)
    if number is None or number < minimum:
        raise ValueError(f"{argument}={value!r} must be an int >= {minimum}"
                         + (" or None" if allow_none else ""))
    return number


def check_positive(value: Any, argument: str) -> float:
    """``value`` as a Python float, checked to be positive and finite.

    Args:
        value: a Python, NumPy or concrete 0-d JAX real number (bools never count).
        argument: the argument's name, shown in the error.

    Returns:
        The value as a Python ``float``.

    Raises:
        ValueError: naming ``argument`` unless ``value`` is a positive finite number.
        TypeError: when ``value`` is a tracer (it must be concrete).
    """
    number = _scalar(value, argument, integer=False)
    if number is None or not number > 0 or not math.isfinite(number):
        raise ValueError(f"{argument}={value!r} must be a positive finite number")
    return float(number)


def check_finite(value: Any, argument: str) -> float:
    """``value`` as a Python float, checked to be a finite real number (any sign).

    Args:
        value: a Python, NumPy or concrete 0-d JAX real number (bools never count).
        argument: the argument's name, shown in the error.

    Returns:
        The value as a Python ``float``.

    Raises:
        ValueError: naming ``argument`` unless ``value`` is a finite number.
        TypeError: when ``value`` is a tracer (it must be concrete).
    """
    number = _scalar(value, argument, integer=False)
    if number is None or not math.isfinite(number):
        raise ValueError(f"{argument}={value!r} must be a finite number")
    return float(number)


def check_bool(value: Any, argument: str) -> bool:
    """``value`` as a bool, when it is one (numpy's included).

    Args:
        value: the argument's value.
        argument: its name, for the error.

    Returns:
        ``bool(value)``.

    Raises:
        TypeError: naming ``argument`` when ``value`` is not True or False.
    """
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{argument}={value!r} must be True or False")
    return bool(value)


def check_bool_or(value: Any, argument: str, names: Sequence[str],
                  bools: tuple[bool, ...] = (True, False)) -> bool | str:
    """``value`` as a Python bool when it is one of ``bools`` (numpy's included), else
    as one of ``names`` (e.g. ``fused``: "auto", True or False). Unlike
    :func:`check_choice`, 1 and 0 are not taken for True and False.

    Args:
        value: the argument's value.
        argument: its name, for the error.
        names: the allowed strings.
        bools: the allowed bools.

    Returns:
        ``bool(value)`` or ``value``.

    Raises:
        ValueError: naming ``argument`` and the allowed values otherwise.
    """
    if isinstance(value, bool | np.bool_) and bool(value) in bools:
        return bool(value)
    if isinstance(value, str) and value in names:
        return value
    raise ValueError(f"{argument}={value!r} is not known; allowed: {[*names, *bools]}")


def check_fraction(value: Any, argument: str) -> float:
    """``value`` as a float in [0, 1) (a sparsity: the fraction of weights removed).

    Args:
        value: the argument's value.
        argument: its name, for the error.

    Returns:
        ``float(value)``.

    Raises:
        ValueError: naming ``argument`` when ``value`` is not a real number in [0, 1).
    """
    if (isinstance(value, bool) or not isinstance(value, int | float | np.floating)
            or not 0 <= value < 1):
        raise ValueError(f"{argument}={value!r} must be a number in [0, 1)")
    return float(value)


def check_choice(value: Any, argument: str, allowed: Sequence[Any]) -> Any:
    """``value`` when it is one of ``allowed``.

    Args:
        value: the argument's value.
        argument: its name, for the error.
        allowed: the values it may take.

    Returns:
        ``value``.

    Raises:
        ValueError: naming ``argument`` and the allowed values otherwise (an array,
            even one equal to an allowed value, or a value that cannot be compared).
    """
    try:
        known = not isinstance(value, np.ndarray | jax.Array) and bool(value in allowed)
    except (TypeError, ValueError):  # e.g. a comparison that raises
        known = False
    if not known:
        raise ValueError(f"{argument}={value!r} is not known; allowed: {list(allowed)}")
    return value


def check_key(key, argument: str = "key") -> None:
    """TypeError naming ``argument`` unless ``key`` is one PRNG key: a typed key of
    shape () (``jax.random.key(seed)``) or a legacy raw uint32 key of shape (2,)
    (``jax.random.PRNGKey(seed)``, accepted as jax.random accepts it). Works on
    tracers (only static shape and dtype are read).

    Args:
        key: the value to check.
        argument: the argument's name, used in the error message.
    """
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
    TypeError when a leaf is not floating point; both name params.

    Args:
        params: a parameter pytree.
        purpose: why params must not be empty, appended to the ValueError's message.
    """
    leaves = jax.tree.leaves(params)
    if sum(math.prod(jnp.shape(w)) for w in leaves) == 0:
        raise ValueError(f"params has no entries: {purpose}")
    for w in leaves:
        if not jnp.issubdtype(jnp.result_type(w), jnp.inexact):
            raise TypeError(f"params leaves must be floating point, got a "
                            f"{jnp.result_type(w)} leaf of shape {jnp.shape(w)}")


def check_mask(mask: PyTree | None, params: PyTree) -> list | None:
    """The leaves of ``mask`` (None stays None); ValueError naming mask unless it has the
    structure of params and each leaf the shape of its parameter.

    Args:
        mask: None or a pytree like params (0/1 entries).
        params: the parameter pytree.

    Returns:
        None, or the mask's leaves in params' leaf order.
    """
    if mask is None:
        return None
    if jax.tree.structure(mask) != jax.tree.structure(params):
        raise ValueError("mask must be a pytree with the structure of params (or None)")
    out = jax.tree.leaves(mask)
    for w, m in zip(jax.tree.leaves(params), out, strict=True):
        if jnp.shape(m) != jnp.shape(w):
            raise ValueError(f"mask leaf shape {jnp.shape(m)} != param shape {jnp.shape(w)}")
    return out


def check_scalar_loss(fun: Any, params: PyTree, args: tuple, argument: str = "fun") -> None:
    """ValueError naming ``argument`` unless ``fun(params, *args)`` is a scalar (shapes
    only: ``jax.eval_shape``, nothing runs).

    Args:
        fun: the loss.
        params: the parameter pytree.
        args: the loss's other arguments.
        argument: the loss's name in the caller's signature.
    """
    try:
        out = jax.eval_shape(fun, params, *args)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{argument}(params, *args) fails on params/args of these shapes "
                         f"({[jnp.shape(a) for a in args]} for args): {e}") from e
    if getattr(out, "shape", None) != ():
        raise ValueError(f"{argument} must return a scalar loss; it returned "
                         f"{getattr(out, 'shape', type(out).__name__)}")


def leaf_paths(params: PyTree) -> list[str]:
    """Each leaf's key path as text (``['params']['dense_0']['kernel']``), in leaf order.

    Args:
        params: a pytree.

    Returns:
        One str per leaf.
    """
    return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def all_finite(tree: PyTree) -> jax.Array:
    """True when every leaf of ``tree`` is finite (True for an empty tree); traceable.

    The one home of the check every kernel makes before it keeps a step (a step whose
    value, gradient or new state is not finite is skipped: parameters never turn NaN).

    Args:
        tree: any pytree of arrays.

    Returns:
        A boolean scalar array.
    """
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)
