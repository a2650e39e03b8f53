"""Binarized networks: sign with a straight-through gradient, bit packing, XNOR matmul.

Conventions (used by every function here):

- ``sign(x)`` is +1 for ``x >= 0`` (so sign(0) = +1) and -1 otherwise.
- A {-1, +1} value is stored as one bit: bit 1 means -1, bit 0 means +1 (the float
  sign-bit convention). Along the packed axis, element ``k`` lives in word ``k // W``,
  bit ``k % W`` (least significant first), ``W`` = ``word_bits`` (32, or 64 when
  ``jax_enable_x64`` is on; without x64 JAX has no uint64, so 64 raises ValueError).
- Padding bits (when K is not a multiple of W) are 0 in both operands, so their XOR is
  0 and ``popcount`` ignores them; the padding correction is to use the true ``k``
  in ``dot = k - 2 * popcount(a XOR b)``, not ``words * W``.

Training follows BinaryConnect (latent real weights, forward with their sign, STE
gradient where ``|w| <= 1``, latents clipped to [-1, 1] by :func:`clip_latent`), with
the XNOR-Net per-output scale ``alpha = mean |W|`` and BNN binarized activations as
options. :func:`pack_mlp` / :func:`packed_apply` run a trained binarized MLP with
weights stored at 1 bit each.

Any flax model: :func:`binarize` gives the sign-weight params its binarized forward
uses (``apply(binarize(params), x)``, STE gradients to the latent kernels), and
:func:`packed_inference` runs the model's own apply with every Dense kernel
(``fold_jax.walker.is_kernel``: a 2-D leaf named ``kernel``, wherever it sits) stored at
1 bit per weight as a :class:`PackedKernel`; LayerNorm, activations and biases run as
the model defines them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, PRNGKeyArray, PyTree

from fold_jax import nets, walker
from fold_jax.checks import check_bool, check_callable, check_int, check_key, check_mask
from fold_jax.methods import Method
from fold_jax.search import SearchInfo

__all__ = [
    "BinaryDense",
    "FlipState",
    "PackedKernel",
    "PackedLayer",
    "PackedMLP",
    "binarize",
    "binary_layer",
    "clip_latent",
    "flip_search",
    "input_paths",
    "pack",
    "pack_mlp",
    "packed_apply",
    "packed_inference",
    "packed_params",
    "sign",
    "sign_ste",
    "unpack",
    "xnor_matmul",
]


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


def _word_dtype(word_bits: int):
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
    dtype = _word_dtype(word_bits)
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


# ---------------------------------------------------------------------------- layers


def _binarize_kernel(kernel: Array, scale: bool) -> Array:
    if kernel.ndim != 2:
        raise ValueError(f"kernel must be 2-D (in, out), got shape {kernel.shape}")
    w = sign_ste(kernel)
    if scale:
        w = w * jnp.mean(jnp.abs(kernel), axis=0)
    return w


class BinaryDense(nn.Module):
    """Dense layer with sign-binarized weights (BinaryConnect; latent kernel is real).

    ``scale``: multiply output column j by ``alpha_j = mean_i |W_ij|`` (XNOR-Net).
    ``binarize_input``: also binarize the input with :func:`sign_ste` (BNN).
    """

    features: int
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    scale: bool = True
    binarize_input: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        if self.binarize_input:
            x = sign_ste(x)
        y = x @ _binarize_kernel(kernel, self.scale)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


def binary_layer(*, scale: bool = True, binarize_activations: bool = False) -> Callable:
    """A layer factory for ``nets.mlp(..., layer=binary_layer(...))``.

    With ``binarize_activations`` every layer but the first (``dense_0``, which sees the
    real-valued input) binarizes its input; use it with activation "identity" or "tanh"
    (sign of a ReLU output is always +1).

    Args:
        scale: scale each output by the mean |w| of its kernel column (XNOR-Net alpha).
        binarize_activations: binarize the input of every layer but ``dense_0``.

    Returns:
        A factory ``make(features, *, name, **kwargs) -> BinaryDense``.
    """

    def make(features: int, *, name: str, **kwargs) -> BinaryDense:
        bin_in = bool(binarize_activations) and name != "dense_0"
        return BinaryDense(features, scale=scale, binarize_input=bin_in, name=name, **kwargs)

    return make


def clip_latent(limit: float = 1.0, *,
                select: walker.Select | None = None) -> optax.GradientTransformation:
    """Optax transform keeping the kernels of ``params + updates`` in [-limit, limit].

    Chain it last: ``optax.chain(optax.adam(1e-3), clip_latent())``. Needs ``params``.

    Args:
        limit: the latent range, a positive number.
        select: ``select(path, leaf) -> bool``, the leaves to clip; default every leaf
            of ndim >= 2 (give ``walker.is_kernel`` to clip only Dense kernels).

    Returns:
        An optax GradientTransformation (stateless).
    """
    if isinstance(limit, bool) or not isinstance(limit, int | float) or not limit > 0:
        raise ValueError(f"limit={limit!r} must be a positive number")
    select = walker.resolve_select(select, walker.is_prunable)

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("clip_latent needs params: call tx.update(grads, state, params)")

        def clip(keypath, u, p):
            if not select(walker.key_path(keypath), p):
                return u
            return jnp.clip(p + u, -limit, limit) - p

        return jax.tree_util.tree_map_with_path(clip, updates, params), state

    return optax.GradientTransformation(init, update)


# ------------------------------------------------------------------ packed inference


class PackedLayer(NamedTuple):
    """One layer stored at 1 bit per weight: kernel (words, out) words, k = fan-in."""

    kernel: Array
    alpha: Array | None
    bias: Array | None
    k: int
    binarize_input: bool


class PackedMLP(NamedTuple):
    """A binarized MLP packed by :func:`pack_mlp`: its layers (:class:`PackedLayer`), input first,
    and the hidden activation's name."""

    layers: tuple[PackedLayer, ...]
    activation: str

    @property
    def weight_bytes(self) -> int:
        """Bytes of the packed kernels (alpha and bias not included)."""
        return int(sum(layer.kernel.size * layer.kernel.dtype.itemsize for layer in self.layers))


def pack_mlp(
    params: PyTree,
    activation: str = "relu",
    *,
    scale: bool = True,
    binarize_activations: bool = False,
    word_bits: int = 32,
) -> PackedMLP:
    """Pack a trained :class:`BinaryDense` MLP (params of ``nets.mlp`` with binary layers;
    any other flax model: :func:`packed_inference`).

    Args:
        params: the latent params of the binarized ``nets.mlp``.
        activation: the hidden activation's name.
        scale: whether the layers use the XNOR-Net alpha (as in :func:`binary_layer`).
        binarize_activations: whether hidden layers binarize their input.
        word_bits: bits per packed word, 32 or 64.

    Returns:
        A :class:`PackedMLP` for :func:`packed_apply`.
    """
    nets.activation(activation)
    layers = []
    for i, (name, layer) in enumerate(walker.mlp_layers(params, "binary.packed_inference")):
        kernel = jnp.asarray(layer["kernel"])
        if kernel.ndim != 2:
            raise ValueError(f"params[{name!r}]['kernel'] must be 2-D, got {kernel.shape}")
        alpha = jnp.mean(jnp.abs(kernel), axis=0) if scale else None
        layers.append(PackedLayer(pack(kernel, axis=0, word_bits=word_bits), alpha,
                                  layer.get("bias"), int(kernel.shape[0]),
                                  bool(binarize_activations) and i > 0))
    return PackedMLP(tuple(layers), activation)


def _packed_matmul(h: Array, bits: Array, k: int, alpha: Array | None,
                   binarize_input: bool) -> Array:
    """``h @ (sign(W) * alpha)`` for h (..., k) from 1-bit words (ceil(k / W), out).

    With ``binarize_input``: ``sign(h) @ sign(W)`` by :func:`xnor_matmul` (exact int32,
    then float32); otherwise the words are unpacked to {-1, +1} floats for a float32
    matmul. Then times alpha (out,) when given.
    """
    if binarize_input:
        words = pack(h, axis=-1, word_bits=8 * bits.dtype.itemsize)
        y = xnor_matmul(words.reshape(-1, words.shape[-1]), bits, k)
        y = y.reshape(*h.shape[:-1], -1).astype(jnp.float32)
    else:
        y = jnp.asarray(h, jnp.float32) @ unpack(bits, k, axis=0)
    return y if alpha is None else y * alpha


def packed_apply(packed: PackedMLP, x: ArrayLike) -> Array:
    """Logits of a packed binarized MLP; equals ``net.apply`` of the latent params.

    Layers with a binarized input (BNN hidden layers) run :func:`xnor_matmul` on packed
    activations (fully 1-bit). Layers with a real input (the first layer, and every
    layer without binarized activations) unpack their 1-bit weights to {-1, +1} floats
    and do a float matmul: storage is 1 bit, compute is f32.

    Args:
        packed: the :class:`PackedMLP` from :func:`pack_mlp`.
        x: (..., in_features) inputs.

    Returns:
        The logits, (..., outputs) float32.
    """
    act = nets.activation(packed.activation)
    h = jnp.asarray(x, jnp.float32)
    if h.ndim == 0 or h.shape[-1] != packed.layers[0].k:
        raise ValueError(f"x has shape {h.shape}; its last axis must be the first layer's "
                         f"in_features={packed.layers[0].k}")
    for i, layer in enumerate(packed.layers):
        y = _packed_matmul(h, layer.kernel, layer.k, layer.alpha, layer.binarize_input)
        if layer.bias is not None:
            y = y + layer.bias
        h = act(y) if i + 1 < len(packed.layers) else y
    return h


# ------------------------------------------------------------- any flax model


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PackedKernel:
    """A Dense kernel W (k, out) stored at 1 bit per weight, in place of W in params.

    Attributes:
        bits: (ceil(k / word_bits), out) uint32 (or uint64) words, ``pack(W, axis=0)``.
        alpha: (out,) float32, ``mean |W|`` over the fan-in (the XNOR-Net scale).
        k: fan-in (static).
        scale: whether the layer multiplies by alpha (static).
        binarize_input: whether the layer binarizes its input and runs
            :func:`xnor_matmul` (static).
    """

    bits: Array
    alpha: Array
    k: int = dataclasses.field(metadata={"static": True})
    scale: bool = dataclasses.field(metadata={"static": True})
    binarize_input: bool = dataclasses.field(metadata={"static": True})

    @property
    def shape(self) -> tuple[int, int]:
        """(k, out): the shape of the kernel it stands for."""
        return (self.k, int(self.bits.shape[1]))

    @property
    def nbytes(self) -> int:
        """Bytes of the 1-bit words (alpha not included)."""
        return int(self.bits.size * self.bits.dtype.itemsize)


def _layer_mode(kernel: PackedKernel, layer: Any) -> tuple[bool, bool]:
    """(scale, binarize_input): a BinaryDense's own fields, else the kernel's."""
    if isinstance(layer, BinaryDense):
        return bool(layer.scale), bool(layer.binarize_input)
    return kernel.scale, kernel.binarize_input


def _packed_product(x: Array, kernel: PackedKernel, layer: Any) -> Array:
    scale, binarize_input = _layer_mode(kernel, layer)
    return _packed_matmul(x, kernel.bits, kernel.k, kernel.alpha if scale else None,
                          binarize_input)


def _packed_dense(kernel: PackedKernel, layer: Any) -> Array:
    """sign(W) * alpha (a BinaryDense recomputes the same sign and alpha from it)."""
    scale = True if isinstance(layer, BinaryDense) else kernel.scale
    w = unpack(kernel.bits, kernel.k, axis=0)
    return w * kernel.alpha if scale else w


walker.register_format(PackedKernel, walker.Format(
    name="packed 1-bit",
    in_features=lambda kernel: kernel.k,
    product=_packed_product,
    dense=_packed_dense,
    linen_layers=(*walker.LINEN_DENSE, BinaryDense),
))


def binarize(params: PyTree, *, scale: bool = True,
             select: walker.Select | None = None) -> PyTree:
    """The sign-weight params of a binarized model: ``apply(binarize(params), x)``.

    Each Dense kernel W becomes ``sign_ste(W) * alpha`` (alpha = mean |W| over the
    fan-in when ``scale``, XNOR-Net), as :class:`BinaryDense` computes it; gradients
    reach the latent W straight through where |W| <= 1. Pure, jit/grad-friendly.

    Args:
        params: any flax parameter tree (linen variables, nnx State).
        scale: multiply by alpha.
        select: which kernels, ``select(path, leaf) -> bool``; default
            ``walker.is_kernel`` (2-D leaves named ``kernel``).

    Returns:
        params with the selected kernels binarized; other leaves unchanged.
    """
    scale = check_bool(scale, "scale")
    paths = walker.kernel_paths(params, select)
    return walker.replace_leaves(params, paths,
                                lambda path, w: _binarize_kernel(jnp.asarray(w), scale))


def input_paths(binarize_inputs: Any, paths: list[walker.Path]) -> set[walker.Path]:
    """The kernel paths whose layer input is binarized (XNOR-popcount).

    Args:
        binarize_inputs: True (every kernel), False (none) or a collection of kernel
            paths.
        paths: the model's kernel paths (:func:`fold_jax.walker.kernel_paths`).

    Returns:
        The chosen paths.

    Raises:
        TypeError: binarize_inputs is none of those.
        ValueError: it names a path that is not a kernel (the message lists them).
    """
    if isinstance(binarize_inputs, bool | np.bool_):
        return set(paths) if binarize_inputs else set()
    if isinstance(binarize_inputs, str) or not isinstance(binarize_inputs, Collection):
        raise TypeError(f"binarize_inputs={binarize_inputs!r} must be True, False or a "
                        f"collection of kernel paths (tuples, as walker.kernel_paths lists)")
    chosen = {tuple(p) if isinstance(p, list | tuple) else p for p in binarize_inputs}
    unknown = [p for p in chosen if p not in set(paths)]
    if unknown:
        raise ValueError(f"binarize_inputs has paths that are no kernel of params: "
                         f"{unknown[:3]}; allowed: {paths}")
    return chosen


def packed_params(params: PyTree, *, scale: bool = True, binarize_inputs: Any = False,
                  word_bits: int = 32, select: walker.Select | None = None) -> PyTree:
    """params with every Dense kernel replaced by a :class:`PackedKernel` (1 bit each).

    Args:
        params: any flax parameter tree (linen variables, nnx State).
        scale: the layers multiply by alpha = mean |W| (BinaryDense layers use their
            own ``scale`` field instead).
        binarize_inputs: True (every kernel), False (none), or a collection of kernel
            paths (as :func:`fold_jax.walker.kernel_paths` gives them) whose layer
            binarizes its input and runs :func:`xnor_matmul`; the others unpack their
            weights for a float32 matmul. BinaryDense layers use their own
            ``binarize_input`` field instead.
        word_bits: 32, or 64 under ``jax.enable_x64``.
        select: which kernels, default ``walker.is_kernel`` (2-D leaves named ``kernel``).

    Returns:
        The tree with each selected kernel packed; every other leaf unchanged.

    Raises:
        ValueError: no kernel in params; a path in binarize_inputs that is no kernel;
            word_bits not allowed. TypeError: scale or binarize_inputs of a wrong type.
    """
    scale = check_bool(scale, "scale")
    _word_dtype(word_bits)
    paths = walker.kernel_paths(params, select)
    binarized = input_paths(binarize_inputs, paths)

    def convert(path: walker.Path, w: Any) -> PackedKernel:
        w = jnp.asarray(w, jnp.float32)
        return PackedKernel(pack(w, axis=0, word_bits=word_bits),
                            jnp.mean(jnp.abs(w), axis=0), int(w.shape[0]), scale,
                            path in binarized)

    return walker.replace_leaves(params, paths, convert)


def packed_inference(apply: Callable[..., Array], params: PyTree, *, scale: bool = True,
                     binarize_inputs: Any = False, word_bits: int = 32,
                     select: walker.Select | None = None) -> jax.tree_util.Partial:
    """Run any flax model with its Dense kernels stored at 1 bit per weight.

    ``infer(*args)`` equals the binarized model ``apply(binarize(params, scale=scale),
    *args)``: ``flax.linen.Dense``, a 2-D ``DenseGeneral``, ``fold_jax.nets.Dense`` and
    ``flax.nnx.Linear`` compute ``x @ sign(W) * alpha + bias`` from the packed words
    (:func:`xnor_matmul` on ``sign(x)`` for the layers in ``binarize_inputs``: exact for
    a model that binarizes those inputs itself, e.g. with :func:`sign_ste`); LayerNorm,
    activations and the rest are the model's own code. For a model of
    :class:`BinaryDense` layers (whose forward already binarizes) it equals
    ``apply(params, *args)``. Other layers holding a packed kernel run their own code on
    ``sign(W) * alpha`` (``walker.KernelFallbackWarning``).

    Args:
        apply: ``apply(params, *args, **kwargs)``, e.g. ``model.apply``.
        params: the (latent) parameter tree.
        scale, binarize_inputs, word_bits, select: as :func:`packed_params`.

    Returns:
        ``infer(*args, **kwargs)``, a ``jax.tree_util.Partial`` holding the packed params
        (``infer.args[0]``); jit it or pass it to a jitted function (it is a pytree).

    Raises:
        TypeError: apply is not callable; otherwise as :func:`packed_params`.
    """
    check_callable(apply, "apply", "apply(params, *args) -> outputs")
    packed = packed_params(params, scale=scale, binarize_inputs=binarize_inputs,
                           word_bits=word_bits, select=select)
    return jax.tree_util.Partial(walker.with_kernel_layers(apply), packed)


# -------------------------------------------------------------- sign-space search


class FlipState(NamedTuple):
    """State of :func:`flip_search`: the params and the loss of the last step (inf at first)."""

    params: PyTree
    loss: Array


def _flip(w: Array, mask: Array, eps: float = 1e-3) -> Array:
    """Negate the sign of w where mask (0 becomes -eps, so sign(0)=+1 flips too)."""
    mag = jnp.maximum(jnp.abs(w), eps)
    return jnp.where(mask, jnp.where(w >= 0, -mag, mag), w)


def flip_search(
    loss: Callable[..., Array],
    *,
    flips: int = 8,
    bias_sigma: float = 0.01,
    mask: PyTree | None = None,
    name: str = "bit_flip",
) -> Method:
    """Gradient-free moves in sign space: flip about ``flips`` weight signs per step.

    Each step flips each 2-D (kernel) entry with probability ``flips / n_kernel`` (only
    where ``mask`` is 1, when given), moves 1-D leaves (biases) by N(0, bias_sigma^2),
    and accepts the move only if ``loss`` on the step's batch drops (2 evaluations).

    Args:
        loss: ``loss(params, *args) -> scalar``.
        flips: expected number of kernel signs flipped per step.
        bias_sigma: standard deviation of the bias moves.
        mask: 0/1 pytree like params; kernels flip only where it is 1 (None: everywhere).
        name: the method's name.

    Returns:
        A :class:`fold_jax.methods.Method`.

    Raises:
        ValueError / TypeError: naming the bad argument; ``init`` raises a ValueError
            when ``mask`` does not have the structure and shapes of params.
    """
    check_callable(loss, "loss")
    check_int(flips, "flips")
    if not isinstance(bias_sigma, int | float) or bias_sigma < 0:
        raise ValueError(f"bias_sigma={bias_sigma!r} must be a number >= 0")

    def init(params: PyTree) -> FlipState:
        if not jax.tree.leaves(params):
            raise ValueError("params has no leaves: nothing to flip")
        check_mask(mask, params)  # a mask unlike params would flip the wrong signs
        return FlipState(params, jnp.asarray(jnp.inf, jnp.float32))

    def step(state: FlipState, key: PRNGKeyArray, *args) -> tuple[FlipState, dict[str, Any]]:
        check_key(key)
        params = state.params
        leaves, treedef = jax.tree.flatten(params)
        masks = [None] * len(leaves) if mask is None else jax.tree.leaves(mask)
        n_kernel = sum(leaf.size for leaf in leaves if leaf.ndim >= 2)
        p = min(1.0, flips / max(n_kernel, 1))
        keys = jax.random.split(key, len(leaves))
        new = []
        for leaf, m, k in zip(leaves, masks, keys, strict=True):
            if leaf.ndim >= 2:
                f = jax.random.bernoulli(k, p, leaf.shape)
                if m is not None:
                    f = f & (jnp.asarray(m) != 0)
                new.append(_flip(leaf, f))
            else:
                new.append(leaf + bias_sigma * jax.random.normal(k, leaf.shape, leaf.dtype))
        candidate = jax.tree.unflatten(treedef, new)
        current = loss(params, *args)
        trial = loss(candidate, *args)
        accept = jnp.isfinite(trial) & (trial < current)
        params = jax.tree.map(lambda c, o: jnp.where(accept, c, o), candidate, params)
        value = jnp.where(accept, trial, current).astype(jnp.float32)
        info = SearchInfo(value, jnp.asarray(2, jnp.int32), accept.astype(jnp.int32))
        return FlipState(params, value), info

    return Method(init, step, name)

