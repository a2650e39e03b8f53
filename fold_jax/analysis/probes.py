"""Probes of the essays' claims: vanishing gradients and multilabel heads.

- Vanishing gradients: per-layer gradient norms of an MLP (``dense_i`` kernels, in
  layer order) and the first/last ratio; per-layer cosines between a gradient
  estimate (zeroth-order, forward-mode) and the true gradient.
- Heads: what a softmax head does to a multilabel task. Softmax is trained on the
  labels normalised to a distribution; its labels are then decided by a threshold on
  the softmax probabilities or by top-k. :func:`label_metrics` scores either way with
  the same exact-match and micro-F1 as :meth:`fold_jax.learn.heads.Head.metrics`.

Linear-region counting (folding) lives in :mod:`fold_jax.analysis.regions`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, PyTree

from fold_jax.estimators import perturb
from fold_jax.learn import nets

__all__ = [
    "deep_mlp",
    "estimator_health",
    "first_last_ratio",
    "label_metrics",
    "layer_cosines",
    "layer_grad_norms",
    "layer_names",
    "layer_norms",
    "normalized_targets",
    "softmax_label_predictions",
    "softmax_multilabel_loss",
    "tree_cosine",
]

def layer_names(params: PyTree) -> list[str]:
    """``["dense_0", "dense_1", ...]`` in layer order (numeric, so dense_10 follows dense_9).

    Args:
        params: a params or gradient tree of ``dense_i`` layers (with or without the
            "params" level), as :func:`fold_jax.learn.nets.dense_layers` reads it.

    Returns:
        The layer names.

    Raises:
        ValueError: params is not a tree of dense_0..dense_{n-1} layers.
    """
    return [name for name, _ in nets.dense_layers(params)]


def layer_norms(grads: PyTree) -> Array:
    """Frobenius norms (L,) of each ``dense_i`` kernel leaf of ``grads``, in layer order.

    Args:
        grads: a gradient tree of ``dense_i`` layers.

    Returns:
        The (L,) norms.
    """
    return jnp.stack([jnp.linalg.norm(perturb.materialize(layer["kernel"]).ravel())
                      for _, layer in nets.dense_layers(grads)])


def layer_grad_norms(loss: Callable[..., Array], params: PyTree, *args) -> Array:
    """Per-layer gradient norms (L,): ``||d loss / d kernel_i||`` from ``jax.grad(loss)``.

    ``loss(params, *args)`` is scalar; entry i belongs to ``dense_i`` (layer 0 is
    next to the input, layer L-1 is the output layer).

    Args:
        loss: ``loss(params, *args) -> scalar``.
        params: the params (``dense_i`` layers).
        *args: further arguments of ``loss``.

    Returns:
        The (L,) norms, in layer order.
    """
    return layer_norms(jax.grad(loss)(params, *args))


def first_last_ratio(norms: ArrayLike) -> Array:
    """``norms[0] / norms[-1]``: how much gradient reaches the first layer, relative to
    the last (<< 1: vanishing, >> 1: exploding).

    Args:
        norms: (L,) per-layer norms, L >= 2 (e.g. from :func:`layer_norms`).

    Returns:
        The ratio, a scalar.
    """
    norms = jnp.asarray(norms)
    if norms.ndim != 1 or norms.shape[0] < 2:
        raise ValueError(f"norms has shape {norms.shape}; it must be (L,) with L >= 2")
    return norms[0] / norms[-1]


def _cosine(a: Array, b: Array) -> Array:
    a, b = a.ravel(), b.ravel()
    denom = jnp.linalg.norm(a) * jnp.linalg.norm(b)
    return jnp.where(denom > 0, jnp.dot(a, b) / jnp.where(denom > 0, denom, 1.0), jnp.nan)


def layer_cosines(estimate: PyTree, reference: PyTree) -> Array:
    """Per-layer cosines (L,) between the ``dense_i`` kernels of two gradient trees.

    NaN for a layer where either kernel gradient is exactly zero.

    Args:
        estimate: a gradient tree of ``dense_i`` layers (e.g. an estimator's).
        reference: a gradient tree with the same layers (e.g. the backprop gradient).

    Returns:
        The (L,) cosines, in layer order.
    """
    est, ref = nets.dense_layers(estimate), nets.dense_layers(reference)
    if [k for k, _ in est] != [k for k, _ in ref]:
        raise ValueError(f"estimate has layers {[k for k, _ in est]}, reference "
                         f"{[k for k, _ in ref]}")
    return jnp.stack([_cosine(perturb.materialize(e["kernel"]), perturb.materialize(r["kernel"]))
                      for (_, e), (_, r) in zip(est, ref, strict=True)])


def tree_cosine(a: PyTree, b: PyTree) -> Array:
    """Cosine between two pytrees flattened to one vector each (every leaf counted).

    Args:
        a: a pytree.
        b: a pytree with as many entries in all.

    Returns:
        The cosine, a scalar.
    """
    if not jax.tree.leaves(a) or not jax.tree.leaves(b):
        raise ValueError("a and b must be non-empty pytrees (no leaves to compare)")
    va = jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(a)])
    vb = jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(b)])
    if va.shape != vb.shape:
        raise ValueError(f"a has {va.size} entries, b has {vb.size}: they must match")
    return _cosine(va, vb)


def deep_mlp(
    in_features: int, outputs: int, *, depth: int, width: int = 64, activation: str = "relu"
) -> nets.Net:
    """An MLP with ``depth`` hidden layers of ``width`` units (``depth + 1`` dense layers).

    ``depth`` counts activations: ``depth=1`` is one hidden layer. Standard flax
    (LeCun normal) initialisation, as :func:`fold_jax.learn.nets.mlp`.

    Args:
        in_features: input features.
        outputs: output units.
        depth: hidden layers.
        width: units per hidden layer.
        activation: the hidden activation's name.

    Returns:
        The :class:`fold_jax.learn.nets.Net`.
    """
    for name, value in (("depth", depth), ("width", width), ("in_features", in_features),
                        ("outputs", outputs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be an int >= 1")
    return nets.mlp((in_features, *(width,) * depth, outputs), activation)


# --- heads: softmax on a multilabel task -------------------------------------------------


def normalized_targets(labels: ArrayLike) -> Array:
    """Multilabel labels (N, L) in {0, 1} as distributions: ``y / sum(y)``; a row with
    no label on becomes uniform (softmax has no way to say "none").

    Args:
        labels: (N, L) 0/1 labels.

    Returns:
        (N, L) float32 rows summing to 1.
    """
    y = jnp.asarray(labels, jnp.float32)
    if y.ndim != 2:
        raise ValueError(f"labels has shape {y.shape}; it must be (N, L) multilabel")
    count = y.sum(-1, keepdims=True)
    return jnp.where(count > 0, y / jnp.maximum(count, 1.0), 1.0 / y.shape[-1])


def softmax_multilabel_loss(apply: Callable[[PyTree, Array], Array]) -> Callable[..., Array]:
    """``loss(params, x, y)``: softmax cross-entropy against :func:`normalized_targets`.

    Args:
        apply: ``apply(params, x) -> logits`` (N, L).

    Returns:
        ``loss(params, x, y) -> scalar``, the mean over the batch.
    """

    def loss(params: PyTree, x: ArrayLike, y: ArrayLike) -> Array:
        return optax.softmax_cross_entropy(apply(params, x), normalized_targets(y)).mean()

    return loss


def softmax_label_predictions(
    logits: ArrayLike, *, threshold: float | None = None, k: int | ArrayLike | None = None
) -> Array:
    """Label decisions (N, L) int from softmax probabilities of ``logits`` (N, L).

    ``threshold``: label on when its softmax probability >= threshold (at most
    ``floor(1 / threshold)`` labels can be on). ``k``: the k most probable labels
    (an int, or (N,) per example, e.g. the true label counts: an oracle).
    Give exactly one of the two.

    Args:
        logits: (N, L) logits.
        threshold: the probability threshold in (0, 1).
        k: labels on per example, an int or (N,) ints.

    Returns:
        (N, L) int32 decisions in {0, 1}.
    """
    if (threshold is None) == (k is None):
        raise ValueError("give exactly one of threshold= or k=")
    probs = jax.nn.softmax(jnp.asarray(logits), axis=-1)
    if threshold is not None:
        if not isinstance(threshold, int | float) or not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold={threshold!r} must be a number in (0, 1)")
        return (probs >= threshold).astype(jnp.int32)
    rank = jnp.argsort(jnp.argsort(-probs, axis=-1), axis=-1)  # 0 = most probable
    n_labels = probs.shape[-1]
    if isinstance(k, int) and not isinstance(k, bool) and not 1 <= k <= n_labels:
        raise ValueError(f"k={k!r} must be in 1..{n_labels} (the number of labels)")
    k = jnp.asarray(k)
    if not jnp.issubdtype(k.dtype, jnp.integer) or k.ndim > 1:
        raise TypeError(f"k must be an int or an (N,) integer array, got {k.dtype} {k.shape}")
    if k.ndim == 1:
        k = k[:, None]
    return (rank < k).astype(jnp.int32)


def label_metrics(pred: ArrayLike, labels: ArrayLike) -> dict[str, Array]:
    """``exact_match`` (every label right) and pooled ``micro_f1`` of decisions (N, L).

    Args:
        pred: (N, L) 0/1 decisions.
        labels: (N, L) 0/1 true labels.

    Returns:
        ``{"exact_match": scalar, "micro_f1": scalar}``.
    """
    pred, truth = jnp.asarray(pred, jnp.int32), jnp.asarray(labels, jnp.int32)
    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(f"pred {pred.shape} and labels {truth.shape} must both be (N, L)")
    tp = jnp.sum(pred * truth)
    fp = jnp.sum(pred * (1 - truth))
    fn = jnp.sum((1 - pred) * truth)
    return {"exact_match": jnp.mean(jnp.all(pred == truth, axis=-1)),
            "micro_f1": 2 * tp / jnp.maximum(2 * tp + fp + fn, 1)}


def estimator_health(vg: Callable, params: PyTree, *args, calls: int = 1000, batch: int = 100,
                     seed: int = 0) -> dict[str, int]:
    """How often an estimator returns a non-finite estimate, over ``calls`` keys.

    Args:
        vg: a zeroth-order estimator with ``with_info`` (:mod:`fold_jax.estimators.zo`).
        params, args: what it is called on.
        calls: keys drawn (a multiple of ``batch``).
        batch: calls vmapped at once.
        seed: seed of the keys.

    Returns:
        ``non_finite`` (calls whose value or any gradient entry is NaN or inf),
        ``dropped_directions`` (perturbed evaluations dropped, summed over calls) and
        ``calls``.
    """
    if calls % batch:
        raise ValueError(f"calls={calls} must be a multiple of batch={batch}")

    def one(key):
        value, grads, info = vg.with_info(params, key, *args)
        finite = jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
        return ~(jnp.isfinite(value) & jnp.all(finite)), info["dropped_directions"]

    keys = jax.random.split(jax.random.key(seed), calls).reshape(-1, batch)
    bad, dropped = jax.jit(lambda ks: jax.lax.map(jax.vmap(one), ks))(keys)
    return {"non_finite": int(jnp.sum(bad)), "dropped_directions": int(jnp.sum(dropped)),
            "calls": calls}
