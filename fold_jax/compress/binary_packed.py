"""Binarized networks stored at 1 bit per weight: :func:`pack_mlp` / :func:`packed_apply`
run a trained binarized MLP, and :func:`packed_inference` runs any flax model's own
apply with every Dense kernel (``fold_jax.compress.walker.is_kernel``: a 2-D leaf named
``kernel``, wherever it sits) stored as a :class:`PackedKernel` (a format registered
with :mod:`fold_jax.compress.walker`); LayerNorm, activations and biases run as the model
defines them. Re-exported by :mod:`fold_jax.compress.binary`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PyTree

from fold_jax.checks import check_bool, check_callable
from fold_jax.compress import walker
from fold_jax.compress.binary_kernels import pack, unpack, word_dtype, xnor_matmul
from fold_jax.compress.binary_train import BinaryDense
from fold_jax.learn import nets

__all__ = ["PackedKernel", "PackedLayer", "PackedMLP", "input_paths", "pack_mlp", "packed_apply",
           "packed_inference", "packed_params"]


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


def input_paths(binarize_inputs: Any, paths: list[walker.Path]) -> set[walker.Path]:
    """The kernel paths whose layer input is binarized (XNOR-popcount).

    Args:
        binarize_inputs: True (every kernel), False (none) or a collection of kernel
            paths.
        paths: the model's kernel paths (:func:`fold_jax.compress.walker.kernel_paths`).

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
            paths (as :func:`fold_jax.compress.walker.kernel_paths` gives them) whose layer
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
    word_dtype(word_bits)
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
    *args)``: ``flax.linen.Dense``, a 2-D ``DenseGeneral``, ``fold_jax.learn.nets.Dense`` and
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
