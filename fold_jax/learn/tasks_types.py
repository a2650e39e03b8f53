"""The task types: :class:`Task` (a supervised data set with its head, its splits, its
loss and its metrics) and :class:`Objective` (a test function with a known minimum).
Re-exported by :mod:`fold_jax.learn.tasks`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PyTree

from fold_jax.checks import check_choice
from fold_jax.learn.heads import KINDS, Head

__all__ = ["SPLITS", "Objective", "Task"]

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """A supervised data set with its head. x: (N, features) float32; y per head kind.

    Labels: binary (N,) int in {0, 1}; multiclass (N,) int class ids; multilabel (N, L)
    int in {0, 1}; regression (N,) or (N, T) float32 targets. ``x_val``/``y_val`` hold
    the validation split (None when the task has none). ``x_mean``/``x_scale`` are the
    training split's feature statistics the features were standardized with (None when
    they were not): :meth:`transform` applies them to new raw features.
    """

    name: str
    kind: str
    x_train: Array
    y_train: Array
    x_test: Array
    y_test: Array
    label_names: tuple[str, ...] = ()
    x_val: Array | None = None
    y_val: Array | None = None
    x_mean: Array | None = None
    x_scale: Array | None = None

    def __post_init__(self):
        check_choice(self.kind, "kind", KINDS)
        if (self.x_val is None) != (self.y_val is None):
            raise ValueError("x_val and y_val must be given together (or both None)")
        if (self.x_mean is None) != (self.x_scale is None):
            raise ValueError("x_mean and x_scale must be given together (or both None)")

    @property
    def head(self) -> Head:
        return Head(self.kind)

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[-1])

    @property
    def n_outputs(self) -> int:
        """Outputs the net needs: 1 (binary), classes (multiclass: ``len(label_names)``,
        or the largest label + 1 when there are no names), labels or targets."""
        if self.kind == "binary":
            return 1
        if self.kind in ("multilabel", "regression"):
            return int(self.y_train.shape[-1]) if jnp.ndim(self.y_train) == 2 else 1
        if self.label_names:
            return len(self.label_names)
        labels = [y for y in (self.y_train, self.y_val, self.y_test)
                  if y is not None and jnp.size(y)]
        return max(int(jnp.max(y)) for y in labels) + 1 if labels else 0

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_val(self) -> int:
        return 0 if self.x_val is None else int(self.x_val.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    def split(self, split: str) -> tuple[Array, Array]:
        """``(x, y)`` of ``split``: "train", "val" or "test".

        Raises:
            ValueError: an unknown split, or "val" for a task without one.
        """
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; allowed: {list(SPLITS)}")
        if split == "val" and self.x_val is None:
            raise ValueError(f"split='val': task {self.name!r} has no validation split "
                             f"(build it with from_arrays(..., val_fraction > 0))")
        return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")

    def transform(self, x: ArrayLike) -> Array:
        """Raw features (N, features) standardized as the task's were: float32.

        Args:
            x: raw features, (N, n_features).

        Returns:
            ``(x - x_mean) / x_scale`` as float32 (x as float32 when not standardized).

        Raises:
            ValueError: x with another number of features.
        """
        x = jnp.asarray(x, jnp.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"x has shape {x.shape}; task {self.name!r} needs "
                             f"(N, {self.n_features})")
        if self.x_mean is None or self.x_scale is None:
            return x
        return ((x - self.x_mean) / self.x_scale).astype(jnp.float32)

    def loss_fn(self, apply: Callable[[PyTree, Array], Array]) -> Callable:
        """``loss(params, x, y)``: the head's mean loss of ``apply(params, x)``."""

        def loss(params: PyTree, x: ArrayLike, y: ArrayLike) -> Array:
            return self.head.loss(apply(params, x), y)

        return loss

    def evaluate(
        self,
        apply: Callable[[PyTree, Array], Array],
        params: PyTree,
        split: str = "test",
        threshold: float = 0.5,
    ) -> dict[str, float]:
        """Head metrics of ``apply(params, x)`` on the whole ``split`` ("train", "val"
        or "test"); tune on "val", report "test"."""
        x, y = self.split(split)
        metrics = self.head.metrics(apply(params, x), y, threshold)
        return {k: float(v) for k, v in metrics.items()}


@dataclasses.dataclass(frozen=True, eq=False)
class Objective:
    """A test function f: R^dim -> R with known minimum ``f(x_star) = 0``."""

    name: str
    dim: int
    fn: Callable[[Array], Array]
    x0: Array
    x_star: Array

    def __call__(self, x: ArrayLike) -> Array:
        """f(x) for x (..., dim), one value per point (...); NaN/inf in x propagate."""
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"x has shape {x.shape}; {self.name} needs (..., dim={self.dim})")
        return self.fn(x)
