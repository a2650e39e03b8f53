"""Dense, binarized and pruned networks behind one interface, so training loops and
races need no special cases; for fold_jax MLPs and for any flax model.

``make(name, widths, key=...)`` (a fold_jax MLP) and ``from_model(name, apply, params)``
(your flax model) return a :class:`Variant`: ``apply(params, x)`` the variant's forward
(``net.apply`` for an MLP; for a binarized user model the model on sign weights), its
initial ``params``, ``wrap_tx(tx)`` the optax transformation that keeps the variant's
constraint (pruning mask / latent clipping) on top of any optimizer, ``zo_mask`` the mask
to pass to ``fold_jax.estimators.zo.value_and_grad(..., mask=)`` (None when every parameter is
free), and ``inference(params)`` the real-kernel inference of (trained) params: BCSR
sparse matmuls for "pruned", 1-bit packed kernels for "binarized" (None for "dense").

    v = variants.make("pruned", (64, 128, 128, 10), key=jax.random.key(0), sparsity=0.9)
    m = methods.gradient(task.loss_fn(v.apply), v.wrap_tx(optax.adam(1e-3)))
    r = train.fit(m, v.params, task, apply=v.apply, steps=300)
    logits = jax.jit(v.inference(r.state.params))(task.x_test)   # BCSR kernels

    v = variants.from_model("binarized", model.apply, model.init(key, x))  # any flax model
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import optax
from jaxtyping import Array, PRNGKeyArray, PyTree

from fold_jax.checks import check_bool, check_callable, check_choice, check_fraction, check_key
from fold_jax.compress import binary, prune
from fold_jax.learn import nets

__all__ = ["NAMES", "Variant", "from_model", "make"]

NAMES = ("dense", "binarized", "pruned")


class Variant(NamedTuple):
    """A network variant (see the module docstring).

    Attributes:
        name: "dense", "binarized" or "pruned".
        net: the fold_jax ``nets.Net`` (:func:`make`); None for a user model.
        params: initial params (pruned: already masked; binarized: latent weights).
        wrap_tx: ``wrap_tx(tx) -> tx`` keeping the mask / clipping the latent kernels.
        zo_mask: the fixed pruning mask (for ``zo.value_and_grad(mask=)``), or None.
        apply: the variant's forward ``apply(params, *args)``.
        inference: ``inference(params) -> infer(*args)`` with real sparse / packed
            kernels (``prune.sparse_inference`` / ``binary.packed_inference``), or None.
    """

    name: str
    net: nets.Net | None
    params: PyTree
    wrap_tx: Callable[[optax.GradientTransformation], optax.GradientTransformation]
    zo_mask: PyTree | None
    apply: Callable[..., Array] | None = None
    inference: Callable[[PyTree], Callable[..., Array]] | None = None


def _identity(tx: optax.GradientTransformation) -> optax.GradientTransformation:
    return tx


def _check_name(name: str) -> None:
    if name not in NAMES:
        raise ValueError(f"name={name!r} is not a variant; allowed: {list(NAMES)}")


def _no_more(name: str, opts: dict, allowed: Sequence[str]) -> None:
    if opts:
        raise ValueError(f"unknown options for {name!r}: {sorted(opts)}; allowed: "
                         f"{sorted(allowed)}")


def _chained(extra: optax.GradientTransformation) -> Callable:
    return lambda tx: optax.chain(tx, extra)


def _pruned(apply: Callable, params: PyTree, key: PRNGKeyArray | None, sparsity: float,
            select: prune.Select | None, opts: dict) -> Variant:
    """The pruned variant of (apply, params): fixed or gradual magnitude / random mask."""
    s = check_fraction(sparsity, "sparsity")
    scope = opts.pop("scope", "layer")
    kind = opts.pop("mask", "magnitude")
    gradual = opts.pop("gradual", False)
    frequency = opts.pop("frequency", 10)
    _no_more("pruned", opts, ["frequency", "gradual", "mask", "scope"])
    check_choice(scope, "scope", prune.SCOPES)
    if gradual:
        if isinstance(gradual, bool) or not isinstance(gradual, int) or gradual < 1:
            raise ValueError(f"gradual={gradual!r} must be False or a positive int of steps")
        pruner = prune.gradual_prune(s, gradual, frequency=frequency, scope=scope,
                                     select=select)
        inference = functools.partial(prune.sparse_inference, apply)
        return Variant("pruned", None, params, _chained(pruner), None, apply, inference)
    if kind == "magnitude":
        mask = prune.magnitude_mask(params, s, scope=scope, select=select)
    elif kind == "random":
        if key is None:
            raise ValueError("mask='random' needs key=jax.random.key(seed)")
        mask = prune.random_mask(key, params, s, scope=scope, select=select)
    else:
        check_choice(kind, "mask", ("magnitude", "random"))
    inference = functools.partial(_sparse_inference, apply, mask)
    return Variant("pruned", None, prune.apply_mask(params, mask),
                   lambda tx: prune.keep_masked(tx, mask), mask, apply, inference)


def _sparse_inference(apply: Callable, mask: PyTree, params: PyTree) -> Callable:
    return prune.sparse_inference(apply, params, mask)


def make(
    name: str,
    widths: Sequence[int],
    activation: str = "relu",
    *,
    key: PRNGKeyArray,
    sparsity: float = 0.9,
    **opts,
) -> Variant:
    """A fold_jax MLP variant by name: "dense", "binarized" or "pruned".

    Options. binarized: ``scale=True`` (XNOR-Net alpha), ``binarize_activations=False``
    (BNN; needs activation "identity" or "tanh"), ``clip=1.0`` (latent range).
    pruned: ``sparsity`` (in [0, 1)), ``scope="layer"|"global"``,
    ``mask="magnitude"|"random"`` (of the initial weights), ``gradual=False`` (if an
    int T: start dense and prune to ``sparsity`` over T steps with the cubic schedule,
    ``frequency=10``; the mask then changes during training, so ``zo_mask`` is None).
    For your own flax model use :func:`from_model`.

    Args:
        name: "dense", "binarized" or "pruned".
        widths: the MLP's widths, input first (as :func:`fold_jax.learn.nets.mlp`).
        activation: the hidden activation's name.
        key: the PRNG key for the initial params (and the random mask).
        sparsity: the pruned fraction of kernel weights ("pruned" only).
        **opts: the variant's options above (unknown ones are a ValueError).

    Returns:
        A :class:`Variant` with ``net``, ``apply = net.apply`` and ``inference``
        (pruned: BCSR kernels; binarized: packed 1-bit kernels, equal to ``net.apply``).
    """
    _check_name(name)
    if name == "dense":
        _no_more("dense", opts, [])
        net = nets.mlp(widths, activation)
        return Variant(name, net, net.init(key), _identity, None, net.apply, None)
    if name == "binarized":
        scale = opts.pop("scale", True)
        bin_act = opts.pop("binarize_activations", False)
        clip = opts.pop("clip", 1.0)
        _no_more("binarized", opts, ["binarize_activations", "clip", "scale"])
        if bin_act and activation == "relu":
            raise ValueError("activation='relu' with binarize_activations=True: sign(relu(x)) "
                             "is always +1; allowed: 'identity', 'tanh'")
        net = nets.mlp(widths, activation,
                       layer=binary.binary_layer(scale=scale, binarize_activations=bin_act))
        inference = functools.partial(binary.packed_inference, net.apply)
        return Variant(name, net, net.init(key), _chained(binary.clip_latent(clip)), None,
                       net.apply, inference)
    check_fraction(sparsity, "sparsity")
    net = nets.mlp(widths, activation)
    check_key(key)
    init_key, mask_key = jax.random.split(key)
    v = _pruned(net.apply, net.init(init_key), mask_key, sparsity, None, dict(opts))
    return v._replace(net=net)


def _binarized_apply(apply: Callable, scale: bool, select: prune.Select | None,
                     params: PyTree, *args: Any, **kwargs: Any) -> Any:
    return apply(binary.binarize(params, scale=scale, select=select), *args, **kwargs)


def from_model(
    name: str,
    apply: Callable[..., Array],
    params: PyTree,
    *,
    key: PRNGKeyArray | None = None,
    sparsity: float = 0.9,
    select: prune.Select | None = None,
    **opts,
) -> Variant:
    """The variant "dense", "binarized" or "pruned" of your own flax model.

    Kernels are found by path in ``params`` (any tree: linen variables from
    ``model.init``, an nnx State with ``apply = lambda s, x: nnx.merge(graphdef, s)(x)``).
    pruned: masks prune every leaf of ndim >= 2 (``select`` to choose; LayerNorm and
    biases never), ``apply`` is the model's own, ``inference(params)`` runs it with BCSR
    Dense kernels. binarized: ``apply(p, x)`` is the model on ``binary.binarize(p)``
    (sign weights, STE to the latent kernels, chosen by ``select``, default
    ``prune.is_kernel``), ``wrap_tx`` clips those latents, ``inference(params)`` runs
    the model with 1-bit packed kernels and equals ``apply(params, x)``.

    Args:
        name: "dense", "binarized" or "pruned".
        apply: ``apply(params, *args, **kwargs)``, e.g. ``model.apply``.
        params: the model's initial params.
        key: needed only for ``mask="random"``.
        sparsity: pruned: the fraction of zeros, in [0, 1).
        select: ``select(path, leaf) -> bool``, the leaves pruned / binarized.
        **opts: binarized: ``scale=True``, ``clip=1.0``, ``binarize_inputs=False`` (kernel
            paths whose input the model itself binarizes, e.g. with ``binary.sign_ste``:
            their inference runs XNOR-popcount). pruned: ``scope``, ``mask``, ``gradual``,
            ``frequency`` as in :func:`make`.

    Returns:
        A :class:`Variant` with ``net=None``.

    Raises:
        ValueError: naming the bad argument (unknown name or option, no leaf to prune or
            binarize).
        TypeError: naming the bad argument (apply not callable, a bad key).
    """
    _check_name(name)
    check_callable(apply, "apply", "apply(params, *args) -> outputs")
    if not jax.tree.leaves(params):
        raise ValueError("params has no leaves: give the model's initial params")
    if key is not None:
        check_key(key)
    if name == "dense":
        _no_more("dense", opts, [])
        return Variant(name, None, params, _identity, None, apply, None)
    if name == "pruned":
        return _pruned(apply, params, key, sparsity, select, dict(opts))
    opts = dict(opts)
    scale = check_bool(opts.pop("scale", True), "scale")
    clip = opts.pop("clip", 1.0)
    binarize_inputs = opts.pop("binarize_inputs", False)
    _no_more("binarized", opts, ["binarize_inputs", "clip", "scale"])
    kernels = prune.kernel_paths(params, select)
    binary.input_paths(binarize_inputs, kernels)
    chosen = set(kernels)
    clipper = binary.clip_latent(clip, select=lambda path, leaf: path in chosen)
    inference = functools.partial(binary.packed_inference, apply, scale=scale,
                                  binarize_inputs=binarize_inputs, select=select)
    forward = functools.partial(_binarized_apply, apply, scale, select)
    return Variant(name, None, params, _chained(clipper), None, forward, inference)
