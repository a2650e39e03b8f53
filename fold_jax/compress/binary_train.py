"""Binarized training: BinaryConnect layers (latent real weights, forward with their sign,
STE gradient where ``|w| <= 1``, latents clipped to [-1, 1] by :func:`clip_latent`), the
sign-weight params of any flax model (:func:`binarize`) and a sign-space search
(:func:`flip_search`). Re-exported by :mod:`fold_jax.compress.binary`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, PRNGKeyArray, PyTree

from fold_jax.checks import check_bool, check_callable, check_int, check_key, check_mask
from fold_jax.compress import walker
from fold_jax.compress.binary_kernels import binarize_kernel, sign_ste
from fold_jax.estimators.methods import Method
from fold_jax.estimators.search import SearchInfo

__all__ = ["BinaryDense", "FlipState", "binarize", "binary_layer", "clip_latent", "flip_search"]


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
        y = x @ binarize_kernel(kernel, self.scale)
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
                                lambda path, w: binarize_kernel(jnp.asarray(w), scale))


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
        A :class:`fold_jax.estimators.methods.Method`.

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
