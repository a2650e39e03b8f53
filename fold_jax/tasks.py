"""Tasks: real data shipped offline, synthetic sets and optimizer test functions.

Every data task knows its kind and hence its head (:class:`fold_jax.heads.Head`).
Splits are fixed by ``seed`` (stratified where labels allow) and features are
standardized with statistics of the training split only. Nothing is downloaded:
``digits`` and ``breast_cancer`` are the copies bundled inside scikit-learn.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PyTree
from sklearn import datasets as skdata
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from fold_jax.checks import check_int
from fold_jax.heads import Head

__all__ = ["Objective", "Task", "get", "names"]

DIGIT_ATTRIBUTES = ("even", "at_least_5", "prime", "closed_loop")
_ATTRIBUTE_TABLE = np.array(
    # even, >= 5, prime, closed loop -- rows are digits 0..9
    [
        [1, 0, 0, 1],
        [0, 0, 0, 0],
        [1, 0, 1, 0],
        [0, 0, 1, 0],
        [1, 0, 0, 0],
        [0, 1, 1, 0],
        [1, 1, 0, 1],
        [0, 1, 1, 0],
        [1, 1, 0, 1],
        [0, 1, 0, 1],
    ],
    dtype=np.int32,
)


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """A supervised data set with its head. x: (N, features) float32; y per head kind."""

    name: str
    kind: str
    x_train: Array
    y_train: Array
    x_test: Array
    y_test: Array
    label_names: tuple[str, ...] = ()

    @property
    def head(self) -> Head:
        return Head(self.kind)

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[-1])

    @property
    def n_outputs(self) -> int:
        if self.kind == "binary":
            return 1
        if self.kind == "multilabel":
            return int(self.y_train.shape[-1])
        return len(self.label_names)

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

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
        """Head metrics of ``apply(params, x)`` on the whole ``split`` ("train" or "test")."""
        if split not in ("train", "test"):
            raise ValueError(f"split={split!r}; allowed: ['test', 'train']")
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
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
        """f(x) for x (..., dim); NaN/inf in x propagate to the value."""
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"x has shape {x.shape}; {self.name} needs (..., dim={self.dim})")
        return self.fn(x)


def _split(x, y, *, seed: int, test_fraction: float, stratify, name: str, kind: str,
           label_names: tuple[str, ...]) -> Task:
    """Seeded split (stratified by ``stratify`` labels unless None), train-fit scaling."""
    if not isinstance(test_fraction, float | int) or not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r} must be in (0, 1)")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=int(seed), stratify=stratify
    )
    scaler = StandardScaler().fit(x_tr)
    f32 = lambda a: jnp.asarray(scaler.transform(a), jnp.float32)  # noqa: E731
    return Task(name, kind, f32(x_tr), jnp.asarray(y_tr), f32(x_te), jnp.asarray(y_te),
                label_names)


@functools.cache
def _digits_raw():
    d = skdata.load_digits()
    return d.data.astype(np.float64), d.target.astype(np.int32)


def digits(seed: int = 0, test_fraction: float = 0.2) -> Task:
    """sklearn's 8x8 handwritten digits: 1797 images, 64 features, 10 classes."""
    x, y = _digits_raw()
    return _split(x, y, seed=seed, test_fraction=test_fraction, stratify=y, name="digits",
                  kind="multiclass", label_names=tuple(str(i) for i in range(10)))


def breast_cancer(seed: int = 0, test_fraction: float = 0.2) -> Task:
    """sklearn's Wisconsin breast cancer: 569 samples, 30 features, binary."""
    d = skdata.load_breast_cancer()
    return _split(d.data, d.target.astype(np.int32), seed=seed, test_fraction=test_fraction,
                  stratify=d.target, name="breast_cancer", kind="binary",
                  label_names=("malignant", "benign"))


def digit_attributes(seed: int = 0, test_fraction: float = 0.2) -> Task:
    """Digits images with 4 attribute labels derived from the class: even, >= 5,
    prime, has a closed loop (0, 6, 8, 9). Multilabel: labels (N, 4) in {0, 1}."""
    x, y = _digits_raw()
    return _split(x, _ATTRIBUTE_TABLE[y], seed=seed, test_fraction=test_fraction, stratify=y,
                  name="digit_attributes", kind="multilabel", label_names=DIGIT_ATTRIBUTES)


def spirals(seed: int = 0, test_fraction: float = 0.2, n_samples: int = 1000,
            noise: float = 0.2, turns: float = 1.5) -> Task:
    """Two interleaved 2-D spirals (binary), generated from ``seed``."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 10:
        raise ValueError(f"n_samples={n_samples!r} must be an int >= 10")
    if not noise >= 0:
        raise ValueError(f"noise={noise!r} must be >= 0")
    rng = np.random.default_rng(seed)
    n = n_samples // 2
    t = np.sqrt(rng.uniform(0.05, 1.0, n)) * turns * 2 * np.pi
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (turns * 2 * np.pi)
    x = np.concatenate([arm, -arm]) + noise * rng.normal(size=(2 * n, 2)) / (turns * 2)
    y = np.concatenate([np.zeros(n), np.ones(n)]).astype(np.int32)
    return _split(x, y, seed=seed, test_fraction=test_fraction, stratify=y, name="spirals",
                  kind="binary", label_names=("arm_0", "arm_1"))


def teacher(seed: int = 0, test_fraction: float = 0.2, n_samples: int = 2000,
            n_features: int = 20, n_classes: int = 4, hidden: int = 32) -> Task:
    """Teacher-student: labels are the argmax of a random tanh teacher net on N(0, I)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_samples, n_features))
    w1 = rng.normal(size=(n_features, hidden)) / np.sqrt(n_features)
    w2 = rng.normal(size=(hidden, n_classes)) / np.sqrt(hidden)
    y = np.argmax(np.tanh(x @ w1) @ w2, axis=1).astype(np.int32)
    return _split(x, y, seed=seed, test_fraction=test_fraction, stratify=None, name="teacher",
                  kind="multiclass", label_names=tuple(str(i) for i in range(n_classes)))


def _objective(name: str, fn, x0_value: float, star_value: float):
    def make(dim: int = 10) -> Objective:
        check_int(dim, "dim")
        if name == "rosenbrock" and dim < 2:
            raise ValueError(f"dim={dim!r}: rosenbrock needs dim >= 2")
        return Objective(name, dim, fn, jnp.full((dim,), x0_value, jnp.float32),
                         jnp.full((dim,), star_value, jnp.float32))

    make.__doc__ = f"The {name} test function in ``dim`` dimensions."
    return make


def _sphere(x):
    return jnp.sum(x**2)


def _rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _rastrigin(x):
    return 10.0 * x.shape[-1] + jnp.sum(x**2 - 10.0 * jnp.cos(2 * jnp.pi * x))


_REGISTRY: dict[str, Callable[..., Task | Objective]] = {
    "digits": digits,
    "breast_cancer": breast_cancer,
    "digit_attributes": digit_attributes,
    "spirals": spirals,
    "teacher": teacher,
    "sphere": _objective("sphere", _sphere, 1.0, 0.0),
    "rosenbrock": _objective("rosenbrock", _rosenbrock, -1.0, 1.0),
    "rastrigin": _objective("rastrigin", _rastrigin, 2.5, 0.0),
}


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str, **options) -> Task | Objective:
    """The task called ``name`` built with ``options`` (seed, test_fraction, dim, ...)."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"task name={name!r} is not known; allowed: {names()}")
    make = _REGISTRY[name]
    allowed = set(inspect.signature(make).parameters)
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"task {name!r} got unknown options {sorted(unknown)}; "
                         f"allowed: {sorted(allowed)}")
    return make(**options)
