"""Language models over token ids: a GRU LM (:func:`gru_lm`) and a decoder-only
transformer (:func:`transformer_lm`, sized by ``TRANSFORMER_PRESETS``), both as a
:class:`LanguageModel` with a pure ``apply(params, x)``; their Dense, DenseGeneral and
Embed layers are the standard flax ones (fused through :mod:`fold_jax.estimators.flax_layers`).
Re-exported by :mod:`fold_jax.learn.nets`.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import errors
from jaxtyping import Array, ArrayLike, PRNGKeyArray, PyTree

from fold_jax.checks import check_choice, check_int, check_key
from fold_jax.learn.nets_mlp import Net

__all__ = [
    "GRULM",
    "TRANSFORMER_PRESETS",
    "DecoderBlock",
    "LanguageModel",
    "TransformerLM",
    "gru_lm",
    "lm_param_count",
    "transformer_lm",
]


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
