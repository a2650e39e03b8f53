"""Policies for control tasks: flax modules mapping one observation to action scores.

A :class:`Policy` is a flax module plus what a rollout needs to run it: the observation
shape it takes, and for a recurrent policy the shape of the carry it threads through
an episode. Every policy is applied to ONE observation (no batch axis): rollouts vmap
it over episodes and the methods vmap those over the population.

``apply(params, carry, obs) -> (carry, out)``: ``out`` are the action scores, one
logit per action for a discrete action space or one entry per action dimension for a
continuous one (:class:`fold_jax.learn.control.ControlTask` turns them into actions: argmax,
or tanh squashed into the action bounds). Feedforward policies carry nothing (``()``).

The default modules (:func:`default`) use :class:`fold_jax.learn.nets.Dense` and
``flax.linen.Conv`` / ``GRUCell``, so zeroth-order methods with ``rank=r`` run them on
the fused low-rank path (:mod:`fold_jax.estimators.flax_layers`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray, PyTree

from fold_jax.checks import check_choice, check_int, check_key
from fold_jax.learn import nets

__all__ = ["KINDS", "ConvPolicy", "GRUPolicy", "MLPPolicy", "Policy", "default"]

KINDS = ("mlp", "conv", "gru")  # the default policies, by name


class MLPPolicy(nn.Module):
    """The flattened observation through an MLP (``hidden`` widths, then ``outputs``)."""

    hidden: Sequence[int]
    outputs: int
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: Array) -> Array:
        x = jnp.reshape(obs, (-1,)).astype(jnp.float32)
        return nets.MLP((*self.hidden, self.outputs), self.activation, name="mlp")(x)


class ConvPolicy(nn.Module):
    """An image (H, W, C) through a 3x3 VALID convolution (``features`` channels,
    ReLU), flattened, then an MLP (``hidden`` widths, then ``outputs``). The MinAtar
    policy: 10x10xC boards."""

    features: int
    hidden: Sequence[int]
    outputs: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, obs: Array) -> Array:
        x = obs.astype(jnp.float32)
        x = jax.nn.relu(nn.Conv(self.features, (3, 3), padding="VALID", name="conv")(x))
        x = jnp.reshape(x, (-1,))
        return nets.MLP((*self.hidden, self.outputs), self.activation, name="mlp")(x)


class GRUPolicy(nn.Module):
    """A flax ``GRUCell`` (``hidden`` units) over the flattened observation, then a
    dense read-out: ``(carry (hidden,), obs) -> (carry, out)``."""

    hidden: int
    outputs: int

    @nn.compact
    def __call__(self, carry: Array, obs: Array) -> tuple[Array, Array]:
        x = jnp.reshape(obs, (-1,)).astype(jnp.float32)
        carry, h = nn.GRUCell(self.hidden, name="gru")(carry, x)
        return carry, nets.Dense(self.outputs, name="head")(h)


@dataclasses.dataclass(frozen=True)
class Policy:
    """A flax module as a policy over observations of shape ``obs_shape``.

    ``carry=None``: feedforward, ``module.apply(params, obs) -> out``. ``carry=shape``:
    recurrent, ``module.apply(params, carry, obs) -> (carry, out)``, the episode
    starting from zeros of that shape (float32). Frozen and hashable.
    """

    module: nn.Module
    obs_shape: tuple[int, ...]
    carry: tuple[int, ...] | None = None

    @property
    def recurrent(self) -> bool:
        return self.carry is not None

    def initial_carry(self) -> Any:
        """The carry an episode starts from: zeros (``carry``,) or ``()``."""
        return () if self.carry is None else jnp.zeros(self.carry, jnp.float32)

    def init(self, key: PRNGKeyArray) -> PyTree:
        """Initial params from ``key``."""
        check_key(key)
        obs = jnp.zeros(self.obs_shape, jnp.float32)
        if self.recurrent:
            return self.module.init(key, self.initial_carry(), obs)
        return self.module.init(key, obs)

    def apply(self, params: PyTree, carry: Any, obs: Array) -> tuple[Any, Array]:
        """``(carry, out)`` for one observation ``obs`` (``obs_shape``)."""
        if self.recurrent:
            return self.module.apply(params, carry, obs)
        return carry, self.module.apply(params, obs)


def default(kind: str, obs_shape: Sequence[int], outputs: int, *,
            hidden: Sequence[int] | int | None = None, activation: str = "tanh",
            features: int = 16) -> Policy:
    """A default policy: ``"mlp"`` (any observation, flattened), ``"conv"`` (an image
    observation (H, W, C), H and W >= 3) or ``"gru"`` (recurrent).

    Args:
        kind: "mlp", "conv" or "gru" (``KINDS``).
        obs_shape: the shape of one observation.
        outputs: action scores (actions of a discrete space, or action entries).
        hidden: hidden widths (mlp: default (32, 32); conv: the MLP after the
            convolution, default (32,)) or units (gru: one int, default 32).
        activation: the MLP's hidden activation (a key of ``fold_jax.learn.nets.ACTIVATIONS``;
            the conv policy's MLP uses it too).
        features: the conv policy's channels.

    Returns:
        The :class:`Policy`.

    Raises:
        ValueError: an unknown kind, bad sizes, or a conv policy on an observation
            that is not (H, W, C) with H, W >= 3.
    """
    check_choice(kind, "policy", KINDS)
    outputs = check_int(outputs, "outputs")
    obs_shape = tuple(int(s) for s in obs_shape)
    nets.activation(activation)
    if kind == "gru":
        units = 32 if hidden is None else check_int(hidden, "hidden")
        return Policy(GRUPolicy(units, outputs), obs_shape, (units,))
    widths = _widths(hidden, (32, 32) if kind == "mlp" else (32,))
    if kind == "mlp":
        return Policy(MLPPolicy(widths, outputs, activation), obs_shape)
    if len(obs_shape) != 3 or min(obs_shape[:2]) < 3:
        raise ValueError(f"policy='conv' needs image observations (H, W, C) with H, W >= 3; "
                         f"this environment's are {obs_shape}: use policy='mlp'")
    features = check_int(features, "features")
    return Policy(ConvPolicy(features, widths, outputs, activation), obs_shape)


def _widths(hidden: Any, fallback: tuple[int, ...]) -> tuple[int, ...]:
    if hidden is None:
        return fallback
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        hidden = (hidden,)
    if isinstance(hidden, str) or not isinstance(hidden, Sequence):
        raise ValueError(f"hidden={hidden!r} must be a sequence of positive ints")
    return tuple(check_int(w, "hidden") for w in hidden)

