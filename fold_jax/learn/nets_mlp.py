"""Flax MLPs and CNNs with a pure ``apply(params, x)`` and an activation chosen by name,
and the :class:`Net` type every fold_jax net is (the recurrent nets and language models
of :mod:`fold_jax.learn.nets_rnn` and :mod:`fold_jax.learn.nets_lm` extend it).

Layers multiply through :func:`fold_jax.estimators.perturb.matmul`, so a kernel may be a plain
array or a lazy low-rank perturbation (fused zeroth-order evaluation). Layer ``i`` is
named ``dense_i``; other modules (pruning, probes) rely on that order. Re-exported by
:mod:`fold_jax.learn.nets`.
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

from fold_jax.checks import check_choice, check_int, check_key
from fold_jax.estimators import perturb

__all__ = [
    "ACTIVATIONS",
    "CNN",
    "INITIALIZERS",
    "MLP",
    "Dense",
    "Net",
    "activation",
    "cnn",
    "count_params",
    "dense_layers",
    "mlp",
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
            :func:`fold_jax.compress.binary.binary_layer`).
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
    Inside :func:`fold_jax.estimators.flax_layers.intercept` every kernel takes the fused path."""

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
