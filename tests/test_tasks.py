import math
import typing

import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax.learn import tasks, tasks_builtin
from fold_jax.learn.heads import KINDS

EPS32 = float(np.finfo(np.float32).eps)


@pytest.mark.parametrize(
    ("name", "kind", "features", "outputs"),
    [("digits", "multiclass", 64, 10), ("breast_cancer", "binary", 30, 1),
     ("digit_attributes", "multilabel", 64, 4), ("spirals", "binary", 2, 1),
     ("teacher", "multiclass", 20, 4)],
)
def test_data_tasks(name, kind, features, outputs):
    t = tasks.get(name)
    assert (t.kind, t.n_features, t.n_outputs) == (kind, features, outputs)
    assert t.x_train.dtype == jnp.float32 and t.x_train.shape[0] == t.y_train.shape[0]
    # standardized with training statistics: train columns have mean 0 (constant ones stay 0)
    np.testing.assert_allclose(np.asarray(t.x_train).mean(0), 0.0, atol=1e-4)
    assert t.x_test.shape[0] > 0 and np.isfinite(np.asarray(t.x_test)).all()


def test_split_is_fixed_by_seed():
    a, b, c = tasks.get("digits", seed=3), tasks.get("digits", seed=3), tasks.get("digits", seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert not np.array_equal(np.asarray(a.y_train), np.asarray(c.y_train))
    # 1797 examples: ceil(0.2 N) = 360 test, ceil(0.1 N) = 180 val, the rest train
    assert (a.n_train, a.n_val, a.n_test) == (1257, 180, 360)


def test_digit_attributes_follow_the_digit_class():
    attrs = tasks.get("digit_attributes")
    digits = tasks.get("digits")  # same seed, same stratified split of the same images
    y = np.asarray(digits.y_train)
    labels = np.asarray(attrs.y_train)
    np.testing.assert_array_equal(labels[:, 0], (y % 2 == 0))
    np.testing.assert_array_equal(labels[:, 1], (y >= 5))
    np.testing.assert_array_equal(labels[:, 2], np.isin(y, [2, 3, 5, 7]))
    np.testing.assert_array_equal(labels[:, 3], np.isin(y, [0, 6, 8, 9]))


@pytest.mark.parametrize("name", ["sphere", "rosenbrock", "rastrigin"])
def test_objectives_have_their_minimum_at_x_star(name):
    f = tasks.get(name, dim=7)
    assert float(f(f.x_star)) == pytest.approx(0.0, abs=1e-5)
    assert float(f(f.x0)) > 0.0


def test_unknown_task_lists_names():
    with pytest.raises(ValueError, match="digits"):
        tasks.get("mnist")


@pytest.mark.parametrize(
    ("name", "options", "argument"),
    [("digits", {"test_fraction": 1.5}, "test_fraction"), ("sphere", {"dim": 0}, "dim"),
     ("spirals", {"n_samples": 2}, "n_samples"), ("digits", {"colour": 1}, "colour"),
     ("rosenbrock", {"dim": 1}, "dim")],
)
def test_bad_options(name, options, argument):
    with pytest.raises(ValueError, match=argument):
        tasks.get(name, **options)


# ------------------------------------------------------------------------- from_arrays


def _blobs(counts, dim=6, seed=0):
    """Gaussian blobs, class k centred at 3 e_k; labels shuffled."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    x = rng.normal(size=(len(y), dim)) + 3.0 * np.eye(dim)[y % dim]
    return x, y


@pytest.mark.parametrize("kind", KINDS)
def test_from_arrays_builds_every_kind(kind):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5))
    y = {"binary": (x[:, 0] > 0).astype(int), "multiclass": np.digitize(x[:, 0], [-0.5, 0.5]),
         "multilabel": (x[:, :3] > 0).astype(int), "regression": x @ np.arange(5.0)}[kind]
    t = tasks.from_arrays(x, y, kind=kind, name="mine")
    assert (t.name, t.kind, t.n_features) == ("mine", kind, 5)
    assert t.n_outputs == {"binary": 1, "multiclass": 3, "multilabel": 3, "regression": 1}[kind]
    # ceil(0.2 * 300) = 60 test, ceil(0.1 * 300) = 30 val
    assert (t.n_train, t.n_val, t.n_test) == (210, 30, 60)
    assert t.y_train.dtype == (jnp.float32 if kind == "regression" else jnp.int32)
    assert t.x_val.dtype == jnp.float32 and t.y_val.shape[1:] == y.shape[1:]
    for split in ("train", "val", "test"):
        assert t.split(split)[0].shape[0] == t.split(split)[1].shape[0]
    none = tasks.from_arrays(x, y, kind=kind, val_fraction=0.0)
    assert none.x_val is None and none.n_val == 0 and none.n_train == 240
    with pytest.raises(ValueError, match="no validation split"):
        none.split("val")


def test_regression_targets_are_not_standardized():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    y = 100.0 + 10.0 * x[:, 0]
    t = tasks.from_arrays(x, y, kind="regression")
    everything = np.concatenate([t.y_train, t.y_val, t.y_test])
    # the same multiset of targets, as float32 (rounding <= eps32/2 * |y|)
    np.testing.assert_allclose(np.sort(everything), np.sort(y), rtol=EPS32)
    two = tasks.from_arrays(x, np.stack([y, -y], 1), kind="regression",
                            label_names=("up", "down"))
    assert two.n_outputs == 2 and two.y_train.shape == (two.n_train, 2)


def test_standardization_uses_training_statistics_only():
    rng = np.random.default_rng(2)
    n = 1000
    ids = np.arange(n, dtype=np.float64)  # column 0 identifies the row
    x = np.column_stack([ids, rng.normal(5.0, 3.0, n), rng.exponential(2.0, n),
                         np.full(n, 7.0)])
    y = (x[:, 1] > 5).astype(int)
    t = tasks.from_arrays(x, y, kind="binary")
    mean, scale = np.asarray(t.x_mean, np.float64), np.asarray(t.x_scale, np.float64)

    def rows(z):  # raw row ids back from the standardized id column (ids < 2^24: exact)
        return np.round(np.asarray(z, np.float64)[:, 0] * scale[0] + mean[0]).astype(int)

    train, val, test = rows(t.x_train), rows(t.x_val), rows(t.x_test)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(n))
    # x_mean / x_scale are the training rows' mean and population std (float32 copies:
    # relative rounding eps32/2); the constant column keeps scale 1 (only centred)
    np.testing.assert_allclose(mean, x[train].mean(0), rtol=EPS32)
    np.testing.assert_allclose(scale[:3], x[train].std(0)[:3], rtol=EPS32)
    assert scale[3] == 1.0
    z = np.asarray(t.x_train, np.float64)
    # train columns have mean 0 up to the float32 rounding of each entry (eps32/2 |z|),
    # so within eps32 * max|z| per column
    assert np.all(np.abs(z.mean(0)) <= EPS32 * np.abs(z).max(0))
    # test and val were standardized with those same training statistics, not their own:
    # their columns' means are not 0 (the id column's test mean is off by ~ 0.05 std even
    # at random; a test set standardized on itself would give < eps32 * max|z|)
    for part, idx in ((t.x_test, test), (t.x_val, val)):
        zp = np.asarray(part, np.float64)
        expected = (x[idx] - mean) / scale
        np.testing.assert_allclose(zp, expected, atol=4 * EPS32 * np.abs(expected).max())
        assert np.abs(zp[:, :3].mean(0)).max() > 1e3 * EPS32 * np.abs(zp).max()
    np.testing.assert_allclose(t.transform(x[test]), t.x_test,
                               atol=4 * EPS32 * float(np.abs(t.x_test).max()))
    raw = tasks.from_arrays(x, y, kind="binary", standardize=False)
    assert raw.x_mean is None and float(raw.x_train[:, 3].min()) == 7.0


@pytest.mark.parametrize("counts", [(50, 120, 333, 17), (400, 41), (9, 9, 9, 9, 9, 9)])
def test_stratified_splits_keep_class_proportions(counts):
    x, y = _blobs(counts)
    kind = "binary" if len(counts) == 2 else "multiclass"
    t = tasks.from_arrays(x, y, kind=kind, seed=5)
    n, n_test, n_val = len(y), t.n_test, t.n_val
    per = {s: np.bincount(np.asarray(t.split(s)[1]), minlength=len(counts))
           for s in ("train", "val", "test")}
    total = np.asarray(counts)
    np.testing.assert_array_equal(per["train"] + per["val"] + per["test"], total)
    # sklearn's stratified split gives every class the floor or ceil of its exact share
    # of the pool the split is drawn from: test from all N, val from the N - n_test rest
    assert np.all(np.abs(per["test"] - total * n_test / n) <= 1)
    rest = total - per["test"]
    assert np.all(np.abs(per["val"] - rest * n_val / rest.sum()) <= 1)
    assert per["val"].min() >= 1 and per["train"].min() >= 1


def test_multiclass_without_names_takes_outputs_from_the_labels():
    x, y = _blobs((30, 30, 30, 30, 30))
    t = tasks.from_arrays(x, y, kind="multiclass")
    assert t.n_outputs == 5 and t.label_names == ("0", "1", "2", "3", "4")
    hand = tasks.Task("hand", "multiclass", t.x_train, t.y_train, t.x_test, t.y_test)
    assert hand.n_outputs == 5  # was 0 without label_names
    named = tasks.from_arrays(x, y, kind="multiclass", label_names=list("abcdefg"))
    assert named.n_outputs == 7  # names may cover classes the data lacks


X10, Y10 = np.random.default_rng(0).normal(size=(60, 3)), np.arange(60) % 2


@pytest.mark.parametrize(
    ("x", "y", "options", "error", "match"),
    [
        (X10, Y10[:50], {}, ValueError, r"x has 60 examples but y has shape \(50,\)"),
        (X10[:, 0], Y10, {}, ValueError, r"x has shape \(60,\).*reshape"),
        (np.where(np.eye(60, 3) > 0, np.nan, X10), Y10, {}, ValueError,
         "x has 3 non-finite"),
        (X10, np.where(Y10 == 0, np.inf, 1.0), {"kind": "regression"}, ValueError,
         "y has 30 non-finite"),
        (X10, Y10 + 1, {}, ValueError, r"y has label 2; a binary task needs labels in \{0, 1\}"),
        (X10, Y10 * 0.5, {}, ValueError, "y has non-integer label 0.5"),
        (X10, Y10[:, None], {}, ValueError, r"y has shape \(60, 1\).*ravel"),
        (X10, Y10 * 2, {"kind": "multiclass"}, ValueError, r"missing \[1\].*label_names"),
        (X10, Y10 - 1, {"kind": "multiclass"}, ValueError, "y has label -1"),
        (X10, Y10 * 3, {"kind": "multiclass", "label_names": ("a", "b", "c")}, ValueError,
         "y has label 3 but label_names has 3 names"),
        (X10, Y10, {"label_names": ("a", "b", "c")}, ValueError, "label_names has 3 names"),
        (X10, Y10, {"label_names": "ab"}, TypeError, "label_names must be"),
        (X10, Y10, {"kind": "multilabel"}, ValueError, r"y has shape \(60,\); a multilabel"),
        (X10, np.stack([Y10, 2 * Y10], 1), {"kind": "multilabel"}, ValueError,
         r"y has label 2; a multilabel task needs labels in \{0, 1\}"),
        (X10, np.stack([Y10, Y10], 1), {"kind": "multilabel", "label_names": ("a",)},
         ValueError, "label_names has 1 names; this task has 2 labels"),
        (X10, Y10, {"kind": "ordinal"}, ValueError, r"kind='ordinal' is not known.*regression"),
        (X10, Y10, {"kind": None}, ValueError, "kind=None"),
        (X10, np.r_[np.zeros(58), 1, 1], {}, ValueError,
         r"class 1 \('1'\) has 2 examples; a stratified split needs at least 3"),
        (X10, np.arange(60) % 10, {"kind": "multiclass", "val_fraction": 0.04}, ValueError,
         "leave 3 val examples for 10 classes"),
        (X10, np.arange(60) % 10, {"kind": "multiclass", "test_fraction": 0.08}, ValueError,
         "leave 5 test examples for 10 classes"),
        (X10, np.array(["a", "b"] * 30), {}, TypeError, "y has dtype <U1.*np.unique"),
        (np.array([["a"]] * 60), Y10, {}, TypeError, "x has dtype"),
        (X10, Y10, {"seed": -1}, ValueError, "seed=-1"),
        (X10, Y10, {"seed": 1.0}, TypeError, "seed must be an int"),
        (X10, Y10, {"standardize": "yes"}, TypeError, "standardize=.* must be True or False"),
        (X10, Y10, {"name": 3}, TypeError, "name must be"),
        (X10, Y10, {"stratify": np.zeros(5)}, ValueError, r"stratify has shape \(5,\)"),
        (X10, Y10, {"test_fraction": 0.6, "val_fraction": 0.4}, ValueError,
         r"test_fraction=0.6 \+ val_fraction=0.4 must be < 1"),
        (X10[:5], Y10[:5], {"test_fraction": 0.5, "val_fraction": 0.4, "stratify": False},
         ValueError, "leave no training examples"),
    ]
    + [(X10, Y10, {"test_fraction": b}, ValueError, "test_fraction=")
       for b in (0.0, 1.0, -0.1, 1.5, math.nan, math.inf, True, "0.2", None)]
    + [(X10, Y10, {"val_fraction": b}, ValueError, "val_fraction=")
       for b in (-0.1, 1.0, math.nan, True, "0.1")],
)
def test_from_arrays_names_every_bad_input(x, y, options, error, match):
    options = {"kind": "binary", **options}
    with pytest.raises(error, match=match):
        tasks.from_arrays(x, y, **options)


# ---------------------------------------------------- built-ins: the test split is kept


def _old_split(x, y, stratify, seed=0, test_fraction=0.2):
    """The split code path of versions without a validation split."""
    from sklearn.model_selection import train_test_split  # here: sklearn costs ~1 s

    return train_test_split(x, y, test_size=test_fraction, random_state=seed,
                            stratify=stratify)


def _raw_x(task, z):
    return np.asarray(z, np.float64) * np.asarray(task.x_scale, np.float64) + np.asarray(
        task.x_mean, np.float64)


@pytest.mark.parametrize("seed", [0, 3])
def test_digits_test_split_is_the_old_one(seed):
    from sklearn import datasets as skdata  # here: sklearn costs ~1 s at collection

    d = skdata.load_digits()
    x_tr, x_te, y_tr, y_te = _old_split(d.data, d.target, d.target, seed)
    t = tasks.get("digits", seed=seed)
    np.testing.assert_array_equal(t.y_test, y_te)
    np.testing.assert_array_equal(np.sort(np.concatenate([t.y_train, t.y_val])), np.sort(y_tr))
    # digits pixels are whole numbers 0..16: un-standardizing (float32 rounding, error
    # far below 0.5) and rounding gives the raw test images back exactly, in order
    np.testing.assert_array_equal(np.round(_raw_x(t, t.x_test)), x_te)
    # train + val are the old training split, as a set of images
    ours = np.round(_raw_x(t, np.concatenate([t.x_train, t.x_val])))
    assert sorted(map(bytes, ours.astype(np.int8))) == sorted(map(bytes, x_tr.astype(np.int8)))
    attrs = tasks.get("digit_attributes", seed=seed)
    np.testing.assert_array_equal(attrs.x_test, t.x_test)
    np.testing.assert_array_equal(attrs.y_test, tasks_builtin.DIGIT_ATTRIBUTE_TABLE[y_te])


@pytest.mark.parametrize("name", ["breast_cancer", "spirals", "teacher"])
def test_other_builtin_test_splits_are_the_old_ones(name, monkeypatch):
    seen = {}
    original = tasks.from_arrays

    def record(x, y, **options):  # the raw arrays the built-in hands to from_arrays
        seen.update(x=np.asarray(x), y=np.asarray(y))
        return original(x, y, **options)

    monkeypatch.setattr(tasks_builtin, "from_arrays", record)  # where the built-ins call it
    t = tasks.get(name)
    stratify = None if name == "teacher" else seen["y"]  # teacher was never stratified
    _, x_te, _, y_te = _old_split(seen["x"], seen["y"], stratify)
    np.testing.assert_array_equal(t.y_test, y_te)
    # un-standardized test features equal the raw ones up to float32 rounding of z and
    # of the statistics: a few eps32 relative to |x| + |mean|
    raw = _raw_x(t, t.x_test)
    bound = 8 * EPS32 * (np.abs(x_te) + np.abs(np.asarray(t.x_mean)))
    assert np.all(np.abs(raw - x_te) <= bound)


# ------------------------------------------------------------------------------ typing


def test_get_is_typed_by_name_and_objective_dataset_are_precise():
    overloads = typing.get_overloads(tasks.get)
    returns = [typing.get_type_hints(f, globalns=vars(tasks))["return"] for f in overloads]
    assert returns[:2] == [tasks.Task, tasks.Objective]
    assert set(tasks.TASK_NAMES) | set(tasks.OBJECTIVE_NAMES) | set(tasks.CONTROL_NAMES) == set(
        tasks.names())
    assert not set(tasks.TASK_NAMES) & set(tasks.OBJECTIVE_NAMES)
    assert isinstance(tasks.dataset("spirals", n_samples=100), tasks.Task)
    f = tasks.objective("rosenbrock", dim=4)
    assert isinstance(f, tasks.Objective) and f.dim == 4
    with pytest.raises(ValueError, match=r"objective name='digits'.*sphere"):
        tasks.objective("digits")
    with pytest.raises(ValueError, match=r"dataset name='sphere'.*digits"):
        tasks.dataset("sphere")


def test_objectives_evaluate_batches_point_by_point():
    for name in tasks.OBJECTIVE_NAMES:
        f = tasks.get(name, dim=5)
        pts = jnp.stack([f.x0, f.x_star, 0.5 * f.x0])
        np.testing.assert_allclose(f(pts), [float(f(p)) for p in pts], rtol=1e-6)


def test_register_adds_a_builder_that_get_uses_and_refuses_bad_input():
    """fold_jax.learn.text adds its corpora through register (no import circle): a registered
    builder is what get calls, with get's options; taken names, empty names and
    non-callables are refused before anything is stored."""
    assert {"shakespeare", "milton"} <= set(tasks.names())  # registered by import fold_jax
    built = {}

    def builder(seed: int = 0):
        built["seed"] = seed
        return tasks.get("sphere")

    tasks.register("my_task", builder)
    try:
        assert "my_task" in tasks.names()
        tasks.get("my_task", seed=3)
        assert built == {"seed": 3}
        with pytest.raises(ValueError, match="unknown"):
            tasks.get("my_task", bogus=1)
        with pytest.raises(ValueError, match="already registered"):
            tasks.register("my_task", builder)
        with pytest.raises(ValueError, match="already registered"):
            tasks.register("cartpole", builder)
    finally:
        tasks._REGISTRY.pop("my_task", None)
    with pytest.raises(ValueError, match="non-empty string"):
        tasks.register("", builder)
    with pytest.raises(TypeError, match="callable"):
        tasks.register("other", 3)
    assert "other" not in tasks.names()
