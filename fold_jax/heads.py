"""Output heads: how logits become a loss, probabilities, predictions and metrics.

- binary: one logit, sigmoid, optax.sigmoid_binary_cross_entropy; accuracy.
- multiclass: softmax over classes, integer labels, softmax cross-entropy; accuracy.
- multilabel: one independent sigmoid per label, binary cross-entropy summed over
  labels; a label is on when its probability >= ``threshold``; ``accuracy`` is the
  exact-match rate (every label right) and ``micro_f1`` pools all label decisions.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike

__all__ = ["KINDS", "Head"]

KINDS = ("binary", "multiclass", "multilabel")


def _check_threshold(threshold: float) -> float:
    if not isinstance(threshold, int | float) or not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold={threshold!r} must be a number in (0, 1)")
    return float(threshold)


@dataclasses.dataclass(frozen=True)
class Head:
    """The head of a task kind; logits are (N, outputs), labels as the kind expects.

    Labels: binary (N,) in {0, 1}; multiclass (N,) int class ids; multilabel
    (N, L) in {0, 1}.
    """

    kind: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not known; allowed: {list(KINDS)}")

    def _check(self, logits: ArrayLike, labels: ArrayLike | None = None) -> Array:
        """Static shape checks (free under jit): a clear error instead of a broadcast."""
        logits = jnp.asarray(logits)
        if logits.ndim != 2 or logits.shape[0] == 0:
            raise ValueError(f"logits has shape {logits.shape}; a {self.kind} head needs "
                             "(N, outputs) with N >= 1")
        if self.kind == "binary" and logits.shape[1] != 1:
            raise ValueError(f"logits has shape {logits.shape}; a binary head needs (N, 1)")
        if labels is not None:
            want = logits.shape if self.kind == "multilabel" else logits.shape[:1]
            if jnp.shape(labels) != want:
                raise ValueError(f"labels has shape {jnp.shape(labels)}; for logits "
                                 f"{logits.shape} a {self.kind} head needs {want}")
        return logits

    def loss(self, logits: ArrayLike, labels: ArrayLike) -> Array:
        """Mean loss over the batch (multilabel: summed over labels first)."""
        logits = self._check(logits, labels)
        if self.kind == "binary":
            return optax.sigmoid_binary_cross_entropy(logits[..., 0], labels).mean()
        if self.kind == "multiclass":
            if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
                raise TypeError(f"labels must be integer class indices for a multiclass head, "
                                f"got dtype {jnp.result_type(labels)}")
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return optax.sigmoid_binary_cross_entropy(logits, labels).sum(-1).mean()

    def probs(self, logits: ArrayLike) -> Array:
        """Probabilities: sigmoid per output (binary, multilabel) or softmax (multiclass)."""
        if self.kind == "multiclass":
            return jax.nn.softmax(logits, axis=-1)
        return jax.nn.sigmoid(logits)

    def predict(self, logits: ArrayLike, threshold: float = 0.5) -> Array:
        """Hard predictions shaped like the labels."""
        threshold = _check_threshold(threshold)
        logits = self._check(logits)
        if self.kind == "multiclass":
            return jnp.argmax(logits, axis=-1)
        on = (self.probs(logits) >= threshold).astype(jnp.int32)
        return on[..., 0] if self.kind == "binary" else on

    def metrics(
        self, logits: ArrayLike, labels: ArrayLike, threshold: float = 0.5
    ) -> dict[str, Array]:
        """``loss`` and ``accuracy`` (exact match for multilabel), plus ``micro_f1``."""
        pred = self.predict(logits, threshold)
        labels = jnp.asarray(labels)
        out = {"loss": self.loss(logits, labels)}
        if self.kind != "multilabel":
            out["accuracy"] = jnp.mean(pred == labels)
            return out
        truth = labels.astype(jnp.int32)
        out["accuracy"] = jnp.mean(jnp.all(pred == truth, axis=-1))
        tp = jnp.sum(pred * truth)
        fp = jnp.sum(pred * (1 - truth))
        fn = jnp.sum((1 - pred) * truth)
        out["micro_f1"] = 2 * tp / jnp.maximum(2 * tp + fp + fn, 1)
        return out
