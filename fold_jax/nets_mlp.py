"""Flax MLPs with a pure ``apply(params, x)`` and an activation chosen by name, and
recurrent nets (:func:`rnn`: flax.linen cells under ``lax.scan``) in the same style.

Layers multiply through :func:`fold_jax.perturb.matmul`, so a kernel may be a plain
array or a lazy low-rank perturbation (fused zeroth-order evaluation). Layer ``i`` is
named ``dense_i``; other modules (pruning, probes) rely on that order.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import errors
from jaxtyping import Array, ArrayLike, PRNGKeyArray, PyTree

from fold_jax import perturb
from fold_jax.checks import check_choice, check_int, check_key

__all__ = [
    "ACTIVATIONS",
    "CELLS",
    "CNN",
    "INITIALIZERS",
    "MLP",
    "RNN",
    "Dense",
    "Net",
    "RecurrentNet",
    "activation",
    "cnn",
    "count_params",
    "dense_layers",
    "mlp",
    "rnn",
]

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "abs": jnp.abs,  # the "fold": reflects the input space about each hyperplane
    "fold": jnp.abs,
    "leaky_relu": jax.nn.leaky_relu,
    "gelu": jax.nn.gelu,
    "identity": lambda x: x,
}

INITIALIZERS: dict[str, Callable] = {
    "lecun_normal": nn.initializers.lecun_normal(),
    "he_normal": nn.initializers.he_normal(),
    "glorot_normal": nn.initializers.glorot_normal(),
    "glorot_uniform": nn.initializers.glorot_uniform(),
}


def _lookup(table: dict, name: str, argument: str):
    return table[check_choice(name, argument, sorted(table))]


def activation(name: str) -> Callable[[Array], Array]:
    """The jax.nn activation called ``name`` (ValueError listing the names otherwise).

    Args:
        name: an activation name (a key of ``ACTIVATIONS``).

    Returns:
        The activation function, elementwise on arrays.
    """
    return _lookup(ACTIVATIONS, name, "activation")


class Dense(nn.Module):
    """``y = x @ kernel + bias`` with kernel (in, features); kernel may be LowRank."""

    features: int
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        y = perturb.matmul(x, kernel)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


class MLP(nn.Module):
    """Dense layers of ``widths`` (hidden..., outputs) with ``activation`` between them.

    ``layer`` builds each dense layer (``layer(features, name=...)``), so binarized or
    masked layers drop in without a second network class. Output is raw logits.
    """

    widths: Sequence[int]
    activation: str = "relu"
    layer: Callable[..., nn.Module] = Dense
    kernel_init: str = "lecun_normal"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        act = activation(self.activation)
        init = _lookup(INITIALIZERS, self.kernel_init, "kernel_init")
        for i, width in enumerate(self.widths):
            x = self.layer(width, kernel_init=init, name=f"dense_{i}")(x)
            if i + 1 < len(self.widths):
                x = act(x)
        return x


@dataclasses.dataclass(frozen=True)
class Net:
    """A flax module plus its input size: ``init(key) -> params``, ``apply(params, x)``.

    Frozen and hashable, so it can be closed over or passed as a static argument.
    """

    module: nn.Module
    in_features: int

    def init(self, key: PRNGKeyArray) -> PyTree:
        check_key(key)
        return self.module.init(key, jnp.zeros((1, self.in_features), jnp.float32))

    def apply(self, params: PyTree, x: ArrayLike) -> Array:
        """Logits (..., outputs) for inputs x (..., in_features)."""
        shape = jnp.shape(x)
        if len(shape) == 0 or shape[-1] != self.in_features:
            raise ValueError(
                f"x has shape {shape}; its last axis must be in_features={self.in_features}"
            )
        try:
            return self.module.apply(params, x)
        except (errors.ScopeCollectionNotFound, errors.ScopeParamNotFoundError,
                errors.ScopeParamShapeError) as e:
            raise ValueError(f"params do not fit this net (in_features={self.in_features}): "
                             f"{str(e).split(' (https')[0]}") from e


def mlp(
    widths: Sequence[int],
    activation: str = "relu",
    *,
    layer: Callable[..., nn.Module] = Dense,
    kernel_init: str = "lecun_normal",
) -> Net:
    """An MLP from its full widths, input first: ``mlp((64, 128, 128, 10), "relu")``.

    Args:
        widths: the widths, input features first and outputs last (2+ positive ints).
        activation: the hidden activation's name (a key of ``ACTIVATIONS``).
        layer: the dense layer factory ``layer(features, name=..., ...)`` (e.g.
            :func:`fold_jax.binary.binary_layer`).
        kernel_init: the kernel initializer's name (a key of ``INITIALIZERS``).

    Returns:
        A :class:`Net` (the flax module and the input width).
    """
    if isinstance(widths, int | str) or not isinstance(widths, Sequence):
        raise TypeError(f"widths must be a sequence of ints, got {type(widths).__name__}")
    widths = tuple(widths)
    if len(widths) < 2:
        raise ValueError(f"widths={widths} needs at least (in_features, outputs): 2+ entries")
    for w in widths:
        if isinstance(w, bool | np.bool_) or not isinstance(w, int | np.integer) or w < 1:
            raise ValueError(f"widths={widths}: every width must be a positive int")
    widths = tuple(int(w) for w in widths)  # NumPy integers as Python ints
    _lookup(ACTIVATIONS, activation, "activation")
    _lookup(INITIALIZERS, kernel_init, "kernel_init")
    module = MLP(widths[1:], activation=activation, layer=layer, kernel_init=kernel_init)
    return Net(module, widths[0])


class CNN(nn.Module):
    """Standard flax ``nn.Conv`` layers (``conv_i``, SAME padding, the first with stride
    1 and the others stride 2) with ``activation`` between them, then a standard
    ``nn.Dense`` head (``head``) on the flattened maps. Inputs are flat (..., H W C)
    and reshaped to images (channels last). Output is raw logits (..., outputs).
    Inside :func:`fold_jax.flax_layers.intercept` every kernel takes the fused path."""

    image: tuple[int, int, int]  # (H, W, C)
    channels: tuple[int, ...]
    outputs: int
    activation: str = "relu"
    kernel_size: int = 3

    @nn.compact
    def __call__(self, x: Array) -> Array:
        act = activation(self.activation)
        lead = x.shape[:-1]
        h = jnp.reshape(x, (-1, *self.image))
        for i, c in enumerate(self.channels):
            stride = 1 if i == 0 else 2
            h = act(nn.Conv(c, (self.kernel_size,) * 2, strides=stride, padding="SAME",
                            name=f"conv_{i}")(h))
        h = nn.Dense(self.outputs, name="head")(jnp.reshape(h, (h.shape[0], -1)))
        return jnp.reshape(h, (*lead, self.outputs))


def cnn(
    image: Sequence[int] = (8, 8, 1),
    channels: Sequence[int] = (16, 32),
    outputs: int = 10,
    activation: str = "relu",
    *,
    kernel_size: int = 3,
) -> Net:
    """A small conv net on flat image features: ``cnn((8, 8, 1))`` for digits' 64 pixels.

    Args:
        image: (height, width, channels) the flat input (..., H W C) is reshaped to.
        channels: output channels of each conv layer (1+ positive ints); the first
            keeps the image size, each later one halves it (stride 2, SAME padding).
        outputs: logits of the dense head.
        activation: the activation's name (a key of ``ACTIVATIONS``).
        kernel_size: the square convolution window.

    Returns:
        A :class:`Net` whose ``in_features`` is H W C.
    """
    image = tuple(image) if isinstance(image, Sequence) else image
    if not isinstance(image, tuple) or len(image) != 3:
        raise ValueError(f"image={image!r} must be (height, width, channels)")
    for name, values in (("image", image), ("channels", channels)):
        if (isinstance(values, int | str) or not isinstance(values, Sequence) or not values
                or any(isinstance(v, bool | np.bool_) or not isinstance(v, int | np.integer)
                       or v < 1 for v in values)):
            raise ValueError(f"{name}={values!r} must be a non-empty sequence of positive ints")
    check_int(outputs, "outputs", minimum=1)
    check_int(kernel_size, "kernel_size", minimum=1)
    _lookup(ACTIVATIONS, activation, "activation")
    module = CNN(tuple(int(v) for v in image), tuple(int(c) for c in channels), int(outputs),
                 activation, int(kernel_size))
    return Net(module, math.prod(image))


def count_params(params: PyTree) -> int:
    """Total number of scalars in a parameter pytree.

    Args:
        params: a parameter pytree of arrays or ``jax.ShapeDtypeStruct`` (from
            ``jax.eval_shape``), or Python scalars.

    Returns:
        The number of scalars, an int.
    """
    return sum(math.prod(getattr(leaf, "shape", ())) for leaf in jax.tree.leaves(params))


def dense_layers(params: PyTree) -> list[tuple[str, dict]]:
    """``[("dense_0", {"kernel", "bias"}), ...]`` of an :func:`mlp` params tree (with or
    without the "params" level), in layer order: dense_10 follows dense_9.

    Args:
        params: the params of an :func:`mlp`.

    Returns:
        ``(name, layer)`` pairs, ``layer`` the ``{"kernel", "bias"}`` dict.

    Raises:
        ValueError: params is not an :func:`mlp` tree of dense_0..dense_{n-1} layers.
    """
    tree = params.get("params", params) if isinstance(params, dict) else None
    names = [k for k in tree if isinstance(k, str) and k.startswith("dense_")
             and k[6:].isdigit()] if isinstance(tree, dict) else []
    if not names:
        raise ValueError("params must be a fold_jax.nets params tree with dense_i layers "
                         "({'params': {'dense_0': {'kernel', 'bias'}, ...}})")
    names.sort(key=lambda k: int(k[6:]))
    if names != [f"dense_{i}" for i in range(len(names))]:
        raise ValueError(f"params layers must be dense_0..dense_{len(names) - 1}, got {names}")
    return [(k, tree[k]) for k in names]


# --------------------------------------------------------------------------- recurrent

CELLS: dict[str, Callable[..., nn.RNNCellBase]] = {
    "gru": nn.GRUCell,
    "lstm": nn.OptimizedLSTMCell,
    "simple": nn.SimpleCell,
}


class _Step(nn.Module):
    """One time step of a flax cell: ``(carry, x_t) -> (carry, None)`` (no per-step
    output is stacked, so a forward pass keeps only the carry)."""

    cell: str
    hidden: int

    @nn.compact
    def __call__(self, carry, x: Array):
        carry, _ = CELLS[self.cell](features=self.hidden, name="cell")(carry, x)
        return carry, None


def _last_hidden(cell: str, carry) -> Array:
    """The hidden state in a cell's carry (an LSTM's carry is (c, h))."""
    return carry[1] if cell == "lstm" else carry


class RNN(nn.Module):
    """A flax.linen recurrent cell scanned over time (``nn.scan``, i.e. ``lax.scan``),
    then a dense read-out of the last hidden state: x (batch, T, features) -> logits
    (batch, outputs). Only the carry travels along the scan (no stacked per-step
    outputs), so a forward pass needs memory independent of T beyond x itself.

    ``__call__(x, initial_carry=None, return_carry=False)``: with ``return_carry`` it
    returns ``(carry, logits)``, so a sequence can be run in pieces (truncated BPTT).
    """

    hidden: int
    outputs: int
    cell: str = "gru"

    @nn.compact
    def __call__(self, x: Array, initial_carry=None, return_carry: bool = False):
        cell = _lookup(CELLS, self.cell, "cell")(features=self.hidden, parent=None)
        if initial_carry is None:
            initial_carry = cell.initialize_carry(jax.random.key(0), x[:, 0].shape)
        scan = nn.scan(_Step, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=1, out_axes=1)
        carry, _ = scan(self.cell, self.hidden, name="rnn")(initial_carry, x)
        logits = nn.Dense(self.outputs, name="head")(_last_hidden(self.cell, carry))
        return (carry, logits) if return_carry else logits


@dataclasses.dataclass(frozen=True)
class RecurrentNet(Net):
    """A :class:`Net` over sequences: ``apply(params, x)`` with x (batch, T, features)
    gives logits (batch, outputs) from the last state. ``truncate=k`` (an int) makes
    the gradient flow through the last k time steps only (truncated backprop through
    time for a sequence-to-one loss): the first T - k steps run under
    ``lax.stop_gradient`` (params and carry), so backprop stores only k steps of
    activations. The forward value is the same as without truncation."""

    truncate: int | None = None

    def init(self, key: PRNGKeyArray) -> PyTree:
        check_key(key)
        return self.module.init(key, jnp.zeros((1, 1, self.in_features), jnp.float32))

    def apply(self, params: PyTree, x: ArrayLike) -> Array:
        """Logits (batch, outputs) for inputs x (batch, T, in_features)."""
        shape = jnp.shape(x)
        if len(shape) != 3 or shape[-1] != self.in_features or shape[1] < 1:
            raise ValueError(f"x has shape {shape}; it must be (batch, T, in_features="
                             f"{self.in_features}) with T >= 1")
        k = self.truncate
        try:
            if k is None or k >= shape[1]:
                return self.module.apply(params, x)
            frozen = jax.lax.stop_gradient(params)
            carry, _ = self.module.apply(frozen, jax.lax.stop_gradient(x[:, :-k]),
                                         return_carry=True)
            return self.module.apply(params, x[:, -k:],
                                     initial_carry=jax.lax.stop_gradient(carry))
        except (errors.ScopeCollectionNotFound, errors.ScopeParamNotFoundError,
                errors.ScopeParamShapeError) as e:
            raise ValueError(f"params do not fit this net (in_features={self.in_features}): "
                             f"{str(e).split(' (https')[0]}") from e


def rnn(features: int, hidden: int, outputs: int, cell: str = "gru", *,
        truncate: int | None = None) -> RecurrentNet:
    """A recurrent net: a flax.linen cell (``nn.GRUCell``, ``nn.OptimizedLSTMCell`` or
    ``nn.SimpleCell``) scanned over time, logits from the last hidden state.

    Args:
        features: input features per time step (int >= 1).
        hidden: the cell's hidden units (int >= 1).
        outputs: output units (int >= 1).
        cell: "gru", "lstm" or "simple" (a key of ``CELLS``).
        truncate: None (full backprop through time) or k >= 1: gradients flow through
            the last k steps only (see :class:`RecurrentNet`).

    Returns:
        A :class:`RecurrentNet`; ``apply(params, x)`` takes x of shape (batch, T,
        features).

    Raises:
        ValueError: a size that is not an int >= 1, an unknown cell, a bad truncate.
    """
    features, hidden, outputs = (check_int(v, n) for n, v in (
        ("features", features), ("hidden", hidden), ("outputs", outputs)))
    _lookup(CELLS, cell, "cell")
    if truncate is not None and (isinstance(truncate, bool) or not isinstance(truncate, int)
                                 or truncate < 1):
        raise ValueError(f"truncate={truncate!r} must be None or an int >= 1")
    return RecurrentNet(RNN(hidden, outputs, cell), features, truncate)


# ------------------------------------------------------------------- language models

TRANSFORMER_PRESETS: dict[str, dict[str, int]] = {
    # name: sizes; params at vocab 85, max_len 256 in the comments (see lm_param_count)
    "tiny": {"width": 64, "depth": 2, "heads": 4},     # ~1.3e5
    "small": {"width": 128, "depth": 5, "heads": 4},   # ~1.0e6
    "base": {"width": 384, "depth": 6, "heads": 6},    # ~1.1e7
}


class GRULM(nn.Module):
    """Character LM: ``nn.Embed`` -> ``layers`` x ``nn.RNN(nn.GRUCell)`` -> ``nn.Dense``.
    tokens (B, T) int -> logits (B, T, vocab_size); position t sees tokens <= t."""

    vocab_size: int
    embed: int = 64
    hidden: int = 128
    layers: int = 1

    @nn.compact
    def __call__(self, tokens: Array) -> Array:
        x = nn.Embed(self.vocab_size, self.embed, name="embed")(tokens)
        for i in range(self.layers):
            x = nn.RNN(nn.GRUCell(features=self.hidden, name=f"gru_{i}"))(x)
        return nn.Dense(self.vocab_size, name="head")(x)


class DecoderBlock(nn.Module):
    """Pre-LayerNorm decoder block: x + attention(LN(x)), then x + MLP(LN(x)) with a
    GELU MLP of ``mlp_ratio * width`` hidden units."""

    width: int
    heads: int
    mlp_ratio: int = 4

    @nn.compact
    def __call__(self, x: Array, mask: Array) -> Array:
        h = nn.LayerNorm(name="ln_1")(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, name="attn")(h, mask=mask)
        h = nn.LayerNorm(name="ln_2")(x)
        h = nn.Dense(self.mlp_ratio * self.width, name="mlp_in")(h)
        return x + nn.Dense(self.width, name="mlp_out")(jax.nn.gelu(h))


class TransformerLM(nn.Module):
    """Decoder-only transformer LM: ``nn.Embed`` plus a learned positional table
    (``self.param("pos", ...)``, (max_len, width)), ``depth`` :class:`DecoderBlock`s
    under a causal mask (``nn.make_causal_mask``), a final LayerNorm and a Dense head.
    tokens (B, T) int with T <= max_len -> logits (B, T, vocab_size)."""

    vocab_size: int
    width: int = 64
    depth: int = 2
    heads: int = 4
    max_len: int = 256
    mlp_ratio: int = 4

    @nn.compact
    def __call__(self, tokens: Array) -> Array:
        x = nn.Embed(self.vocab_size, self.width, name="embed")(tokens)
        pos = self.param("pos", nn.initializers.normal(0.02), (self.max_len, self.width))
        x = x + pos[: tokens.shape[-1]]
        mask = nn.make_causal_mask(tokens)
        for i in range(self.depth):
            x = DecoderBlock(self.width, self.heads, self.mlp_ratio, name=f"block_{i}")(x, mask)
        return nn.Dense(self.vocab_size, name="head")(nn.LayerNorm(name="ln_f")(x))


@dataclasses.dataclass(frozen=True)
class LanguageModel(Net):
    """A :class:`Net` over token ids: ``apply(params, x)`` with x (batch, T) integer
    tokens in 0..vocab_size-1 gives logits (batch, T, vocab_size), position t
    depending on tokens <= t only. ``in_features`` is the vocabulary size;
    ``max_len`` bounds T (None: any T)."""

    max_len: int | None = None

    @property
    def vocab_size(self) -> int:
        return self.in_features

    def init(self, key: PRNGKeyArray) -> PyTree:
        check_key(key)
        return self.module.init(key, jnp.zeros((1, 1), jnp.int32))

    def apply(self, params: PyTree, x: ArrayLike) -> Array:
        """Logits (batch, T, vocab_size) for tokens x (batch, T) (integer dtype)."""
        shape, dtype = jnp.shape(x), jnp.result_type(x)
        if not jnp.issubdtype(dtype, jnp.integer):
            raise TypeError(f"x must hold integer token ids, got dtype {dtype} (encode text "
                            f"with fold_jax.text.encode)")
        if len(shape) != 2 or shape[1] < 1:
            raise ValueError(f"x has shape {shape}; a language model needs (batch, T) tokens")
        if self.max_len is not None and shape[1] > self.max_len:
            raise ValueError(f"x has T={shape[1]} tokens; this model's positional table holds "
                             f"max_len={self.max_len}")
        try:
            return self.module.apply(params, x)
        except (errors.ScopeCollectionNotFound, errors.ScopeParamNotFoundError,
                errors.ScopeParamShapeError) as e:
            raise ValueError(f"params do not fit this language model (vocab_size="
                             f"{self.vocab_size}): {str(e).split(' (https')[0]}") from e


def gru_lm(vocab_size: int, embed: int = 64, hidden: int = 128, layers: int = 1) -> LanguageModel:
    """A GRU character LM (:class:`GRULM`): ~9e4 params with the defaults at vocab 85.

    Args:
        vocab_size: token ids 0..vocab_size-1 (int >= 2).
        embed: embedding width.
        hidden: GRU units per layer.
        layers: stacked GRU layers.

    Returns:
        A :class:`LanguageModel`: ``apply(params, tokens (B, T)) -> logits (B, T, vocab)``.

    Raises:
        ValueError: a size that is not a positive int (vocab_size >= 2).
    """
    vocab_size = check_int(vocab_size, "vocab_size", 2)
    embed, hidden, layers = (check_int(v, n) for n, v in (
        ("embed", embed), ("hidden", hidden), ("layers", layers)))
    return LanguageModel(GRULM(vocab_size, embed, hidden, layers), vocab_size)


def transformer_lm(vocab_size: int, preset: str | None = "tiny", *, width: int | None = None,
                   depth: int | None = None, heads: int | None = None, max_len: int = 256,
                   mlp_ratio: int = 4) -> LanguageModel:
    """A decoder-only transformer character LM (:class:`TransformerLM`).

    Sizes come from ``preset`` ("tiny" ~1e5, "small" ~1e6, "base" ~1e7 params; see
    ``TRANSFORMER_PRESETS``); ``width``, ``depth`` and ``heads`` override it (all three
    are needed with ``preset=None``).

    Args:
        vocab_size: token ids 0..vocab_size-1 (int >= 2).
        preset: a key of ``TRANSFORMER_PRESETS`` or None.
        width: model width (a multiple of ``heads``).
        depth: decoder blocks.
        heads: attention heads.
        max_len: rows of the positional table: the longest T the model reads.
        mlp_ratio: MLP hidden units per unit of width.

    Returns:
        A :class:`LanguageModel` with ``max_len`` set.

    Raises:
        ValueError: an unknown preset, a missing or non-positive size, a width that
            ``heads`` does not divide.
    """
    vocab_size = check_int(vocab_size, "vocab_size", 2)
    sizes = dict(TRANSFORMER_PRESETS[check_choice(preset, "preset", sorted(TRANSFORMER_PRESETS))]
                 ) if preset is not None else {}
    for name, value in (("width", width), ("depth", depth), ("heads", heads)):
        if value is not None:
            sizes[name] = value
        if name not in sizes:
            raise ValueError(f"{name} is required with preset=None")
        sizes[name] = check_int(sizes[name], name)
    max_len, mlp_ratio = check_int(max_len, "max_len"), check_int(mlp_ratio, "mlp_ratio")
    if sizes["width"] % sizes["heads"]:
        raise ValueError(f"width={sizes['width']} must be a multiple of heads={sizes['heads']}")
    module = TransformerLM(vocab_size, sizes["width"], sizes["depth"], sizes["heads"], max_len,
                           mlp_ratio)
    return LanguageModel(module, vocab_size, max_len)


def lm_param_count(vocab_size: int, width: int, depth: int, max_len: int = 256,
                   mlp_ratio: int = 4) -> int:
    """Parameters of :func:`transformer_lm` by the architecture's arithmetic: embedding
    V w, positions L w, per block 2 LayerNorms (4w), q/k/v/out projections (4(w^2 + w))
    and the MLP (2 r w^2 + r w + w), final LayerNorm 2w, head w V + V.

    Args:
        vocab_size: V.
        width: w.
        depth: blocks.
        max_len: L, rows of the positional table.
        mlp_ratio: r.

    Returns:
        The number of parameters.
    """
    block = 4 * width + 4 * (width * width + width) + 2 * mlp_ratio * width * width \
        + mlp_ratio * width + width
    return (vocab_size * width + max_len * width + depth * block + 2 * width
            + width * vocab_size + vocab_size)


__all__ += ["GRULM", "TRANSFORMER_PRESETS", "DecoderBlock", "LanguageModel",
            "TransformerLM", "gru_lm", "lm_param_count", "transformer_lm"]
