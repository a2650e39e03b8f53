"""Random words and the noise made from them: finite for every possible word.

Two word sources (``prng``): ``"hash"`` (default) seeds a cheap counter hash
(lowbias32, twice) with two threefry words, 2-10x cheaper than threefry on CPU;
``"threefry"`` draws every word from ``jax.random.bits``. Both feed the same
transforms, so the transforms' extreme-word tests cover both:

- :func:`gaussian`: the top 24 bits ``w`` of a word map to the centred grid
  ``v = (w - 2^23 + 1/2) / 2^23``, which float32 holds exactly (|v| <= 1 - 2^-24; the
  numerator is a multiple of 1/2 below 2^23), so ``sqrt(2) erf_inv(v)`` is finite and
  the grid is symmetric (``w`` and ``2^24 - 1 - w`` give opposite values; the mean
  over all words is exactly 0). The tail is cut at |u| = sqrt(2) erf_inv(1 - 2^-24)
  ~ 5.4, a probability of 6e-8.
- :func:`rademacher`: one bit per entry, +1 or -1.

(An earlier mapping ``((w + 1/2) / 2^24)`` rounded the top word to 1.0 in float32 and
``erf_inv(1)`` returned +inf once in 2^24 draws.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

__all__ = ["KINDS", "PRNGS", "draw", "gaussian", "lowbias32", "rademacher", "words"]

PRNGS = ("hash", "threefry")
KINDS = ("gaussian", "rademacher")

_HALF_GRID = 2.0**23  # the 24-bit grid is centred on this many steps


def lowbias32(x: Array) -> Array:
    """The lowbias32 integer hash (Chris Wellons), elementwise on uint32.

    Args:
        x: uint32 array.

    Returns:
        The hashed uint32 array, x's shape.
    """
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def words(key: PRNGKeyArray, n: int, prng: str) -> Array:
    """``n`` uint32 words for ``key``.

    Args:
        key: one PRNG key.
        n: number of words (static).
        prng: ``"hash"`` (counter hash seeded by two threefry words) or ``"threefry"``.

    Returns:
        (n,) uint32.
    """
    if prng == "threefry":
        return jax.random.bits(key, (n,), jnp.uint32)
    seed = jax.random.bits(key, (2,), jnp.uint32)
    return lowbias32(lowbias32(jnp.arange(n, dtype=jnp.uint32) ^ seed[0]) + seed[1])


def gaussian(w: Array) -> Array:
    """Standard normal float32 values from uint32 words, finite for every word.

    Args:
        w: uint32 words, any shape.

    Returns:
        float32 of w's shape, in [-5.42, 5.42] (module docstring).
    """
    top = (w >> 8).astype(jnp.int32) - jnp.int32(_HALF_GRID)  # in [-2^23, 2^23 - 1]
    v = (top.astype(jnp.float32) + 0.5) * jnp.float32(1.0 / _HALF_GRID)  # exact in float32
    return jnp.float32(2.0**0.5) * jax.lax.erf_inv(v)


def rademacher(w: Array, n: int) -> Array:
    """``n`` float32 signs (+1 or -1) from the bits of ``w`` (32 per word, low bit first).

    Args:
        w: (ceil(n / 32),) uint32 words.
        n: number of signs (static).

    Returns:
        (n,) float32 in {-1, +1}.
    """
    bits = (w[:, None] >> jnp.arange(32, dtype=jnp.uint32)) & jnp.uint32(1)
    return bits.reshape(-1)[:n].astype(jnp.float32) * 2.0 - 1.0


def draw(key: PRNGKeyArray, n: int, kind: str, prng: str) -> Array:
    """(n,) float32 noise with zero mean and unit variance per entry.

    Args:
        key: one PRNG key.
        n: number of entries (static).
        kind: ``"gaussian"`` or ``"rademacher"``.
        prng: ``"hash"`` or ``"threefry"`` (see :func:`words`).

    Returns:
        (n,) float32, finite for every key.
    """
    if kind == "rademacher":
        return rademacher(words(key, -(-n // 32), prng), n)
    return gaussian(words(key, n, prng))
