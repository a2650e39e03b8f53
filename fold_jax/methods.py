"""Training methods as pairs of pure functions: ``init(params) -> state`` and
``step(state, key, *args) -> (state, info)``.

Every method (backprop + optax, zeroth-order estimators + optax, direct search,
binarized or pruned variants) has this shape, so :func:`fold_jax.train.fit` is the
only training loop. ``state.params`` is the current point; ``info`` holds at least
``loss`` (scalar) and ``evals`` (loss evaluations spent by the step).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, PRNGKeyArray, PyTree

__all__ = [
    "OPTIMIZERS",
    "DescentState",
    "Method",
    "all_finite",
    "check_key",
    "check_params",
    "descent",
    "gradient",
    "optimizer",
]


class Method(NamedTuple):
    """A training method: ``init(params) -> state``; ``step(state, key, *args)``."""

    init: Callable[[PyTree], Any]
    step: Callable[..., tuple[Any, dict[str, Array]]]
    name: str = "method"


class DescentState(NamedTuple):
    params: PyTree
    opt_state: optax.OptState


OPTIMIZERS: dict[str, Callable[[float], optax.GradientTransformation]] = {
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


def check_key(key, argument: str = "key") -> None:
    """TypeError naming ``argument`` unless ``key`` is one PRNG key: a typed key of
    shape () (``jax.random.key(seed)``) or a legacy raw uint32 key of shape (2,)
    (``jax.random.PRNGKey(seed)``, accepted as jax.random accepts it). Works on
    tracers (only static shape and dtype are read)."""
    shape, dtype = getattr(key, "shape", None), getattr(key, "dtype", None)
    if shape is None or dtype is None:
        raise TypeError(f"{argument} must be a PRNG key from jax.random.key(seed), got "
                        f"{type(key).__name__} {key!r:.40}")
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        if tuple(shape) != ():
            raise TypeError(f"{argument} must be a single PRNG key of shape (), got a key "
                            f"array of shape {tuple(shape)} (split keys are vmapped over)")
        return
    if np.dtype(dtype) != np.uint32 or tuple(shape) != (2,):
        raise TypeError(f"{argument} must be a PRNG key from jax.random.key(seed) (or a raw "
                        f"uint32 key of shape (2,)), got an array of dtype {dtype} and shape "
                        f"{tuple(shape)}")


def check_params(params: PyTree, purpose: str) -> None:
    """ValueError when ``params`` has no entries (``purpose`` says why that matters),
    TypeError when a leaf is not floating point; both name params."""
    leaves = jax.tree.leaves(params)
    if sum(math.prod(jnp.shape(w)) for w in leaves) == 0:
        raise ValueError(f"params has no entries: {purpose}")
    for w in leaves:
        if not jnp.issubdtype(jnp.result_type(w), jnp.inexact):
            raise TypeError(f"params leaves must be floating point, got a "
                            f"{jnp.result_type(w)} leaf of shape {jnp.shape(w)}")


def _check_callable(fun, argument: str) -> None:
    if not callable(fun):
        raise TypeError(f"{argument} must be callable, got {type(fun).__name__}")


def optimizer(
    name: str | optax.GradientTransformation, learning_rate: float = 1e-3
) -> optax.GradientTransformation:
    """An optax optimizer by name (see ``OPTIMIZERS``), or ``name`` itself if it is one."""
    if isinstance(name, optax.GradientTransformation):
        return name
    if not isinstance(name, str):
        raise TypeError(
            f"optimizer must be a name or an optax.GradientTransformation, "
            f"got {type(name).__name__}"
        )
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer={name!r} is not known; allowed: {sorted(OPTIMIZERS)}")
    if (isinstance(learning_rate, bool) or not isinstance(learning_rate, int | float)
            or not learning_rate > 0 or not math.isfinite(learning_rate)):
        raise ValueError(f"learning_rate={learning_rate!r} must be a positive number")
    return OPTIMIZERS[name](learning_rate)


def all_finite(tree: PyTree) -> Array:
    """True when every leaf of ``tree`` is finite (True for an empty tree)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


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
    ``aux`` (a dict of scalars) is merged into ``info``. ``key`` must be one PRNG key
    (see :func:`check_key`; :func:`gradient` ignores its value).
    """
    _check_callable(value_and_grad, "value_and_grad")
    if not (hasattr(tx, "init") and hasattr(tx, "update")):
        raise TypeError(f"tx must be an optax.GradientTransformation, got {type(tx).__name__}"
                        " (methods.optimizer(name, lr) builds one from a name)")
    if isinstance(evals_per_step, bool) or not isinstance(evals_per_step, int | np.integer) \
            or evals_per_step < 0:
        raise ValueError(f"evals_per_step={evals_per_step!r} must be an int >= 0")

    def init(params: PyTree) -> DescentState:
        return DescentState(params, tx.init(params))

    def step(state: DescentState, key: PRNGKeyArray, *args) -> tuple[DescentState, dict]:
        check_key(key)
        value, grads, *rest = value_and_grad(state.params, key, *args)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new = DescentState(optax.apply_updates(state.params, updates), opt_state)
        ok = jnp.isfinite(value) & all_finite(grads)
        new = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
        info = {
            "loss": jnp.asarray(value, jnp.float32),
            "evals": jnp.asarray(evals_per_step, jnp.int32),
            "skipped": (~ok).astype(jnp.int32),
        }
        if rest:
            info.update(rest[0])
        return new, info

    return Method(init, step, name)


def gradient(
    loss: Callable[..., Array], tx: optax.GradientTransformation | str, learning_rate=1e-3
) -> Method:
    """Backpropagation: ``jax.value_and_grad(loss)`` fed to an optax optimizer.

    Counts one loss evaluation per step (the forward; the backward pass costs about
    two more forwards' worth of work but no extra evaluation of the loss).
    """
    _check_callable(loss, "loss")
    tx = optimizer(tx, learning_rate)
    vg = jax.value_and_grad(loss)

    def value_and_grad(params, key, *args):
        del key
        return vg(params, *args)

    return descent(value_and_grad, tx, evals_per_step=1, name="backprop")


def zeroth_order(
    loss: Callable[..., Array],
    tx: optax.GradientTransformation | str,
    learning_rate: float = 1e-3,
    **zo_options,
) -> Method:
    """Zeroth-order descent: :func:`fold_jax.zo.value_and_grad` (options ``zo_options``)
    fed to an optax optimizer. ``evals`` counts the loss evaluations a step spends;
    ``info["valid_directions"]`` the perturbed evaluations that entered the estimate.
    """
    from fold_jax import zo

    tx = optimizer(tx, learning_rate)
    vg = zo.value_and_grad(loss, **zo_options)
    rank = zo_options.get("rank")
    name = "zo_" + zo_options.get("noise", "gaussian") + (f"_r{rank}" if rank else "")
    return descent(vg.with_info, tx, evals_per_step=vg.evals, name=name)


def forward_gradient(
    loss: Callable[..., Array],
    tx: optax.GradientTransformation | str,
    learning_rate: float = 1e-3,
    num_directions: int = 1,
) -> Method:
    """Forward-gradient descent (Baydin et al. 2022): :func:`fold_jax.zo.forward_value_and_grad`
    fed to an optax optimizer; one jvp (forward with tangent) per direction."""
    from fold_jax import zo

    tx = optimizer(tx, learning_rate)
    vg = zo.forward_value_and_grad(loss, num_directions=num_directions)
    return descent(vg.with_info, tx, evals_per_step=vg.evals, name="forward_gradient")


__all__ += ["forward_gradient", "zeroth_order"]
