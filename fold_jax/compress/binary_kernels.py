"""The 1-bit kernels: sign with a straight-through gradient, bit packing, XNOR matmul.

Conventions (used by every function here and in :mod:`fold_jax.compress.binary_packed`):

- ``sign(x)`` is +1 for ``x >= 0`` (so sign(0) = +1) and -1 otherwise.
- A {-1, +1} value is stored as one bit: bit 1 means -1, bit 0 means +1 (the float
  sign-bit convention). Along the packed axis, element ``k`` lives in word ``k // W``,
  bit ``k % W`` (least significant first), ``W`` = ``word_bits`` (32, or 64 when
  ``jax_enable_x64`` is on; without x64 JAX has no uint64, so 64 raises ValueError).
- Padding bits (when K is not a multiple of W) are 0 in both operands, so their XOR is
  0 and ``popcount`` ignores them; the padding correction is to use the true ``k``
  in ``dot = k - 2 * popcount(a XOR b)``, not ``words * W``.

Re-exported by :mod:`fold_jax.compress.binary`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

__all__ = ["binarize_kernel", "pack", "sign", "sign_ste", "unpack", "word_dtype", "xnor_matmul"]


def sign(x: ArrayLike) -> Array:
    """Elementwise sign in {-1, +1} with sign(0) = +1, same dtype as x (no gradient).

    Args:
        x: any real array.

    Returns:
        The signs, x's shape and dtype.
    """
    x = jnp.asarray(x)
    return jnp.where(x >= 0, 1, -1).astype(x.dtype)


@jax.custom_vjp
def sign_ste(x: Array) -> Array:
    """:func:`sign` forward; straight-through gradient ``g * (|x| <= 1)`` backward."""
    return sign(x)


def _ste_fwd(x):
    return sign(x), x


def _ste_bwd(x, g):
    return (jnp.where(jnp.abs(x) <= 1, g, jnp.zeros_like(g)),)


sign_ste.defvjp(_ste_fwd, _ste_bwd)


# --------------------------------------------------------------------------- packing


def word_dtype(word_bits: int):
    """The unsigned word type that stores ``word_bits`` signs.

    Args:
        word_bits: 32, or 64 under ``jax_enable_x64``.

    Returns:
        ``jnp.uint32`` or ``jnp.uint64``.

    Raises:
        ValueError: another width, or 64 without x64.
    """
    if word_bits == 32:
        return jnp.uint32
    if word_bits == 64:
        if not jax.config.jax_enable_x64:
            raise ValueError("word_bits=64 needs jax_enable_x64 (JAX has no uint64 without "
                             "it); allowed: 32, or 64 under jax.enable_x64(True)")
        return jnp.uint64
    raise ValueError(f"word_bits={word_bits!r}; allowed: 32, 64")


def _axis(axis: int, ndim: int) -> int:
    if not isinstance(axis, int | np.integer) or not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis!r} out of range for a {ndim}-D array")
    return int(axis) % ndim


def pack(x: ArrayLike, axis: int = -1, *, word_bits: int = 32) -> Array:
    """Signs of x packed along ``axis``: (..., K, ...) -> (..., ceil(K/W), ...) words.

    Any real x is accepted and binarized with :func:`sign` (sign(0) = +1).

    Args:
        x: the values to binarize and pack (at least one axis).
        axis: the axis packed, of length K.
        word_bits: bits per word, 32 (uint32) or 64 (uint64).

    Returns:
        The packed words (bit set where x < 0), ``axis`` now of length ceil(K / word_bits).
    """
    dtype = word_dtype(word_bits)
    x = jnp.asarray(x)
    if x.ndim == 0:
        raise ValueError("x must have at least one axis to pack")
    axis = _axis(axis, x.ndim)
    x = jnp.moveaxis(x, axis, -1)
    k = x.shape[-1]
    words = -(-k // word_bits)
    bits = (x < 0).astype(dtype)
    bits = jnp.pad(bits, [(0, 0)] * (x.ndim - 1) + [(0, words * word_bits - k)])
    bits = bits.reshape(*x.shape[:-1], words, word_bits)
    shifts = jnp.arange(word_bits, dtype=dtype)
    packed = jnp.sum(bits << shifts, axis=-1, dtype=dtype)  # disjoint bits: sum == or
    return jnp.moveaxis(packed, -1, axis)


def unpack(packed: ArrayLike, k: int, axis: int = -1, *, dtype=jnp.float32) -> Array:
    """Exact inverse of :func:`pack`: words along ``axis`` -> k values in {-1, +1}.

    Args:
        packed: uint32 or uint64 words from :func:`pack`.
        k: the number of values packed along ``axis``.
        axis: the packed axis.
        dtype: the dtype of the values returned.

    Returns:
        The values in {-1, +1}, ``axis`` now of length k.
    """
    packed = jnp.asarray(packed)
    if packed.dtype not in (jnp.uint32, jnp.uint64):
        raise ValueError(f"packed must be uint32 or uint64 words, got {packed.dtype}")
    word_bits = 8 * packed.dtype.itemsize
    axis = _axis(axis, packed.ndim)
    words = packed.shape[axis]
    if not isinstance(k, int | np.integer) or not (words - 1) * word_bits < k <= words * word_bits:
        raise ValueError(f"k={k!r} does not fit {words} words of {word_bits} bits; allowed: "
                         f"{(words - 1) * word_bits + 1}..{words * word_bits}")
    p = jnp.moveaxis(packed, axis, -1)
    shifts = jnp.arange(word_bits, dtype=packed.dtype)
    bits = (p[..., None] >> shifts) & jnp.asarray(1, packed.dtype)
    bits = bits.reshape(*p.shape[:-1], words * word_bits)[..., :k]
    values = (1 - 2 * bits.astype(jnp.int32)).astype(dtype)
    return jnp.moveaxis(values, -1, axis)


def _auto_block(m: int, n: int, budget_bytes: int = 1 << 26) -> int:
    """Rows per block so the (rows, n) int32 accumulator stays within 64 MiB.

    Measured on a 2-core CPU (interleaved runs), cache-sized blocks (~512 KiB) were
    1.2-1.7x slower than one 256-row block at N = 1024 and 4096 (the nested loop costs
    more than the cache misses), so blocks only bound memory for large M x N.
    """
    rows = max(8, budget_bytes // (4 * max(n, 1)))
    return min(m, 1 << (rows.bit_length() - 1))


def xnor_matmul(a: ArrayLike, b: ArrayLike, k: int, *,
                block_m: int | str | None = "auto") -> Array:
    """``sign(x) @ sign(w)`` from packed operands, exactly, as int32 (M, N).

    a: (M, words) = ``pack(x, axis=-1)``, x (M, k); b: (words, N) = ``pack(w, axis=0)``,
    w (k, N). ``dot = k - 2 * popcount(a XOR b)``: a ``lax.scan`` over the words adds one
    (rows, N) popcount plane per word, and ``lax.map`` runs row blocks of ``block_m``
    rows ("auto": a power of two keeping the (rows, N) int32 accumulator within 64 MiB;
    None: all rows at once), so no (M, N, words) array is ever built; the largest
    intermediate is (block_m, N) int32.

    Args:
        a: (M, words) packed rows of x.
        b: (words, N) packed columns of w.
        k: the unpacked inner length.
        block_m: rows per block, "auto" or None (all rows at once).

    Returns:
        The exact (M, N) int32 product ``sign(x) @ sign(w)``.
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"a and b must be 2-D packed words, got shapes {a.shape}, {b.shape}")
    if a.dtype != b.dtype or a.dtype not in (jnp.uint32, jnp.uint64):
        raise ValueError(f"a and b must be packed words of one dtype (uint32/uint64), got "
                         f"{a.dtype}, {b.dtype}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"packed shapes do not match: a {a.shape} has {a.shape[1]} words, "
                         f"b {b.shape} has {b.shape[0]}")
    word_bits = 8 * a.dtype.itemsize
    words = a.shape[1]
    if not isinstance(k, int | np.integer) or not (words - 1) * word_bits < k <= words * word_bits:
        raise ValueError(f"k={k!r} does not match {words} words of {word_bits} bits")
    m, n = a.shape[0], b.shape[1]
    if block_m == "auto":
        block_m = _auto_block(m, n)
    elif block_m is not None and (isinstance(block_m, bool) or not isinstance(block_m, int)
                                  or block_m < 1):
        raise ValueError(f"block_m={block_m!r} must be a positive int, 'auto' or None")

    def rows(a_blk):  # (rows, words) -> (rows, n) mismatch counts
        def add_word(acc, ab):
            aw, bw = ab
            return acc + jax.lax.population_count(aw[:, None] ^ bw[None, :]).astype(jnp.int32), None

        acc0 = jnp.zeros((a_blk.shape[0], n), jnp.int32)
        acc, _ = jax.lax.scan(add_word, acc0, (a_blk.T, b))
        return acc

    if block_m is None or m <= block_m:
        mismatches = rows(a)
    else:
        blocks = -(-m // block_m)
        a_pad = jnp.pad(a, ((0, blocks * block_m - m), (0, 0)))
        mismatches = jax.lax.map(rows, a_pad.reshape(blocks, block_m, words))
        mismatches = mismatches.reshape(blocks * block_m, n)[:m]
    return jnp.int32(k) - 2 * mismatches


def binarize_kernel(kernel: Array, scale: bool) -> Array:
    """A Dense kernel's binarized forward: ``sign_ste(W)``, times the XNOR-Net scale
    ``alpha = mean |W|`` over the fan-in when ``scale``.

    Args:
        kernel: (in, out) latent weights.
        scale: multiply output column j by ``mean_i |W_ij|``.

    Returns:
        (in, out) weights in {-alpha, +alpha} (or {-1, +1}), STE gradients to ``kernel``.

    Raises:
        ValueError: ``kernel`` is not 2-D.
    """
    if kernel.ndim != 2:
        raise ValueError(f"kernel must be 2-D (in, out), got shape {kernel.shape}")
    w = sign_ste(kernel)
    if scale:
        w = w * jnp.mean(jnp.abs(kernel), axis=0)
    return w
