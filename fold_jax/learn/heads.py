"""Output heads: how outputs become a loss, probabilities, predictions and metrics.

- binary: one logit, sigmoid, optax.sigmoid_binary_cross_entropy; accuracy.
- multiclass: softmax over classes, integer labels, softmax cross-entropy; accuracy.
- multilabel: one independent sigmoid per label, binary cross-entropy summed over
  labels; a label is on when its probability >= ``threshold``; ``accuracy`` is the
  exact-match rate (every label right) and ``micro_f1`` pools all label decisions.
- regression: real targets, the outputs are the predictions; the loss is the mean
  squared error over every target entry; metrics ``mse`` (= loss), ``rmse`` and ``r2``
  (the coefficient of determination of each target column, averaged over columns, as
  ``sklearn.metrics.r2_score``; 1.0 for a constant column predicted exactly, else 0.0).

Metric direction: :func:`higher_is_better` says which way a metric improves
(accuracy, micro_f1, r2 and a control task's return up; loss, mse, rmse and an
objective's value down).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike

from fold_jax.checks import check_choice, check_finite

__all__ = ["KINDS", "LOWER_IS_BETTER", "METRICS", "Head", "higher_is_better"]

KINDS = ("binary", "multiclass", "multilabel", "regression")
METRICS: dict[str, tuple[str, ...]] = {  # what Head.metrics returns, per kind
    "binary": ("loss", "accuracy"),
    "multiclass": ("loss", "accuracy"),
    "multilabel": ("loss", "accuracy", "micro_f1"),
    "regression": ("loss", "mse", "rmse", "r2"),
}
LOWER_IS_BETTER = frozenset({"loss", "mse", "rmse", "value", "bits_per_char"})  # value: Objective
_HIGHER_IS_BETTER = frozenset({"accuracy", "micro_f1", "r2", "return"})  # "return": control


def higher_is_better(metric: str) -> bool:
    """Whether ``metric`` improves upwards (accuracy, micro_f1, r2, return) or downwards (loss,
    mse, rmse, value).

    Args:
        metric: a metric name, optionally with a split prefix ("test_r2").

    Returns:
        True for accuracy-like metrics and r2, False for losses and errors.

    Raises:
        ValueError: an unknown metric name, listing the known ones.
    """
    if not isinstance(metric, str):
        raise ValueError(f"metric={metric!r} is not known; allowed: "
                         f"{sorted(LOWER_IS_BETTER | _HIGHER_IS_BETTER)}")
    name = metric.split("_", 1)[1] if metric.startswith(("train_", "val_", "test_")) else metric
    if name in _HIGHER_IS_BETTER:
        return True
    if name in LOWER_IS_BETTER:
        return False
    raise ValueError(f"metric={metric!r} is not known; allowed: "
                     f"{sorted(LOWER_IS_BETTER | _HIGHER_IS_BETTER)}")


def _check_threshold(threshold: float) -> float:
    try:  # Python, NumPy or concrete JAX numbers; bools never count
        value = check_finite(threshold, "threshold")
    except ValueError:
        value = math.nan
    if not 0.0 < value < 1.0:
        raise ValueError(f"threshold={threshold!r} must be a number in (0, 1)")
    return value


@dataclasses.dataclass(frozen=True)
class Head:
    """The head of a task kind; outputs (logits) are (N, outputs), labels as the kind
    expects.

    Labels: binary (N,) in {0, 1}; multiclass (N,) int class ids; multilabel
    (N, L) in {0, 1}; regression (N, T) real targets, or (N,) for one target
    (then the outputs are (N, 1)).
    """

    kind: str

    def __post_init__(self):
        check_choice(self.kind, "kind", KINDS)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The keys of :meth:`metrics` for this kind (``METRICS[kind]``)."""
        return METRICS[self.kind]

    @property
    def default_metric(self) -> str:
        """The metric a run targets by default: "r2" for regression, else "accuracy"."""
        return "r2" if self.kind == "regression" else "accuracy"

    def _check(self, logits: ArrayLike, labels: ArrayLike | None = None) -> Array:
        """Static shape checks (free under jit): a clear error instead of a broadcast."""
        logits = jnp.asarray(logits)
        if logits.ndim != 2 or logits.shape[0] == 0:
            raise ValueError(f"logits has shape {logits.shape}; a {self.kind} head needs "
                             "(N, outputs) with N >= 1")
        if self.kind == "binary" and logits.shape[1] != 1:
            raise ValueError(f"logits has shape {logits.shape}; a binary head needs (N, 1)")
        if labels is not None:
            shape = jnp.shape(labels)
            if self.kind == "regression":
                ok = shape == logits.shape or (shape == logits.shape[:1]
                                               and logits.shape[1] == 1)
                if not ok:
                    raise ValueError(f"labels has shape {shape}; for outputs {logits.shape} a "
                                     f"regression head needs {logits.shape}"
                                     + (f" or {logits.shape[:1]}" if logits.shape[1] == 1
                                        else ""))
                return logits
            want = logits.shape if self.kind == "multilabel" else logits.shape[:1]
            if shape != want:
                raise ValueError(f"labels has shape {shape}; for logits "
                                 f"{logits.shape} a {self.kind} head needs {want}")
        return logits

    def _targets(self, logits: Array, labels: ArrayLike) -> tuple[Array, Array]:
        """Regression outputs and targets, both (N, T) floating (no broadcasting)."""
        logits = self._check(logits, labels)
        labels = jnp.asarray(labels)
        if not jnp.issubdtype(labels.dtype, jnp.inexact):
            labels = labels.astype(jnp.float32)
        return logits, labels.reshape(logits.shape)

    def loss(self, logits: ArrayLike, labels: ArrayLike) -> Array:
        """Mean loss over the batch (multilabel: summed over labels first; regression:
        the mean squared error over every entry)."""
        if self.kind == "regression":
            pred, target = self._targets(logits, labels)
            return jnp.mean((pred - target) ** 2)
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
        """Probabilities: sigmoid per output (binary, multilabel) or softmax (multiclass).

        Raises:
            ValueError: for a regression head (its outputs are values, not scores).
        """
        if self.kind == "regression":
            raise ValueError("kind='regression' has no probabilities: its outputs are the "
                             "predicted values (use predict)")
        if self.kind == "multiclass":
            return jax.nn.softmax(logits, axis=-1)
        return jax.nn.sigmoid(logits)

    def predict(self, logits: ArrayLike, threshold: float = 0.5) -> Array:
        """Hard predictions shaped like the labels (regression: the outputs, (N, T))."""
        threshold = _check_threshold(threshold)
        logits = self._check(logits)
        if self.kind == "regression":
            return logits
        if self.kind == "multiclass":
            return jnp.argmax(logits, axis=-1)
        on = (self.probs(logits) >= threshold).astype(jnp.int32)
        return on[..., 0] if self.kind == "binary" else on

    def metrics(
        self, logits: ArrayLike, labels: ArrayLike, threshold: float = 0.5
    ) -> dict[str, Array]:
        """The kind's ``METRICS``: ``loss`` and ``accuracy`` (exact match for multilabel,
        plus ``micro_f1``); regression ``loss`` (MSE), ``mse``, ``rmse``, ``r2``."""
        if self.kind == "regression":
            return self._regression_metrics(logits, labels)
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

    def _regression_metrics(self, logits: ArrayLike, labels: ArrayLike) -> dict[str, Array]:
        """MSE, RMSE and R^2 (per target column, averaged, as sklearn's r2_score)."""
        pred, target = self._targets(logits, labels)
        mse = jnp.mean((pred - target) ** 2)
        ss_res = jnp.sum((target - pred) ** 2, axis=0)
        ss_tot = jnp.sum((target - jnp.mean(target, axis=0)) ** 2, axis=0)
        exact = jnp.where(ss_res == 0, 1.0, 0.0)  # a constant column: sklearn's convention
        r2 = jnp.where(ss_tot > 0, 1.0 - ss_res / jnp.where(ss_tot > 0, ss_tot, 1.0), exact)
        return {"loss": mse, "mse": mse, "rmse": jnp.sqrt(mse), "r2": jnp.mean(r2)}
