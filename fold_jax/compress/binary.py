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
(``fold_jax.compress.walker.is_kernel``: a 2-D leaf named ``kernel``, wherever it sits) stored at
1 bit per weight as a :class:`PackedKernel`; LayerNorm, activations and biases run as
the model defines them.

Where each piece lives (every public name is importable from here):
:mod:`fold_jax.compress.binary_kernels` (sign, STE, packing, XNOR matmul),
:mod:`fold_jax.compress.binary_train` (BinaryDense, clip_latent, binarize, flip_search) and
:mod:`fold_jax.compress.binary_packed` (packed inference, :class:`PackedKernel`).
"""

from fold_jax.compress.binary_kernels import (
    binarize_kernel,
    pack,
    sign,
    sign_ste,
    unpack,
    word_dtype,
    xnor_matmul,
)
from fold_jax.compress.binary_packed import (
    PackedKernel,
    PackedLayer,
    PackedMLP,
    input_paths,
    pack_mlp,
    packed_apply,
    packed_inference,
    packed_params,
)
from fold_jax.compress.binary_train import (
    BinaryDense,
    FlipState,
    binarize,
    binary_layer,
    clip_latent,
    flip_search,
)

__all__ = [
    "BinaryDense",
    "FlipState",
    "PackedKernel",
    "PackedLayer",
    "PackedMLP",
    "binarize",
    "binarize_kernel",
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
    "word_dtype",
    "xnor_matmul",
]
