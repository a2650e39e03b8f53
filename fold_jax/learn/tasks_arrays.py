"""Your own arrays as a task: :func:`from_arrays` checks ``(x, y)`` (shapes, NaN/inf,
label ranges), splits them by ``seed`` into train / validation / test (stratified by
class where labels allow; the test split drawn first, exactly as versions without a
validation split drew it) and standardizes the features with statistics of the training
split only. Every built-in data task (:mod:`fold_jax.learn.tasks_builtin`) is built by it.
Re-exported by :mod:`fold_jax.learn.tasks`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from fold_jax.checks import check_bool, check_choice
from fold_jax.learn.heads import KINDS
from fold_jax.learn.tasks_types import Task

__all__ = ["check_seed", "from_arrays"]


def _check_fraction(value: Any, argument: str, low_open: bool) -> float:
    """``value`` as a float in (0, 1) (``low_open``) or [0, 1); ValueError naming it."""
    ok = (isinstance(value, int | float | np.integer | np.floating)
          and not isinstance(value, bool | np.bool_) and math.isfinite(value)
          and (0.0 < value if low_open else 0.0 <= value) and value < 1.0)
    if not ok:
        interval = "(0, 1)" if low_open else "[0, 1)"
        raise ValueError(f"{argument}={value!r} must be a number in {interval}")
    return value if isinstance(value, float) else float(value)


def check_seed(seed: Any) -> int:
    """A task's split seed, checked.

    Args:
        seed: an int in 0..2**32 - 1 (NumPy ints too; not a bool).

    Returns:
        The seed as a Python int.

    Raises:
        TypeError / ValueError: not an int, or out of range.
    """
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
    seed = check_seed(seed)
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
    # imported here: sklearn costs ~1 s at import, paid only by processes that split arrays
    from sklearn.model_selection import train_test_split

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
