"""Training methods as pairs of pure functions: ``init(params) -> state`` and
``step(state, key, *args) -> (state, info)``.

Every method (backprop + optax, zeroth-order estimators + optax, direct search,
binarized or pruned variants) has this shape, so :func:`fold_jax.learn.train.fit` is the
only training loop. ``state.params`` is the current point; ``info`` holds at least
``loss`` (scalar) and ``evals`` (loss evaluations spent by the step).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, PRNGKeyArray, PyTree

from fold_jax.checks import (
    all_finite,
    check_callable,
    check_choice,
    check_int,
    check_key,
    check_params,
    check_positive,
)
from fold_jax.estimators import zo
from fold_jax.estimators.info import info_type

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "OPTIMIZERS",
    "DescentInfo",
    "DescentState",
    "LearningRate",
    "Method",
    "all_finite",
    "check_key",
    "check_params",
    "descent",
    "forward_gradient",
    "gradient",
    "info_type",
    "optimizer",
    "zeroth_order",
]


class Method(NamedTuple):
    """A training method: ``init(params) -> state``; ``step(state, key, *args)``."""

    init: Callable[[PyTree], Any]
    step: Callable[..., tuple[Any, Any]]
    name: str = "method"


# --------------------------------------------------------------------------- step info
#
@info_type
class DescentInfo(NamedTuple):
    """What a :func:`descent` step reports.

    Attributes:
        loss: float32 scalar, the value at (or the estimator's estimate of) params.
        evals: int32 scalar, loss evaluations the step spent.
        skipped: int32 scalar, 1 when the value or gradient was not finite (state kept).
        valid_directions: int32 scalar or None, perturbed evaluations that entered a
            zeroth-order estimate.
        dropped_directions: int32 scalar or None, those dropped (non-finite).
        extra: the other entries of the estimator's aux dict, or None.
    """

    loss: Array
    evals: Array
    skipped: Array
    valid_directions: Array | None = None
    dropped_directions: Array | None = None
    extra: dict[str, Array] | None = None


class DescentState(NamedTuple):
    """State of :func:`descent`: the params and the optax optimizer state."""

    params: PyTree
    opt_state: optax.OptState


LearningRate = float | Callable[[Any], Any]  # a number or an optax schedule: step -> lr

DEFAULT_LEARNING_RATE = 1e-3

OPTIMIZERS: dict[str, Callable[[LearningRate], optax.GradientTransformation]] = {
    "sgd": optax.sgd,
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "nesterov": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
    "adam": optax.adam,
    "adamw": optax.adamw,
    "rmsprop": optax.rmsprop,
    "adagrad": optax.adagrad,
    "lion": optax.lion,
    "adabelief": optax.adabelief,
}


def optimizer(
    name: str | optax.GradientTransformation, learning_rate: LearningRate | None = None,
    *, argument: str = "optimizer",
) -> optax.GradientTransformation:
    """An optax optimizer by name (see ``OPTIMIZERS``), or ``name`` itself if it is one.

    Args:
        name: a key of ``OPTIMIZERS`` or an ``optax.GradientTransformation`` (returned
            as it is; its learning rate is the one it was built with).
        learning_rate: with a name, a positive finite number (Python, NumPy or concrete
            JAX scalar) or an optax schedule (a callable ``step -> lr``, e.g.
            ``optax.linear_schedule``); None means ``DEFAULT_LEARNING_RATE`` (1e-3).
            Must be None when ``name`` is an optax object.
        argument: the caller's name for ``name`` (e.g. ``"tx"``), used in errors.

    Returns:
        The optax ``GradientTransformation``.

    Raises:
        TypeError: ``name`` is neither a name nor an optax object.
        ValueError: an unknown name, a bad learning rate, or a learning rate beside an
            optax object (it would be silently ignored).
    """
    if isinstance(name, optax.GradientTransformation):
        if learning_rate is not None:
            raise ValueError(
                f"learning_rate={learning_rate!r} was given beside an optax "
                f"GradientTransformation, which already holds its learning rate: set the "
                f"learning rate inside the optax object (e.g. optax.adam(lr)) and leave "
                f"learning_rate=None, or pass the optimizer by name"
            )
        return name
    if not isinstance(name, str):
        raise TypeError(
            f"{argument} must be an optimizer name or an optax.GradientTransformation, "
            f"got {type(name).__name__}"
        )
    check_choice(name, argument, sorted(OPTIMIZERS))
    if learning_rate is None:
        return OPTIMIZERS[name](DEFAULT_LEARNING_RATE)
    if callable(learning_rate):
        _check_schedule(learning_rate)
        return OPTIMIZERS[name](learning_rate)
    return OPTIMIZERS[name](check_positive(learning_rate, "learning_rate"))


def _check_schedule(schedule: Callable[[Any], Any]) -> None:
    """ValueError naming learning_rate unless ``schedule(step)`` gives a real scalar
    (checked abstractly with ``jax.eval_shape``: nothing runs)."""
    try:
        out = jax.eval_shape(schedule, jax.ShapeDtypeStruct((), jnp.int32))
    except Exception as error:  # any failure is the schedule's
        raise ValueError(f"learning_rate={schedule!r} is callable but is not an optax "
                         f"schedule step -> lr: calling it on an int32 step failed with "
                         f"{type(error).__name__}: {error}") from error
    dtype = getattr(out, "dtype", None)
    if (getattr(out, "shape", None) != () or dtype is None
            or not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer))):
        raise ValueError(f"learning_rate={schedule!r} must be a schedule step -> scalar "
                         f"learning rate; it returned {out!r}")


def descent(
    value_and_grad: Callable[..., tuple],
    tx: optax.GradientTransformation,
    *,
    evals_per_step: int,
    name: str = "descent",
) -> Method:
    """Optax descent on any ``value_and_grad(params, key, *args) -> (value, grads[, aux])``.

    A step whose value or gradient is not finite is skipped (params and optimizer
    state unchanged, ``info["skipped"] = 1``): a bad loss never poisons parameters.
    ``aux`` (a dict of scalars) is merged into ``info`` (a :class:`DescentInfo`: its
    ``valid_directions`` / ``dropped_directions`` fields, the rest in ``extra``).
    ``key`` must be one PRNG key (see :func:`check_key`; :func:`gradient` ignores its
    value).

    Args:
        value_and_grad: ``(params, key, *args) -> (value, grads)`` or
            ``(value, grads, aux)``; grads has the structure of params.
        tx: the optax optimizer.
        evals_per_step: loss evaluations one step spends (reported as ``info["evals"]``).
        name: the method's name.

    Returns:
        A :class:`Method`; its ``step(state, key, *args)`` returns ``(state, info)``,
        ``info`` a :class:`DescentInfo` holding "loss", "evals", "skipped" and
        ``aux``'s entries.
    """
    check_callable(value_and_grad, "value_and_grad")
    if not (hasattr(tx, "init") and hasattr(tx, "update")):
        raise TypeError(f"tx must be an optax.GradientTransformation, got {type(tx).__name__}"
                        " (methods.optimizer(name, lr) builds one from a name)")
    evals_per_step = check_int(evals_per_step, "evals_per_step", 0)

    def init(params: PyTree) -> DescentState:
        return DescentState(params, tx.init(params))

    def step(state: DescentState, key: PRNGKeyArray, *args) -> tuple[DescentState, DescentInfo]:
        check_key(key)
        value, grads, *rest = value_and_grad(state.params, key, *args)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new = DescentState(optax.apply_updates(state.params, updates), opt_state)
        ok = jnp.isfinite(value) & all_finite(grads)
        new = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
        aux = dict(rest[0]) if rest else {}
        info = DescentInfo(jnp.asarray(value, jnp.float32),
                           jnp.asarray(evals_per_step, jnp.int32), (~ok).astype(jnp.int32),
                           aux.pop("valid_directions", None), aux.pop("dropped_directions", None),
                           aux or None)
        return new, info

    return Method(init, step, name)


def gradient(
    loss: Callable[..., Array],
    tx: optax.GradientTransformation | str,
    learning_rate: LearningRate | None = None,
) -> Method:
    """Backpropagation: ``jax.value_and_grad(loss)`` fed to an optax optimizer.

    Counts one loss evaluation per step (the forward; the backward pass costs about
    two more forwards' worth of work but no extra evaluation of the loss). ``tx`` and
    ``learning_rate`` are as in :func:`optimizer` (a learning rate beside an optax
    object is a ValueError).

    Args:
        loss: ``loss(params, *args) -> scalar`` (differentiable).
        tx: an optax optimizer or an optimizer name.
        learning_rate: the learning rate (only with an optimizer name).

    Returns:
        A :class:`Method` named "backprop".
    """
    check_callable(loss, "loss")
    tx = optimizer(tx, learning_rate, argument="tx")
    vg = jax.value_and_grad(loss)

    def value_and_grad(params, key, *args):
        del key
        return vg(params, *args)

    return descent(value_and_grad, tx, evals_per_step=1, name="backprop")


def zeroth_order(
    loss: Callable[..., Array],
    tx: optax.GradientTransformation | str,
    learning_rate: LearningRate | None = None,
    **zo_options,
) -> Method:
    """Zeroth-order descent: :func:`fold_jax.estimators.zo.value_and_grad` (options ``zo_options``)
    fed to an optax optimizer. ``evals`` counts the loss evaluations a step spends;
    ``info["valid_directions"]`` the perturbed evaluations that entered the estimate.
    ``tx`` and ``learning_rate`` are as in :func:`optimizer`.

    Args:
        loss: the loss, as :func:`fold_jax.estimators.zo.value_and_grad` takes it.
        tx: an optax optimizer or an optimizer name.
        learning_rate: the learning rate (only with an optimizer name).
        **zo_options: options of :func:`fold_jax.estimators.zo.value_and_grad` (noise, rank, ...).

    Returns:
        A :class:`Method` named ``"zo_<noise>"`` (``"zo_<noise>_r<rank>"`` with a rank).
    """
    check_callable(loss, "loss")
    tx = optimizer(tx, learning_rate, argument="tx")
    vg = zo.value_and_grad(loss, **zo_options)
    rank = zo_options.get("rank")
    name = "zo_" + zo_options.get("noise", "gaussian") + (f"_r{rank}" if rank else "")
    return descent(vg.with_info, tx, evals_per_step=vg.evals, name=name)


def forward_gradient(
    loss: Callable[..., Array],
    tx: optax.GradientTransformation | str,
    learning_rate: LearningRate | None = None,
    num_directions: int = 1,
    chunk_size: int | None = None,
) -> Method:
    """Forward-gradient descent (Baydin et al. 2022):
    :func:`fold_jax.estimators.zo.forward_value_and_grad` fed to an optax optimizer; one jvp
    (forward with tangent) per direction. ``tx`` and ``learning_rate`` are as in
    :func:`optimizer`.

    Args:
        loss: the scalar loss ``loss(params, *args)`` (as in
            :func:`fold_jax.estimators.zo.forward_value_and_grad`).
        tx: an optax optimizer or an optimizer name.
        learning_rate: the learning rate (only with an optimizer name).
        num_directions: random tangents per step.
        chunk_size: tangents held at a time (None: all), as in
            :func:`fold_jax.estimators.zo.forward_value_and_grad`.

    Returns:
        A :class:`Method` named "forward_gradient".
    """
    check_callable(loss, "loss")
    tx = optimizer(tx, learning_rate, argument="tx")
    vg = zo.forward_value_and_grad(loss, num_directions=num_directions, chunk_size=chunk_size)
    return descent(vg.with_info, tx, evals_per_step=vg.evals, name="forward_gradient")

