"""Tasks: your own arrays, real data shipped offline, synthetic sets and optimizer test
functions.

Every data task knows its kind and hence its head (:class:`fold_jax.heads.Head`):
binary, multiclass, multilabel or regression. :func:`from_arrays` turns any ``(x, y)``
into a :class:`Task`, and every built-in data task is built by it: the data is checked
(shapes, NaN/inf, label ranges), split by ``seed`` into train / validation / test
(stratified by class where labels allow), and features are standardized with
statistics of the training split only. The validation split is for tuning (score trials
on it); the test split is for final numbers. Nothing is downloaded: ``digits`` and
``breast_cancer`` are the copies bundled inside scikit-learn.

The test split is drawn first, exactly as versions without a validation split drew it
(``sklearn.model_selection.train_test_split(..., test_size=test_fraction,
random_state=seed, stratify=...)``), so a seed's test examples are unchanged; the
validation split is then carved out of the rest.

Control tasks (:mod:`fold_jax.control`): :func:`get` also takes the control names
(``CONTROL_NAMES``: "cartpole", "acrobot", "pendulum", ...) and any gymnax environment
id ("MountainCar-v0", :func:`fold_jax.control.env_ids`), giving a
:class:`~fold_jax.control.ControlTask` (options: those of
:func:`fold_jax.control.make`).

Typing: :func:`get` is overloaded on the literal name (a data-task name gives a
``Task``, an objective's name an ``Objective``, a control name a ``ControlTask``);
:func:`dataset` and :func:`objective` take any string and always return one type.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args, overload

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PyTree
from sklearn import datasets as skdata
from sklearn.model_selection import train_test_split

from fold_jax import control
from fold_jax.checks import check_bool, check_choice, check_finite, check_int, check_positive
from fold_jax.control import ControlTask
from fold_jax.heads import KINDS, Head

__all__ = [
    "CONTROL_NAMES",
    "OBJECTIVE_NAMES",
    "TASK_NAMES",
    "ControlName",
    "Objective",
    "ObjectiveName",
    "Task",
    "TaskName",
    "dataset",
    "from_arrays",
    "get",
    "names",
    "objective",
    "register",
]

TaskName = Literal["digits", "breast_cancer", "digit_attributes", "spirals", "teacher",
                   "shakespeare", "milton"]
ObjectiveName = Literal["sphere", "rosenbrock", "rastrigin"]
ControlName = Literal["acrobot", "breakout_minatar", "cartpole", "cartpole_po",
                      "memory_chain", "mountain_car", "pendulum"]
TASK_NAMES: tuple[str, ...] = get_args(TaskName)
CONTROL_NAMES: tuple[str, ...] = get_args(ControlName)  # fold_jax.control.ALIASES
OBJECTIVE_NAMES: tuple[str, ...] = get_args(ObjectiveName)

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
_SPLITS = ("train", "val", "test")


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
        if split not in _SPLITS:
            raise ValueError(f"split={split!r}; allowed: {list(_SPLITS)}")
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


# ------------------------------------------------------------------ from_arrays checks


def _check_fraction(value: Any, argument: str, low_open: bool) -> float:
    """``value`` as a float in (0, 1) (``low_open``) or [0, 1); ValueError naming it."""
    ok = (isinstance(value, int | float | np.integer | np.floating)
          and not isinstance(value, bool | np.bool_) and math.isfinite(value)
          and (0.0 < value if low_open else 0.0 <= value) and value < 1.0)
    if not ok:
        interval = "(0, 1)" if low_open else "[0, 1)"
        raise ValueError(f"{argument}={value!r} must be a number in {interval}")
    return value if isinstance(value, float) else float(value)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool | np.bool_) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed={seed!r} must be in 0..2**32 - 1")
    return int(seed)


def _as_numeric(a: Any, argument: str) -> np.ndarray:
    """``a`` as a NumPy array of bool, int or real dtype; TypeError naming it otherwise."""
    try:
        out = np.asarray(a)
    except Exception as error:  # ragged lists and the like
        raise TypeError(f"{argument} must be an array of numbers: {error}") from error
    if out.dtype.kind not in "biuf":
        raise TypeError(f"{argument} has dtype {out.dtype}; it must hold numbers (bool, int "
                        f"or float)" + (": encode class names as ints 0..C-1, e.g. with "
                                        "np.unique(y, return_inverse=True), and pass "
                                        "label_names" if argument == "y" else ""))
    return out


def _check_finite_array(a: np.ndarray, argument: str) -> None:
    if a.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(a)))
        if bad:
            raise ValueError(f"{argument} has {bad} non-finite entries (NaN or inf) out of "
                             f"{a.size}: clean or impute them first")


def _integer_labels(y: np.ndarray, argument: str = "y") -> np.ndarray:
    """``y`` as int64, ValueError naming the first value that is not a whole number."""
    if y.dtype.kind == "f":
        frac = y != np.round(y)
        if frac.any():
            raise ValueError(f"{argument} has non-integer label {y[frac][0].item()!r}: labels must "
                             f"be whole numbers")
    return y.astype(np.int64)


def _names(label_names: Any) -> tuple[str, ...]:
    """``label_names`` as a tuple of strings; TypeError naming it otherwise."""
    if isinstance(label_names, str) or not isinstance(label_names, Sequence) or not all(
            isinstance(n, str) for n in label_names):
        raise TypeError(f"label_names must be a sequence of strings, got {label_names!r:.80}")
    return tuple(label_names)


def _check_label_names(label_names: Any, count: int, what: str) -> tuple[str, ...]:
    """``label_names`` as a tuple of ``count`` strings (default "0", "1", ...)."""
    if label_names is None:
        return tuple(str(i) for i in range(count))
    label_names = _names(label_names)
    if len(label_names) != count:
        raise ValueError(f"label_names has {len(label_names)} names; this task has {count} "
                         f"{what}")
    return tuple(label_names)


def _labels(y: np.ndarray, kind: str, label_names: Any) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels checked for ``kind`` (ValueError naming y or label_names) and the names."""
    if kind == "regression":
        if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] == 0):
            raise ValueError(f"y has shape {y.shape}; a regression task needs (N,) or (N, T) "
                             f"targets")
        count = 1 if y.ndim == 1 else y.shape[1]
        return y.astype(np.float32), _check_label_names(label_names, count, "targets")
    if kind == "multilabel":
        if y.ndim != 2 or y.shape[1] == 0:
            raise ValueError(f"y has shape {y.shape}; a multilabel task needs (N, L) labels "
                             f"in {{0, 1}} with L >= 1")
        bad = ~np.isin(y, (0, 1))
        if bad.any():
            raise ValueError(f"y has label {y[bad][0].item()!r}; a multilabel task needs labels in "
                             f"{{0, 1}}")
        return y.astype(np.int32), _check_label_names(label_names, y.shape[1], "labels")
    if y.ndim != 1:
        raise ValueError(f"y has shape {y.shape}; a {kind} task needs (N,) labels"
                         + (" (use y.ravel() for a single column)" if y.ndim == 2
                            and y.shape[1] == 1 else ""))
    labels = _integer_labels(y)
    if kind == "binary":
        bad = ~np.isin(labels, (0, 1))
        if bad.any():
            raise ValueError(f"y has label {y[bad][0].item()!r}; a binary task needs labels in "
                             f"{{0, 1}}")
        return labels.astype(np.int32), _check_label_names(label_names, 2, "classes (0, 1)")
    if labels.min() < 0:
        raise ValueError(f"y has label {int(labels.min())}; multiclass labels are class ids "
                         f"0..C-1")
    if label_names is None:
        present = np.unique(labels)
        if len(present) != present[-1] + 1:
            missing = sorted(set(range(int(present[-1]) + 1)) - set(present.tolist()))
            raise ValueError(f"y has class ids {present.tolist()[:12]}, missing "
                             f"{missing[:12]}: without label_names a multiclass task needs "
                             f"every class 0..C-1 present (encode labels with "
                             f"np.unique(y, return_inverse=True), or pass label_names)")
        names = _check_label_names(None, int(present[-1]) + 1, "classes")
    else:
        names = _names(label_names)
        if labels.max() >= len(names):
            raise ValueError(f"y has label {int(labels.max())} but label_names has "
                             f"{len(names)} names: multiclass labels must be 0..{len(names) - 1}")
    if len(names) < 2:
        raise ValueError(f"y has {len(names)} class; a multiclass task needs at least 2")
    return labels.astype(np.int32), names


def _check_strata(strata: np.ndarray, sizes: dict[str, int], need: int,
                  names: tuple[str, ...] | None, fractions: str) -> None:
    """ValueError unless a stratified split of ``strata`` into parts of ``sizes``
    examples is possible: every class has >= ``need`` examples and every part holds at
    least one example per class. ``fractions`` names the arguments that set the sizes."""
    classes, counts = np.unique(strata, return_counts=True)
    small = counts < need
    if small.any():
        c = int(classes[small][0])
        label = f" ({names[c]!r})" if names and 0 <= c < len(names) else ""
        raise ValueError(f"y: class {c}{label} has {int(counts[small][0])} examples; a "
                         f"stratified split needs at least {need} per class (one in each "
                         f"split): gather more examples of it, drop it, change {fractions}, "
                         f"or pass stratify=False")
    for part, size in sizes.items():
        if size < len(classes):
            raise ValueError(f"{fractions} leave {size} {part} examples for {len(classes)} "
                             f"classes; a stratified split needs at least one per class in "
                             f"each split: change {fractions} or pass stratify=False")


def _stratify_labels(stratify: Any, kind: str, labels: np.ndarray, n: int) -> np.ndarray | None:
    """The labels the splits are stratified by (None: a plain shuffled split)."""
    if isinstance(stratify, bool | np.bool_):
        return labels if stratify and kind in ("binary", "multiclass") else None
    if stratify is None:
        raise TypeError("stratify must be True, False or an array of (N,) group ids, got None")
    groups = _as_numeric(stratify, "stratify")
    if groups.shape != (n,):
        raise ValueError(f"stratify has shape {groups.shape}; it must be True, False or (N,) "
                         f"= ({n},) group ids")
    _check_finite_array(groups, "stratify")
    return _integer_labels(groups, "stratify")


def _standardize(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale (population std; 1 for constant columns, as sklearn's
    StandardScaler) of the training features, float64."""
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    tiny = 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)
    return mean, np.where(std > tiny, std, 1.0)


def from_arrays(
    x: ArrayLike,
    y: ArrayLike,
    *,
    kind: str,
    name: str = "custom",
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    label_names: Sequence[str] | None = None,
    standardize: bool = True,
    stratify: bool | ArrayLike = True,
) -> Task:
    """A :class:`Task` from your own arrays: checked, split and standardized.

    The test split (``ceil(test_fraction * N)`` examples) is drawn first with
    ``sklearn.model_selection.train_test_split(test_size=test_fraction,
    random_state=seed)``, as sklearn counts it; the validation split
    (``ceil(val_fraction * N)`` examples, the product rounded to 9 decimals first so that
    0.1 * 60 gives 6) is then drawn from the rest the same way (with ``seed``), and the
    remainder is the training split.
    Binary and multiclass splits are stratified by class (each split within one example
    per class of its share of the pool it is drawn from). Features are standardized with
    the training split's mean and population standard deviation (a constant column is
    only centred); targets of a regression task are NOT standardized (scale them
    yourself if their magnitude matters for the learning rate; ``r2`` is scale-free).

    Args:
        x: features, (N, features), numbers (bool, int or float), finite.
        y: labels: binary (N,) in {0, 1}; multiclass (N,) class ids 0..C-1 (C from
            ``label_names`` or, without names, every class 0..max(y) present);
            multilabel (N, L) in {0, 1}; regression (N,) or (N, T) finite targets.
            Whole-number floats count as integer labels.
        kind: "binary", "multiclass", "multilabel" or "regression".
        name: the task's name (shown in errors and results).
        test_fraction: share of the N examples in the test split, in (0, 1).
        val_fraction: share in the validation split, in [0, 1) (0: no validation split,
            ``x_val``/``y_val`` are None); ``test_fraction + val_fraction < 1``.
        seed: fixes the splits, an int in 0..2**32 - 1.
        label_names: names of the classes (binary: 2, multiclass: C), labels or
            targets; default "0", "1", ...
        standardize: standardize features with training statistics.
        stratify: True (by class for binary and multiclass; multilabel and regression
            splits are plain shuffles), False (plain shuffles), or (N,) integer group ids
            to stratify by.

    Returns:
        The Task: x float32 (N_split, features); y int32 (binary, multiclass,
        multilabel) or float32 (regression), with ``x_mean``/``x_scale`` set when
        standardized.

    Raises:
        ValueError: unknown kind; x not (N, features); x and y of different lengths;
            NaN/inf in x or y; labels out of range for the kind; label_names of the
            wrong length; fractions out of range; a split left empty; a class with too
            few examples for a stratified split; a seed out of range.
        TypeError: non-numeric x or y (e.g. strings), a non-string name, label_names
            that are not strings, a non-bool standardize, a non-int seed.
    """
    check_choice(kind, "kind", KINDS)
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty string, got {name!r}")
    test_fraction = _check_fraction(test_fraction, "test_fraction", low_open=True)
    val_fraction = _check_fraction(val_fraction, "val_fraction", low_open=False)
    if test_fraction + val_fraction >= 1.0:
        raise ValueError(f"test_fraction={test_fraction!r} + val_fraction={val_fraction!r} "
                         f"must be < 1 (the training split needs the rest)")
    seed = _check_seed(seed)
    standardize = check_bool(standardize, "standardize")
    x, y = _as_numeric(x, "x"), _as_numeric(y, "y")
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"x has shape {x.shape}; it must be (N, features) with features >= 1"
                         + (" (use x.reshape(-1, 1) for one feature)" if x.ndim == 1 else ""))
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has shape {y.shape}: x and y "
                         f"must have the same length N")
    _check_finite_array(x, "x")
    _check_finite_array(y, "y")
    labels, names = _labels(y, kind, label_names)
    n = x.shape[0]
    strata = _stratify_labels(stratify, kind, labels, n)
    # n_test as sklearn counts it; n_val rounded to 9 decimals first (0.1 * 60 is 6, not 7)
    n_test, n_val = math.ceil(test_fraction * n), math.ceil(round(val_fraction * n, 9))
    if n - n_test - n_val < 1:
        raise ValueError(f"with N={n} examples, test_fraction={test_fraction!r} and "
                         f"val_fraction={val_fraction!r} ({n_test} test, {n_val} val) leave "
                         f"no training examples")
    stratified_names = names if strata is labels else None
    if strata is not None:
        _check_strata(strata, {"test": n_test, "train + val": n - n_test}, 3 if n_val else 2,
                      stratified_names, "test_fraction / val_fraction")
    index = np.arange(n)
    rest, test = train_test_split(index, test_size=test_fraction, random_state=seed,
                                  stratify=strata)
    val = None
    if n_val:
        rest_strata = None if strata is None else strata[rest]
        if rest_strata is not None:
            _check_strata(rest_strata, {"val": n_val, "train": len(rest) - n_val}, 2,
                          stratified_names, "test_fraction / val_fraction")
        rest, val = train_test_split(rest, test_size=n_val, random_state=seed,
                                     stratify=rest_strata)
    x = x.astype(np.float64)
    mean = scale = None
    if standardize:
        mean, scale = _standardize(x[rest])

    def features(idx: np.ndarray) -> Array:
        part = x[idx] if mean is None else (x[idx] - mean) / scale
        return jnp.asarray(part, jnp.float32)

    def targets(idx: np.ndarray) -> Array:
        return jnp.asarray(labels[idx])

    return Task(name, kind, features(rest), targets(rest), features(test), targets(test),
                names,
                x_val=None if val is None else features(val),
                y_val=None if val is None else targets(val),
                x_mean=None if mean is None else jnp.asarray(mean, jnp.float32),
                x_scale=None if scale is None else jnp.asarray(scale, jnp.float32))


# ------------------------------------------------------------------- built-in data tasks


@functools.cache
def _digits_raw():
    d = skdata.load_digits()
    return d.data.astype(np.float64), d.target.astype(np.int32)


def digits(seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.1) -> Task:
    """sklearn's 8x8 handwritten digits: 1797 images, 64 features, 10 classes."""
    x, y = _digits_raw()
    return from_arrays(x, y, kind="multiclass", name="digits", test_fraction=test_fraction,
                       val_fraction=val_fraction, seed=seed,
                       label_names=tuple(str(i) for i in range(10)))


def breast_cancer(seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.1) -> Task:
    """sklearn's Wisconsin breast cancer: 569 samples, 30 features, binary."""
    d = skdata.load_breast_cancer()
    return from_arrays(d.data, d.target.astype(np.int32), kind="binary", name="breast_cancer",
                       test_fraction=test_fraction, val_fraction=val_fraction, seed=seed,
                       label_names=("malignant", "benign"))


def digit_attributes(seed: int = 0, test_fraction: float = 0.2,
                     val_fraction: float = 0.1) -> Task:
    """Digits images with 4 attribute labels derived from the class: even, >= 5,
    prime, has a closed loop (0, 6, 8, 9). Multilabel: labels (N, 4) in {0, 1}; split
    stratified by the digit class (the same examples as ``digits``)."""
    x, y = _digits_raw()
    return from_arrays(x, _ATTRIBUTE_TABLE[y], kind="multilabel", name="digit_attributes",
                       test_fraction=test_fraction, val_fraction=val_fraction, seed=seed,
                       label_names=DIGIT_ATTRIBUTES, stratify=y)


def spirals(seed: int = 0, test_fraction: float = 0.2, n_samples: int = 1000,
            noise: float = 0.2, turns: float = 1.5, val_fraction: float = 0.1) -> Task:
    """Two interleaved 2-D spirals (binary), generated from ``seed``."""
    n_samples = check_int(n_samples, "n_samples", 10)
    if check_finite(noise, "noise") < 0:
        raise ValueError(f"noise={noise!r} must be >= 0")
    noise, turns = float(noise), check_positive(turns, "turns")
    seed = _check_seed(seed)
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
    (plain shuffled splits, as the task always had)."""
    n_samples = check_int(n_samples, "n_samples", 10)
    n_features = check_int(n_features, "n_features")
    n_classes = check_int(n_classes, "n_classes", 2)
    hidden = check_int(hidden, "hidden")
    seed = _check_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_samples, n_features))
    w1 = rng.normal(size=(n_features, hidden)) / np.sqrt(n_features)
    w2 = rng.normal(size=(hidden, n_classes)) / np.sqrt(hidden)
    y = np.argmax(np.tanh(x @ w1) @ w2, axis=1).astype(np.int32)
    return from_arrays(x, y, kind="multiclass", name="teacher", test_fraction=test_fraction,
                       val_fraction=val_fraction, seed=seed, stratify=False,
                       label_names=tuple(str(i) for i in range(n_classes)))


# --------------------------------------------------------------------------- objectives


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
    return jnp.sum(x**2, axis=-1)


def _rosenbrock(x):
    return jnp.sum(100.0 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1.0 - x[..., :-1]) ** 2,
                   axis=-1)


def _rastrigin(x):
    return 10.0 * x.shape[-1] + jnp.sum(x**2 - 10.0 * jnp.cos(2 * jnp.pi * x), axis=-1)


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


def register(name: str, builder: Callable[..., Task | Objective]) -> None:
    """Make :func:`get` build task ``name`` with ``builder(**options)``: how a module
    that builds on this one adds its tasks without an import circle (fold_jax.text
    registers ``shakespeare`` and ``milton`` when it is imported, which ``import
    fold_jax`` does).

    Args:
        name: the task name (a name already registered is refused).
        builder: called with ``get``'s options; returns a Task or an Objective.

    Raises:
        ValueError: ``name`` is taken, or is not a non-empty string.
        TypeError: ``builder`` is not callable.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if name in _REGISTRY or name in CONTROL_NAMES:
        raise ValueError(f"task name {name!r} is already registered")
    if not callable(builder):
        raise TypeError(f"builder must be callable, got {type(builder).__name__}")
    _REGISTRY[name] = builder


def names() -> list[str]:
    """The sorted names of every registered task, objective and control task (what
    :func:`get` accepts, besides any gymnax environment id).

    Returns:
        The names, sorted.
    """
    return sorted([*_REGISTRY, *CONTROL_NAMES])


@overload
def get(name: TaskName, **options: Any) -> Task: ...
@overload
def get(name: ObjectiveName, **options: Any) -> Objective: ...
@overload
def get(name: ControlName, **options: Any) -> ControlTask: ...
@overload
def get(name: str, **options: Any) -> Task | Objective | ControlTask: ...


def get(name: str, **options: Any) -> Task | Objective | ControlTask:
    """The task called ``name`` built with ``options`` (seed, test_fraction,
    val_fraction, dim, ...).

    Typed by name: a literal data-task name (``TaskName``) gives a :class:`Task`, an
    objective's (``ObjectiveName``) an :class:`Objective`, a control name
    (``ControlName``) a :class:`~fold_jax.control.ControlTask`; for a name held in a
    ``str`` variable use :func:`dataset` or :func:`objective` to get one type.

    Args:
        name: a task, objective or control name (one of :func:`names`), or a gymnax
            environment id (:func:`fold_jax.control.env_ids`, e.g. "MountainCar-v0").
        **options: options of that task's builder (unknown ones are a ValueError).

    Returns:
        A :class:`Task` for a data-task name, an :class:`Objective` for an objective's,
        a :class:`~fold_jax.control.ControlTask` for a control name or gymnax id.

    Raises:
        ValueError: an unknown name (listing the known ones) or unknown options.
    """
    if isinstance(name, str) and name not in _REGISTRY and (
            name in CONTROL_NAMES or name in control.DOWNLOADS or name in control.env_ids()):
        make: Callable[..., Any] = functools.partial(control.make, name)
    else:
        try:
            check_choice(name, "task name", names())
        except ValueError as error:
            raise ValueError(f"{error} (or a gymnax environment id, "
                             f"fold_jax.control.env_ids())") from None
        make = _REGISTRY[name]
    allowed = set(inspect.signature(make).parameters)
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"task {name!r} got unknown options {sorted(unknown)}; "
                         f"allowed: {sorted(allowed)}")
    return make(**options)


def dataset(name: str, **options: Any) -> Task:
    """The built-in data task ``name`` (one of ``TASK_NAMES``), always a :class:`Task`.

    Args:
        name: a data-task name (one of ``TASK_NAMES``).
        **options: the task's build options (as in :func:`get`).

    Returns:
        The :class:`Task`.

    Raises:
        ValueError: ``name`` is not a data task (an objective's name included).
    """
    if not isinstance(name, str) or name not in TASK_NAMES:
        raise ValueError(f"dataset name={name!r} is not a data task; allowed: "
                         f"{sorted(TASK_NAMES)}")
    task = get(name, **options)
    assert isinstance(task, Task)
    return task


def objective(name: str, dim: int = 10) -> Objective:
    """The test function ``name`` (one of ``OBJECTIVE_NAMES``) in ``dim`` dimensions.

    Args:
        name: an objective name (one of ``OBJECTIVE_NAMES``).
        dim: the number of dimensions.

    Returns:
        The :class:`Objective`.

    Raises:
        ValueError: ``name`` is not an objective (a data task's name included), or a
            bad ``dim``.
    """
    check_choice(name, "objective name", sorted(OBJECTIVE_NAMES))
    f = get(name, dim=dim)
    assert isinstance(f, Objective)
    return f
