"""Fitness shaping: from a population's losses to one coefficient per direction.

The estimate is ``sum_k c_k u_k / n_valid``; a shaping computes the ``c_k`` from a
:class:`Population`. Built-ins (by name in :func:`fold_jax.estimators.zo.value_and_grad`):

- ``"raw"`` (``shaping=None``): finite-difference slopes ``(f(x+su) - f(x-su)) / 2s``
  (antithetic) or ``(f(x+su) - f(x)) / s``: the gradient estimate in loss units.
- ``"centered_ranks"`` (OpenAI-ES): losses replaced by their centered ranks in
  [-0.5, 0.5] over the valid population; ``c = rank(f+) - rank(f-)`` (antithetic) or
  ``rank(f)``; no 1/s. Invariant to monotone transforms of the loss.
- ``"sign"``: ``sign`` of the raw difference (one-bit comparisons, ZO-SignSGD).

A user's shaping is any ``fn(population) -> (K,) coefficients`` (jittable); wrap it
as ``Shaping(fn, local=True)`` when ``c_k`` depends on direction k's losses only,
which lets the estimator work chunk by chunk in one pass. A bare callable is treated
as population-wide (two passes: every loss first, then the update).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array

__all__ = ["BUILTIN", "Population", "Shaping", "centered_ranks", "raw", "resolve", "sign"]


class Population(NamedTuple):
    """The losses a shaping sees.

    Attributes:
        losses: (K, signs) float32: ``f(x + s u_k)`` and, when antithetic (signs = 2),
            ``f(x - s u_k)``; entries of invalid directions are arbitrary.
        valid: (K,) bool: the direction's losses and noise are finite (and it is no
            padding).
        baseline: ``f(x)`` for one-sided estimates (signs = 1), else None.
        step: the distance between the two evaluation points in units of u
            (``2 s`` antithetic, ``s`` one-sided).
    """

    losses: Array
    valid: Array
    baseline: Array | None
    step: float


class Shaping(NamedTuple):
    """A shaping function and whether it is local (``c_k`` from direction k alone)."""

    fn: Callable[[Population], Array]
    local: bool = False
    name: str = "custom"


def _difference(p: Population) -> Array:
    other = p.losses[:, 1] if p.losses.shape[1] == 2 else p.baseline
    return p.losses[:, 0] - other


def raw(p: Population) -> Array:
    """Finite-difference slopes (gradient units).

    Args:
        p: the population.

    Returns:
        (K,) loss differences divided by ``p.step``.
    """
    return _difference(p) / p.step


def sign(p: Population) -> Array:
    """The sign of each direction's loss difference (+1, 0 or -1).

    Args:
        p: the population.

    Returns:
        (K,) signs.
    """
    return jnp.sign(_difference(p))


def _ranks(values: Array, valid: Array) -> Array:
    """Centered ranks in [-0.5, 0.5] of the valid entries (0 for invalid)."""
    flat = jnp.where(valid, values, jnp.inf).reshape(-1)
    ranks = jnp.argsort(jnp.argsort(flat)).astype(jnp.float32)
    n = jnp.sum(valid)
    centered = ranks / jnp.maximum(n - 1, 1).astype(jnp.float32) - 0.5
    return jnp.where(valid, centered.reshape(values.shape), 0.0)


def centered_ranks(p: Population) -> Array:
    """Rank differences over the valid population (OpenAI-ES fitness shaping).

    Args:
        p: the population.

    Returns:
        (K,) coefficients: with two signs, the difference of the two losses' centered
        ranks, else the centered rank of each loss.
    """
    valid = jnp.broadcast_to(p.valid[:, None], p.losses.shape)
    r = _ranks(p.losses, valid)
    return r[:, 0] - r[:, 1] if p.losses.shape[1] == 2 else r[:, 0]


BUILTIN: dict[str | None, Shaping] = {
    None: Shaping(raw, True, "raw"),
    "raw": Shaping(raw, True, "raw"),
    "centered_ranks": Shaping(centered_ranks, False, "centered_ranks"),
    "sign": Shaping(sign, True, "sign"),
}


def _signed(inner: Shaping) -> Shaping:
    return Shaping(lambda p: jnp.sign(inner.fn(p)), inner.local, f"sign({inner.name})")


def resolve(shaping: Any, use_sign: bool = False) -> Shaping:
    """The :class:`Shaping` for a name, a Shaping or a callable; ``use_sign`` takes the
    sign of its coefficients (the estimators' ``sign=True``).

    Args:
        shaping: a built-in name (or None), a :class:`Shaping`, or a callable
            ``fn(population) -> coefficients``.
        use_sign: take the sign of the coefficients.

    Returns:
        The :class:`Shaping`.

    Raises:
        ValueError: an unknown name (the allowed names are listed).
        TypeError: anything else that is not callable.
    """
    if isinstance(shaping, Shaping):
        out = shaping
    elif shaping is None or isinstance(shaping, str):
        if shaping not in BUILTIN:
            raise ValueError(f"shaping={shaping!r} is not known; allowed: "
                             f"{[k for k in BUILTIN if k is not None]}, None, a Shaping or "
                             "a callable fn(population) -> coefficients")
        out = BUILTIN[shaping]
    elif callable(shaping):
        out = Shaping(shaping, False, getattr(shaping, "__name__", "custom"))
    else:
        raise TypeError(f"shaping must be a name, a Shaping, a callable or None, got "
                        f"{type(shaping).__name__}")
    if use_sign and out.name not in ("sign", "sign(raw)"):
        out = _signed(out)
    return out
