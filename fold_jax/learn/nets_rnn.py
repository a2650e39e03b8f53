"""Recurrent nets (:func:`rnn`: flax.linen cells under ``lax.scan``) in the style of the
MLPs: a :class:`RecurrentNet` with a pure ``apply(params, x)`` over (batch, T, features)
sequences. Re-exported by :mod:`fold_jax.learn.nets`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import errors
from jaxtyping import Array, ArrayLike, PRNGKeyArray, PyTree

from fold_jax.checks import check_choice, check_int, check_key
from fold_jax.learn.nets_mlp import Net

__all__ = ["CELLS", "RNN", "RecurrentNet", "rnn"]


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
        make = CELLS[check_choice(self.cell, "cell", sorted(CELLS))]
        cell = make(features=self.hidden, parent=None)
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
    check_choice(cell, "cell", sorted(CELLS))
    if truncate is not None and (isinstance(truncate, bool) or not isinstance(truncate, int)
                                 or truncate < 1):
        raise ValueError(f"truncate={truncate!r} must be None or an int >= 1")
    return RecurrentNet(RNN(hidden, outputs, cell), features, truncate)
