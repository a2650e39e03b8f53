import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax import tasks


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
    assert not np.array_equal(np.asarray(a.y_train), np.asarray(c.y_train))
    assert (a.n_train, a.x_test.shape[0]) == (1437, 360)


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
