"""The zeroth-order gradient as an optax transformation (MeZO-style): :func:`as_optax`
puts :func:`fold_jax.estimators.zo.value_and_grad` first in an ``optax.chain``. Re-exported by
:mod:`fold_jax.estimators.zo`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, PRNGKeyArray, PyTree

from fold_jax.checks import all_finite, check_int, check_key, check_params
from fold_jax.estimators.zo_estimator import value_and_grad

__all__ = ["ZOOptaxState", "as_optax"]


class ZOOptaxState(NamedTuple):
    """State of :func:`as_optax` (a pytree).

    Attributes:
        key: the PRNG key the next update splits (when no ``key=`` is passed).
        value: float32 scalar, the last update's loss estimate (the estimator's
            ``value``: the mean pair loss when antithetic, ``loss(params, *batch)``
            otherwise); NaN before the first update and when every direction was dropped.
        dropped: int32 scalar, perturbed evaluations the last update dropped (non-finite
            loss or noise).
        skipped: int32 scalar, updates so far whose estimate was not finite (they
            returned zero updates).
        count: int32 scalar, updates so far.
    """

    key: PRNGKeyArray
    value: Array
    dropped: Array
    skipped: Array
    count: Array


def as_optax(loss: Callable[..., Array], *, seed: int = 0,
             **zo_options: Any) -> optax.GradientTransformationExtraArgs:
    """The zeroth-order gradient of ``loss`` as an optax transformation (MeZO-style).

    ``update(updates, state, params, *, batch=(), key=None, **extra_args)`` returns
    the estimate of :func:`value_and_grad` (``zo_options``) at ``params`` as the
    updates, so it goes first in a chain with any optax optimizer::

        tx = optax.chain(zo.as_optax(loss, num_directions=64, sigma=1e-2, rank=4),
                         optax.adam(1e-3))
        opt_state = tx.init(params)
        updates, opt_state = tx.update(None, opt_state, params, batch=(x, y))
        params = optax.apply_updates(params, updates)

    ``optax.chain`` returns a ``GradientTransformationExtraArgs`` and passes every extra
    keyword argument to each member that takes extra args (plain members get them
    dropped by ``optax.with_extra_args_support``), so ``batch=`` and ``key=`` reach
    this transformation through the chain. Extra args meant for other members (such
    as ``value=``) are ignored here.

    Semantics:

    - ``updates``: ignored. Pass None; a pytree shaped like ``params`` (e.g. zeros,
      which some optax wrappers feed) is accepted and its values are not read. This
      transformation therefore belongs first in a chain: whatever an earlier member
      computed would be discarded.
    - ``batch``: a tuple (or list) of the loss's arguments after params, i.e. the
      estimate is ``value_and_grad(loss, **zo_options)(params, key, *batch)``; the
      default ``()`` calls ``loss(params)``.
    - ``key``: by default ``state.key`` is split each update (``state.key, sub =
      jax.random.split(state.key)``) and ``sub`` is used, so no key is needed; a PRNG
      key passed as ``key=`` is used as it is instead and ``state.key`` is left
      unchanged.
    - a non-finite estimate (value NaN, e.g. every direction dropped, or inf/NaN in the
      gradient) returns zero updates and adds 1 to ``state.skipped``: params are never
      poisoned. The optimizers after it still run their update on the zeros (adam's
      moments decay and it keeps moving by momentum); use
      :func:`fold_jax.estimators.methods.zeroth_order` for a step that is skipped outright.
    - the state records the last ``value`` and ``dropped`` directions (see
      :class:`ZOOptaxState`); a call spends ``value_and_grad(loss, **zo_options).evals``
      loss evaluations. ``init`` and ``update`` are pure and work under ``jax.jit``.

    Args:
        loss: scalar loss ``loss(params, *batch)``.
        seed: seed of the initial ``state.key`` (an int >= 0).
        **zo_options: :func:`value_and_grad`'s options (``num_directions``, ``sigma``,
            ``noise``, ``antithetic``, ``rank``, ``chunk_size``, ``shaping``, ``mask``...).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state is a
        :class:`ZOOptaxState`.

    Raises:
        ValueError / TypeError: a bad option or seed, named, when it is built; in
            ``update``: params None, ``batch`` not a tuple, ``updates`` not None and not
            shaped like params, or ``key`` not a PRNG key (before anything is traced).
    """
    vg = value_and_grad(loss, **zo_options)
    seed = check_int(seed, "seed", minimum=0)

    def init_fn(params: PyTree) -> ZOOptaxState:
        check_params(params, "nothing to perturb")
        return ZOOptaxState(jax.random.key(seed), jnp.asarray(jnp.nan, jnp.float32),
                            jnp.asarray(0, jnp.int32), jnp.asarray(0, jnp.int32),
                            jnp.asarray(0, jnp.int32))

    def update_fn(updates: PyTree | None, state: ZOOptaxState, params: PyTree | None = None,
                  *, batch: tuple | list = (), key: PRNGKeyArray | None = None,
                  **extra_args: Any) -> tuple[PyTree, ZOOptaxState]:
        del extra_args  # meant for other members of a chain
        if params is None:
            raise ValueError("zo.as_optax needs params: call tx.update(None, state, params, "
                             "batch=(x, y)) (the estimate is taken at params)")
        if not isinstance(batch, tuple | list):
            raise TypeError(f"batch must be a tuple of the loss's arguments after params, "
                            f"e.g. batch=(x, y) or batch=(x,), got {type(batch).__name__}")
        if updates is not None and (jax.tree.structure(updates)
                                    != jax.tree.structure(params)):
            raise ValueError("updates must be None or a pytree shaped like params (its values "
                             "are ignored: zo.as_optax computes the updates from params and "
                             "batch, so it goes first in an optax.chain)")
        if key is None:
            next_key, sub = jax.random.split(state.key)
        else:
            check_key(key)
            next_key, sub = state.key, key
        value, grads, info = vg.with_info(params, sub, *batch)
        ok = jnp.isfinite(value) & all_finite(grads)
        out = jax.tree.map(lambda g: jnp.where(ok, g, jnp.zeros_like(g)), grads)
        new = ZOOptaxState(next_key, jnp.asarray(value, jnp.float32),
                           jnp.asarray(info["dropped_directions"], jnp.int32),
                           state.skipped + (~ok).astype(jnp.int32), state.count + 1)
        return out, new

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
