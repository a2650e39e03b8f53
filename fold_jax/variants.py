"""Dense, binarized and pruned networks behind one interface, so training loops and
races need no special cases.

``make(name, widths, key=...)`` returns a :class:`Variant`: ``net`` and initial
``params`` as for ``nets.mlp``, ``wrap_tx(tx)`` the optax transformation that keeps the
variant's constraint (pruning mask / latent clipping) on top of any optimizer, and
``zo_mask`` the mask to pass to ``fold_jax.zo.value_and_grad(..., mask=)`` (None when
every parameter is free).

    v = variants.make("pruned", (64, 128, 128, 10), key=jax.random.key(0), sparsity=0.9)
    m = methods.gradient(task.loss_fn(v.net.apply), v.wrap_tx(optax.adam(1e-3)))
    train.fit(m, v.params, task, apply=v.net.apply, steps=300)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import optax
from jaxtyping import PRNGKeyArray, PyTree

from fold_jax import binary, nets, prune

__all__ = ["NAMES", "Variant", "make"]

NAMES = ("dense", "binarized", "pruned")


class Variant(NamedTuple):
    name: str
    net: nets.Net
    params: PyTree
    wrap_tx: Callable[[optax.GradientTransformation], optax.GradientTransformation]
    zo_mask: PyTree | None


def _identity(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    return tx


def make(
    name: str,
    widths: Sequence[int],
    activation: str = "relu",
    *,
    key: PRNGKeyArray,
    sparsity: float = 0.9,
    **opts,
) -> Variant:
    """A variant by name: "dense", "binarized" or "pruned".

    Options. binarized: ``scale=True`` (XNOR-Net alpha), ``binarize_activations=False``
    (BNN; needs activation "identity" or "tanh"), ``clip=1.0`` (latent range).
    pruned: ``sparsity`` (in [0, 1)), ``scope="layer"|"global"``,
    ``mask="magnitude"|"random"`` (of the initial weights), ``gradual=False`` (if an
    int T: start dense and prune to ``sparsity`` over T steps with the cubic schedule,
    ``frequency=10``; the mask then changes during training, so ``zo_mask`` is None).
    """
    if name not in NAMES:
        raise ValueError(f"name={name!r} is not a variant; allowed: {list(NAMES)}")
    if name == "dense":
        if opts:
            raise ValueError(f"unknown options for 'dense': {sorted(opts)}")
        net = nets.mlp(widths, activation)
        return Variant(name, net, net.init(key), _identity, None)
    if name == "binarized":
        scale = opts.pop("scale", True)
        bin_act = opts.pop("binarize_activations", False)
        clip = opts.pop("clip", 1.0)
        if opts:
            raise ValueError(f"unknown options for 'binarized': {sorted(opts)}; allowed: "
                             f"['binarize_activations', 'clip', 'scale']")
        if bin_act and activation == "relu":
            raise ValueError("activation='relu' with binarize_activations=True: sign(relu(x)) "
                             "is always +1; allowed: 'identity', 'tanh'")
        net = nets.mlp(widths, activation,
                       layer=binary.binary_layer(scale=scale, binarize_activations=bin_act))
        clipper = binary.clip_latent(clip)
        return Variant(name, net, net.init(key), lambda tx: optax.chain(tx, clipper), None)
    # pruned
    s = prune._check_sparsity(sparsity)
    scope = opts.pop("scope", "layer")
    kind = opts.pop("mask", "magnitude")
    gradual = opts.pop("gradual", False)
    frequency = opts.pop("frequency", 10)
    if opts:
        raise ValueError(f"unknown options for 'pruned': {sorted(opts)}; allowed: "
                         f"['frequency', 'gradual', 'mask', 'scope']")
    prune._check_scope(scope)
    net = nets.mlp(widths, activation)
    init_key, mask_key = jax.random.split(key)
    params = net.init(init_key)
    if gradual:
        if isinstance(gradual, bool) or not isinstance(gradual, int) or gradual < 1:
            raise ValueError(f"gradual={gradual!r} must be False or a positive int of steps")
        pruner = prune.gradual_prune(s, gradual, frequency=frequency, scope=scope)
        return Variant(name, net, params, lambda tx: optax.chain(tx, pruner), None)
    if kind == "magnitude":
        mask = prune.magnitude_mask(params, s, scope=scope)
    elif kind == "random":
        mask = prune.random_mask(mask_key, params, s, scope=scope)
    else:
        raise ValueError(f"mask={kind!r} is not known; allowed: ['magnitude', 'random']")
    params = prune.apply_mask(params, mask)
    return Variant(name, net, params, lambda tx: prune.keep_masked(tx, mask), mask)
