"""The built-in tasks: real data shipped offline (sklearn's bundled ``digits`` and
``breast_cancer``, and ``digit_attributes`` derived from digits), synthetic sets
(``spirals``, ``teacher``), each built by :func:`fold_jax.learn.tasks_arrays.from_arrays`, and
the optimizer test functions (sphere, rosenbrock, rastrigin) as
:class:`~fold_jax.learn.tasks_types.Objective` builders. :mod:`fold_jax.learn.tasks` registers them
under their names (``tasks.get("digits")``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from fold_jax.checks import check_finite, check_int, check_positive
from fold_jax.learn.tasks_arrays import check_seed, from_arrays
from fold_jax.learn.tasks_types import Objective, Task

__all__ = [
    "DIGIT_ATTRIBUTES",
    "DIGIT_ATTRIBUTE_TABLE",
    "breast_cancer",
    "digit_attributes",
    "digits",
    "objective_builder",
    "rastrigin",
    "rosenbrock",
    "sphere",
    "spirals",
    "teacher",
]


DIGIT_ATTRIBUTES = ("even", "at_least_5", "prime", "closed_loop")
DIGIT_ATTRIBUTE_TABLE = np.array(
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


@functools.cache
def _digits_raw():
    from sklearn import datasets as skdata  # here: sklearn costs ~1 s at import

    d = skdata.load_digits()
    return d.data.astype(np.float64), d.target.astype(np.int32)


def digits(seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.1) -> Task:
    """sklearn's 8x8 handwritten digits: 1797 images, 64 features, 10 classes.

    Args:
        seed: the split seed (an int in 0..2**32 - 1).
        test_fraction: share of the examples in the test split.
        val_fraction: share of the examples in the validation split.

    Returns:
        The multiclass :class:`~fold_jax.learn.tasks_types.Task`.
    """
    x, y = _digits_raw()
    return from_arrays(x, y, kind="multiclass", name="digits", test_fraction=test_fraction,
                       val_fraction=val_fraction, seed=seed,
                       label_names=tuple(str(i) for i in range(10)))


def breast_cancer(seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.1) -> Task:
    """sklearn's Wisconsin breast cancer: 569 samples, 30 features, binary.

    Args:
        seed: the split seed (an int in 0..2**32 - 1).
        test_fraction: share of the examples in the test split.
        val_fraction: share of the examples in the validation split.

    Returns:
        The binary :class:`~fold_jax.learn.tasks_types.Task`.
    """
    from sklearn import datasets as skdata  # here: sklearn costs ~1 s at import

    d = skdata.load_breast_cancer()
    return from_arrays(d.data, d.target.astype(np.int32), kind="binary", name="breast_cancer",
                       test_fraction=test_fraction, val_fraction=val_fraction, seed=seed,
                       label_names=("malignant", "benign"))


def digit_attributes(seed: int = 0, test_fraction: float = 0.2,
                     val_fraction: float = 0.1) -> Task:
    """Digits images with 4 attribute labels derived from the class: even, >= 5,
    prime, has a closed loop (0, 6, 8, 9). Multilabel: labels (N, 4) in {0, 1}; split
    stratified by the digit class (the same examples as ``digits``).

    Args:
        seed: the split seed (an int in 0..2**32 - 1).
        test_fraction: share of the examples in the test split.
        val_fraction: share of the examples in the validation split.

    Returns:
        The multilabel :class:`~fold_jax.learn.tasks_types.Task`.
    """
    x, y = _digits_raw()
    return from_arrays(x, DIGIT_ATTRIBUTE_TABLE[y], kind="multilabel", name="digit_attributes",
                       test_fraction=test_fraction, val_fraction=val_fraction, seed=seed,
                       label_names=DIGIT_ATTRIBUTES, stratify=y)


def spirals(seed: int = 0, test_fraction: float = 0.2, n_samples: int = 1000,
            noise: float = 0.2, turns: float = 1.5, val_fraction: float = 0.1) -> Task:
    """Two interleaved 2-D spirals (binary), generated from ``seed``.

    Args:
        seed: the split seed (an int in 0..2**32 - 1).
        test_fraction: share of the examples in the test split.
        val_fraction: share of the examples in the validation split.
        n_samples: examples (>= 10; an odd count loses one).
        noise: standard deviation of the Gaussian jitter (>= 0), in arm widths.
        turns: turns of each arm (positive).

    Returns:
        The binary :class:`~fold_jax.learn.tasks_types.Task`.
    """
    n_samples = check_int(n_samples, "n_samples", 10)
    if check_finite(noise, "noise") < 0:
        raise ValueError(f"noise={noise!r} must be >= 0")
    noise, turns = float(noise), check_positive(turns, "turns")
    seed = check_seed(seed)
    rng = np.random.default_rng(seed)
    n = n_samples // 2
    t = np.sqrt(rng.uniform(0.05, 1.0, n)) * turns * 2 * np.pi
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (turns * 2 * np.pi)
    x = np.concatenate([arm, -arm]) + noise * rng.normal(size=(2 * n, 2)) / (turns * 2)
    y = np.concatenate([np.zeros(n), np.ones(n)]).astype(np.int32)
    return from_arrays(x, y, kind="binary", name="spirals", test_fraction=test_fraction,
                       val_fraction=val_fraction, seed=seed, label_names=("arm_0", "arm_1"))


def teacher(seed: int = 0, test_fraction: float = 0.2, n_samples: int = 2000,
            n_features: int = 20, n_classes: int = 4, hidden: int = 32,
            val_fraction: float = 0.1) -> Task:
    """Teacher-student: labels are the argmax of a random tanh teacher net on N(0, I)
    (plain shuffled splits, as the task always had).

    Args:
        seed: the split seed (an int in 0..2**32 - 1).
        test_fraction: share of the examples in the test split.
        val_fraction: share of the examples in the validation split.
        n_samples: examples (>= 10).
        n_features: input features.
        n_classes: classes (>= 2).
        hidden: the teacher's hidden width.

    Returns:
        The multiclass :class:`~fold_jax.learn.tasks_types.Task`.
    """
    n_samples = check_int(n_samples, "n_samples", 10)
    n_features = check_int(n_features, "n_features")
    n_classes = check_int(n_classes, "n_classes", 2)
    hidden = check_int(hidden, "hidden")
    seed = check_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_samples, n_features))
    w1 = rng.normal(size=(n_features, hidden)) / np.sqrt(n_features)
    w2 = rng.normal(size=(hidden, n_classes)) / np.sqrt(hidden)
    y = np.argmax(np.tanh(x @ w1) @ w2, axis=1).astype(np.int32)
    return from_arrays(x, y, kind="multiclass", name="teacher", test_fraction=test_fraction,
                       val_fraction=val_fraction, seed=seed, stratify=False,
                       label_names=tuple(str(i) for i in range(n_classes)))


# --------------------------------------------------------------------------- objectives


def objective_builder(name: str, fn: Callable[[Array], Array], x0_value: float,
                      star_value: float) -> Callable[..., Objective]:
    """The builder ``make(dim=10) -> Objective`` of a test function.

    Args:
        name: the objective's name.
        fn: ``fn(x (..., dim)) -> (...)``.
        x0_value: every coordinate of the starting point.
        star_value: every coordinate of the minimizer.

    Returns:
        ``make(dim)``, checking ``dim``.
    """
    def make(dim: int = 10) -> Objective:
        check_int(dim, "dim")
        if name == "rosenbrock" and dim < 2:
            raise ValueError(f"dim={dim!r}: rosenbrock needs dim >= 2")
        return Objective(name, dim, fn, jnp.full((dim,), x0_value, jnp.float32),
                         jnp.full((dim,), star_value, jnp.float32))

    make.__doc__ = f"The {name} test function in ``dim`` dimensions."
    return make


def sphere(x: Array) -> Array:
    """The sphere function ``sum x_i^2``.

    Args:
        x: (..., dim) points.

    Returns:
        (...) values.
    """
    return jnp.sum(x**2, axis=-1)


def rosenbrock(x: Array) -> Array:
    """The rosenbrock function ``sum 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2``.

    Args:
        x: (..., dim) points.

    Returns:
        (...) values.
    """
    return jnp.sum(100.0 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1.0 - x[..., :-1]) ** 2,
                   axis=-1)


def rastrigin(x: Array) -> Array:
    """The rastrigin function ``10 d + sum x_i^2 - 10 cos(2 pi x_i)``.

    Args:
        x: (..., dim) points.

    Returns:
        (...) values.
    """
    return 10.0 * x.shape[-1] + jnp.sum(x**2 - 10.0 * jnp.cos(2 * jnp.pi * x), axis=-1)
