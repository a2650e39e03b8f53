import dataclasses
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fold_jax.estimators import methods, search
from fold_jax.learn import nets, tasks, train


@pytest.fixture(scope="module")
def adam_run(digits, digits_net, digits_params):
    m = methods.gradient(digits.loss_fn(digits_net.apply), optax.adam(1e-3))
    return train.fit(m, digits_params, digits, apply=digits_net.apply, steps=300, seed=0)


def test_adam_reaches_97_percent_on_digits_within_300_steps(adam_run):
    hist = adam_run.history
    assert hist["step"].iloc[-1] == 300
    assert hist["test_accuracy"].max() >= 0.97
    assert hist["evals"].iloc[-1] == 300  # one loss evaluation per backprop step
    assert np.all(np.diff(hist["elapsed_s"]) > 0) and adam_run.compile_s > 0


def test_same_seed_gives_bit_identical_params_and_history(adam_run, digits, digits_net,
                                                           digits_params):
    m = methods.gradient(digits.loss_fn(digits_net.apply), optax.adam(1e-3))
    # compiled afresh: a reused program would make this comparison trivial
    again = train.fit(m, digits_params, digits, apply=digits_net.apply, steps=300, seed=0,
                      reuse_programs=False)
    for a, b in zip(jax.tree.leaves(adam_run.state.params), jax.tree.leaves(again.state.params),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    cols = [c for c in adam_run.history.columns if c != "elapsed_s"]
    assert adam_run.history[cols].equals(again.history[cols])
    other = train.fit(m, digits_params, digits, apply=digits_net.apply, steps=50, seed=1)
    assert not np.array_equal(other.state.params["params"]["dense_0"]["kernel"],
                              adam_run.state.params["params"]["dense_0"]["kernel"])


def test_target_stops_early_and_budget_in_seconds(digits, digits_net, digits_params):
    # "adam" by name builds the same program as adam_run's optax.adam(1e-3): the default
    # 50-step chunk is compiled once for the module (fit's program cache)
    m = methods.gradient(digits.loss_fn(digits_net.apply), "adam", 1e-3)
    r = train.fit(m, digits_params, digits, apply=digits_net.apply, steps=1000, target=0.9)
    assert r.reached and r.history["step"].iloc[-1] < 1000
    assert r.history["test_accuracy"].iloc[-1] >= 0.9
    r = train.fit(m, digits_params, digits, apply=digits_net.apply, budget_s=0.05)
    assert not r.reached and r.history["elapsed_s"].iloc[-1] >= 0.05


def test_full_batch_and_multilabel_metrics(digits_net):
    from fold_jax.learn import nets

    task = tasks.get("breast_cancer")
    net = nets.mlp((30, 16, 1), "tanh")
    m = methods.gradient(task.loss_fn(net.apply), "sgd", 0.1)
    r = train.fit(m, jax.jit(net.init)(jax.random.key(0)), task, apply=net.apply, steps=20,
                  batch_size=task.n_train, eval_every=20)
    assert r.history["test_accuracy"].iloc[-1] > 0.85
    task = tasks.get("digit_attributes")
    net = nets.mlp((64, 32, 4), "relu")
    m = methods.gradient(task.loss_fn(net.apply), "adam", 1e-2)
    r = train.fit(m, jax.jit(net.init)(jax.random.key(0)), task, apply=net.apply, steps=40,
                  eval_every=20, target_metric="micro_f1")
    assert {"test_micro_f1", "train_micro_f1"} <= set(r.history.columns)
    assert r.history["test_micro_f1"].iloc[-1] > 0.8


def test_non_finite_loss_never_poisons_params(digits, digits_net, digits_params):
    base = digits.loss_fn(digits_net.apply)

    def flaky(params, x, y):  # NaN on roughly half of the minibatches
        return jnp.where(jnp.sum(y) % 2 == 0, jnp.nan, base(params, x, y))

    m = methods.gradient(flaky, "adam", 1e-3)
    with pytest.warns(RuntimeWarning, match=r"\d+ of 40 steps .* skipped.*not finite"):
        r = train.fit(m, digits_params, digits, apply=digits_net.apply, steps=40, eval_every=20)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(r.state))
    assert r.history["test_accuracy"].iloc[-1] > 0.5  # the finite steps still trained
    h = r.history
    assert 0 < r.skipped < 40 and h["skipped"].sum() == r.skipped
    assert h["skipped"].iloc[0] == 0 and (h["skipped"].iloc[1:] <= np.diff(h["step"])).all()
    assert "accepted" not in h.columns  # descent reports no accepted moves


def test_descent_reports_skipped_steps(digits, digits_net, digits_params):
    m = methods.gradient(lambda p, x, y: jnp.nan * digits.loss_fn(digits_net.apply)(p, x, y),
                         "sgd", 0.1)
    state = m.init(digits_params)
    new, info = jax.jit(m.step)(state, jax.random.key(0), digits.x_train[:8], digits.y_train[:8])
    assert int(info["skipped"]) == 1
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(digits_params), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"steps": 0}, "steps"), ({"steps": -5}, "steps"), ({"steps": None}, "budget"),
     ({"steps": 10, "budget_s": 0}, "budget_s"), ({"steps": 10, "batch_size": 5000}, "batch_size"),
     ({"steps": 10, "batch_size": 0}, "batch_size"), ({"steps": 10, "eval_every": 0}, "eval_every"),
     ({"steps": 10, "target_metric": "micro_f1"}, "target_metric")],
)
def test_bad_loop_arguments(kwargs, match, digits, digits_net, digits_params):
    m = methods.gradient(digits.loss_fn(digits_net.apply), "adam")
    with pytest.raises(ValueError, match=match):
        train.fit(m, digits_params, digits, apply=digits_net.apply, **kwargs)


def test_bad_method_task_and_optimizer(digits, digits_net, digits_params):
    with pytest.raises(TypeError, match="method"):
        train.fit(object(), digits_params, digits, apply=digits_net.apply, steps=1)
    with pytest.raises(TypeError, match="task"):
        train.fit(methods.gradient(lambda p: 0.0, "sgd"), digits_params, "digits",
                  apply=digits_net.apply, steps=1)
    with pytest.raises(ValueError, match="adam"):
        methods.optimizer("adamm")
    with pytest.raises(ValueError, match="learning_rate"):
        methods.optimizer("adam", -1.0)
    with pytest.raises(TypeError, match="optimizer"):
        methods.optimizer(3)


def test_wrong_feature_size_is_caught_before_tracing_deeply(digits_params):
    from fold_jax.learn import nets

    task = tasks.get("breast_cancer")  # 30 features, the net expects 64
    net = nets.mlp((64, 8, 1))
    m = methods.gradient(task.loss_fn(net.apply), "sgd")
    with pytest.raises(ValueError, match="in_features"):
        train.fit(m, jax.jit(net.init)(jax.random.key(0)), task, apply=net.apply, steps=2)


# ------------------------------------------------ what fit says: skipped / accepted steps


class CountState(NamedTuple):
    params: dict
    t: np.ndarray
    skip_every: np.ndarray  # in the state (traced), not closed over: hypothesis' examples
    accept_every: np.ndarray  # share one compiled chunk per chunk length


def counting_method(skip_every: int, accept_every: int | None) -> methods.Method:
    """Step t (1-based) is skipped when t % skip_every == 0 and accepted when
    t % accept_every == 0: the expected history is known exactly."""

    def init(params):
        return CountState(params, np.int32(0), np.int32(skip_every),
                          np.int32(accept_every or 1))

    def step(state, key, x, y):
        t = state.t + 1
        info = {"loss": jnp.float32(1.0), "evals": jnp.int32(1),
                "skipped": (t % state.skip_every == 0).astype(jnp.int32)}
        if accept_every is not None:
            info["accepted"] = (t % state.accept_every == 0).astype(jnp.int32)
        return state._replace(t=t), info

    return methods.Method(init, step, "counting")


@pytest.fixture(scope="module")
def tiny():
    task = tasks.get("breast_cancer")
    net = nets.mlp((task.n_features, 1))
    return task, net, jax.jit(net.init)(jax.random.key(0))


@settings(derandomize=True, max_examples=10, deadline=None, database=None)
@given(steps=st.integers(1, 60), eval_every=st.integers(1, 25), skip_every=st.integers(1, 70),
       accept_every=st.one_of(st.none(), st.integers(1, 9)))
def test_history_counts_skipped_and_accepted_steps_per_interval(tiny, steps, eval_every,
                                                               skip_every, accept_every):
    task, net, params = tiny
    m = counting_method(skip_every, accept_every)
    total = steps // skip_every
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = train.fit(m, params, task, apply=net.apply, steps=steps, eval_every=eval_every,
                      batch_size=8)
    h = r.history
    step = h["step"].to_numpy()
    assert step[0] == 0 and step[-1] == steps
    np.testing.assert_array_equal(h["skipped"], np.r_[0, np.diff(step // skip_every)])
    assert r.skipped == total == h["skipped"].sum()
    if accept_every is None:
        assert "accepted" not in h.columns
    else:
        np.testing.assert_array_equal(h["accepted"], np.r_[0, np.diff(step // accept_every)])
    warned = [w for w in caught if issubclass(w.category, RuntimeWarning)
              and "skipped" in str(w.message)]
    assert len(warned) == (1 if total > 0.02 * steps else 0)
    if warned:
        assert f"{total} of {steps} steps" in str(warned[0].message)


def test_direct_search_history_has_accepted_moves(tiny):
    task, net, params = tiny
    loss = task.loss_fn(net.apply)
    for m in (search.gld(loss, max_radius=0.5, min_radius=1e-2), search.rso(loss),
              search.one_plus_one(loss, sigma=0.05)):
        r = train.fit(m, params, task, apply=net.apply, steps=30, eval_every=10, batch_size=64)
        h = r.history
        assert {"skipped", "accepted"} <= set(h.columns), m.name
        assert h["accepted"].iloc[0] == 0 and h["skipped"].sum() == 0 == r.skipped
        assert (h["accepted"].iloc[1:] <= np.diff(h["step"])).all()
        assert 0 < h["accepted"].sum() <= 30  # it moved, never more than once a step


def test_a_clean_run_skips_nothing_and_does_not_warn(adam_run):
    assert adam_run.skipped == 0 and (adam_run.history["skipped"] == 0).all()
    assert list(adam_run.history.columns[:4]) == ["step", "evals", "elapsed_s", "batch_loss"]
    # positional users of TrainResult keep working; skipped defaults to 0
    assert train.TrainResult(None, adam_run.history, 0.0, False).skipped == 0


def test_target_met_at_step_zero_still_has_the_columns(tiny):
    task, net, params = tiny
    r = train.fit(search.rso(task.loss_fn(net.apply)), params, task, apply=net.apply,
                  steps=10, target=0.0, batch_size=8)
    assert r.reached and len(r.history) == 1
    assert r.history[["skipped", "accepted"]].iloc[0].tolist() == [0, 0]


# ------------------------------------------------------ fit rejects non-finite inputs


class Untouchable(NamedTuple):
    init: object
    step: object
    name: str = "untouchable"


def _untouchable():
    def fail(*args):
        raise AssertionError("fit ran the method before checking its inputs")

    return Untouchable(fail, fail)


@pytest.mark.parametrize(("array", "index", "value"), [("x_train", (3, 5), np.nan),
                                                       ("x_train", (0, 0), -np.inf),
                                                       ("x_test", (7, 1), np.nan)])
def test_fit_rejects_non_finite_features_before_running(tiny, array, index, value):
    task, net, params = tiny
    data = np.array(getattr(task, array))  # a numpy copy: no scatter program to compile
    data[index] = value
    bad = dataclasses.replace(task, **{array: data})
    with pytest.raises(ValueError, match=rf"task\.{array} .* has 1 non-finite entries"):
        train.fit(_untouchable(), params, bad, apply=net.apply, steps=5)


def test_fit_rejects_inf_labels_and_names_the_count(tiny):
    task, net, params = tiny
    y = np.array(task.y_test, np.float32)
    y[[0, 2, 4]] = np.inf
    bad = dataclasses.replace(task, y_test=y)
    with pytest.raises(ValueError, match=r"task\.y_test .* has 3 non-finite entries .* out of"):
        train.fit(_untouchable(), params, bad, apply=net.apply, steps=5)


def test_fit_rejects_nan_params_naming_the_leaf(tiny):
    task, net, params = tiny
    def poison(path, w):
        w = np.array(w)
        if "kernel" in str(path):
            w[(0,) * w.ndim] = np.nan
        return w

    bad = jax.tree_util.tree_map_with_path(poison, params)
    with pytest.raises(ValueError, match=r"params\[.*kernel.*\] has 1 non-finite"):
        train.fit(_untouchable(), bad, task, apply=net.apply, steps=5)
    m = methods.gradient(task.loss_fn(net.apply), "sgd")
    with pytest.raises(ValueError, match="non-finite"):
        train.fit(m, bad, task, apply=net.apply, steps=5)


def test_fit_takes_numpy_and_jax_counts(tiny):
    task, net, params = tiny
    m = methods.gradient(task.loss_fn(net.apply), "adam", 1e-2)
    a = train.fit(m, params, task, apply=net.apply, steps=20, eval_every=10, batch_size=32,
                  seed=3)
    b = train.fit(m, params, task, apply=net.apply, steps=np.int64(20),
                  eval_every=jnp.int32(10), batch_size=np.int32(32), seed=jnp.int32(3),
                  budget_s=np.float32(60.0))
    cols = [c for c in a.history.columns if c != "elapsed_s"]
    assert a.history[cols].equals(b.history[cols])


# ------------------------------------------------------------ optimizer learning rates


def test_schedule_learning_rate_trains_and_follows_the_schedule(tiny):
    task, net, params = tiny
    loss = task.loss_fn(net.apply)
    schedule = optax.linear_schedule(0.1, 0.0, 10)
    m = methods.gradient(loss, "sgd", schedule)
    r = train.fit(m, params, task, apply=net.apply, steps=40, eval_every=20, batch_size=64)
    assert r.history["train_loss"].iloc[-1] < 0.8 * r.history["train_loss"].iloc[0]
    # sgd with a schedule: step k moves by schedule(k) * grad; after 10 steps lr is 0
    state = m.init(params)
    step, grad = jax.jit(m.step), jax.jit(jax.grad(loss))
    x, y = task.x_train[:16], task.y_train[:16]
    for k in range(12):
        before = state.params
        grads = grad(before, x, y)
        state, _ = step(state, jax.random.key(k), x, y)
        for p, g, q in zip(jax.tree.leaves(before), jax.tree.leaves(grads),
                           jax.tree.leaves(state.params), strict=True):
            np.testing.assert_allclose(q, p - float(schedule(k)) * g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rate", [0.05, np.float32(0.05), np.float64(0.05), jnp.float32(0.05),
                                  jnp.asarray(0.05, jnp.bfloat16)])
def test_numpy_and_jax_learning_rates_match_python_floats(rate):
    tx = methods.optimizer("sgd", rate)
    ref = methods.optimizer("sgd", float(rate))
    g = {"w": jnp.arange(3.0)}
    a, _ = tx.update(g, tx.init(g))
    b, _ = ref.update(g, ref.init(g))
    np.testing.assert_array_equal(a["w"], b["w"])


def test_default_learning_rate_is_1e_3():
    g = {"w": jnp.ones(2)}
    tx = methods.optimizer("sgd")
    np.testing.assert_allclose(tx.update(g, tx.init(g))[0]["w"], -1e-3 * g["w"])


def quad(p, x):
    return jnp.sum((p["w"] - x) ** 2)


@pytest.mark.parametrize("build", [
    lambda tx, lr: methods.optimizer(tx, lr),
    lambda tx, lr: methods.gradient(quad, tx, lr),
    lambda tx, lr: methods.zeroth_order(quad, tx, lr, num_directions=4),
    lambda tx, lr: methods.forward_gradient(quad, tx, lr),
])
@pytest.mark.parametrize("rate", [10.0, 1e-3, optax.constant_schedule(0.1)])
def test_learning_rate_beside_an_optax_object_is_an_error(build, rate):
    with pytest.raises(ValueError, match=r"learning_rate=.* inside the optax object"):
        build(optax.sgd(1e-3), rate)
    build(optax.sgd(1e-3), None)  # the optax object's own rate: fine
    build("sgd", rate)  # by name the rate is used


@pytest.mark.parametrize("bad", [lambda step: jnp.ones(3), lambda: 0.1, lambda s: "x"])
def test_callables_that_are_not_schedules_are_named(bad):
    with pytest.raises(ValueError, match="learning_rate="):
        methods.optimizer("adam", bad)


# ------------------------------------------------- your own data: regression, multiclass

N_USER, D_USER, NOISE_SHARE = 2000, 20, 0.05
# the best any model can score on y = X w + noise is the share of explained variance:
R2_CEILING = 1 / (1 + NOISE_SHARE)  # 0.952


@pytest.fixture(scope="module")
def linear_task():
    """y = X w + noise, noise variance 5% of the signal's, through from_arrays."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_USER, D_USER))
    signal = x @ rng.normal(size=D_USER)
    y = signal + rng.normal(size=N_USER) * np.sqrt(NOISE_SHARE * signal.var())
    return tasks.from_arrays(x, y, kind="regression", name="linear")


@pytest.fixture(scope="module")
def linear_run(linear_task):
    net = nets.mlp((D_USER, 1), "identity")  # one Dense layer: a linear model
    m = methods.gradient(linear_task.loss_fn(net.apply), "adam", 5e-2)
    # every 10 steps: test_regression_target_honours_the_metric_direction reuses this chunk
    r = train.fit(m, jax.jit(net.init)(jax.random.key(0)), linear_task, apply=net.apply,
                  steps=400, eval_every=10)
    return net, r


def test_user_regression_reaches_r2_near_the_noise_ceiling(linear_task, linear_run):
    net, r = linear_run
    h = r.history
    assert {"train_mse", "train_rmse", "test_r2", "test_loss"} <= set(h.columns)
    # bar: the ceiling 1/1.05 = 0.952 less least-squares estimation error (about
    # d/n_train * noise share = 20/1400 * 0.05 < 0.001) and the test sample's spread
    # (n_test = 400: std of r2 about 0.005); 0.9 leaves ~0.05 for unfinished optimization
    assert h["test_r2"].iloc[-1] > 0.9
    assert h["test_r2"].iloc[-1] < R2_CEILING + 0.03  # 6 std above the ceiling: leakage
    assert h["test_r2"].iloc[0] < 0.5  # the untrained model is far from it
    val = linear_task.evaluate(net.apply, r.state.params, "val")
    assert val["r2"] > 0.9 and val["loss"] == val["mse"]


def test_regression_target_honours_the_metric_direction(linear_task, linear_run):
    net, _ = linear_run
    m = methods.gradient(linear_task.loss_fn(net.apply), "adam", 5e-2)
    params = jax.jit(net.init)(jax.random.key(0))
    run = lambda **kw: train.fit(m, params, linear_task, apply=net.apply, steps=400,  # noqa: E731
                                 eval_every=10, **kw)
    up = run(target=0.5)  # r2 (the regression default) is higher-is-better: rises to 0.5
    assert up.reached and up.history["test_r2"].iloc[-1] >= 0.5
    assert up.history["step"].iloc[-1] < 400 and (up.history["test_r2"].iloc[:-1] < 0.5).all()
    y_var = float(np.var(np.asarray(linear_task.y_test)))
    down = run(target=0.5 * y_var, target_metric="mse")  # mse falls to half the variance
    assert down.reached and down.history["test_mse"].iloc[-1] <= 0.5 * y_var
    assert (down.history["test_mse"].iloc[:-1] > 0.5 * y_var).all()
    with pytest.raises(ValueError, match=r"target_metric='accuracy'.*'r2'"):
        run(target_metric="accuracy")


def test_user_multiclass_blobs_train_with_backprop():
    rng = np.random.default_rng(1)
    y = rng.permutation(np.repeat(np.arange(4), 300))
    x = rng.normal(size=(1200, 10)) + 3.0 * np.eye(10)[y]  # centres 3 e_k, distance 4.24
    task = tasks.from_arrays(x, y, kind="multiclass", name="blobs")
    assert task.n_outputs == 4  # from the labels: no label_names given
    net = nets.mlp((10, 32, task.n_outputs), "relu")
    m = methods.gradient(task.loss_fn(net.apply), "adam", 1e-2)
    r = train.fit(m, jax.jit(net.init)(jax.random.key(0)), task, apply=net.apply, steps=300,
                  eval_every=100)
    # Bayes error <= 3 Phi(-4.24 / 2) = 0.051 (union bound over the 3 other centres), so
    # the best accuracy is >= 0.949; n_test = 240 puts its std at 0.014: a 0.9 bar
    assert r.history["test_accuracy"].iloc[-1] >= 0.9


# ------------------------------------------------------- Objectives: no data, a value


def _sphere_zo():
    from fold_jax.estimators import zo

    f = tasks.get("sphere")  # dim 10, x0 = ones: value 10

    def loss(params):
        return f(params)

    options = {"num_directions": 16, "sigma": 1e-2}
    return f, methods.zeroth_order(loss, "adam", 5e-2, **options), zo.value_and_grad(
        loss, **options).evals


def test_fit_minimizes_an_objective_with_zeroth_order():
    f, m, evals = _sphere_zo()
    r = train.fit(m, f.x0, f, steps=200, eval_every=10)  # the stop run's chunk: compiled once
    h = r.history
    assert list(h.columns) == ["step", "evals", "elapsed_s", "batch_loss", "value", "skipped"]
    assert h["value"].iloc[0] == pytest.approx(10.0)
    assert h["evals"].iloc[-1] == 200 * evals
    # Adam moves each coordinate up to lr = 0.05 a step, so 200 steps can cross the
    # distance 1 to the minimum many times over; what is left is the lr-sized jitter,
    # about dim * lr^2 = 0.025, far below a tenth of the start
    assert h["value"].iloc[-1] < 0.1 * h["value"].iloc[0]
    assert np.isclose(float(f(r.state.params)), h["value"].iloc[-1], rtol=1e-6)
    stop = train.fit(m, f.x0, f, steps=200, eval_every=10, target=1.0)  # value falls to it
    assert stop.reached and stop.history["value"].iloc[-1] <= 1.0
    assert stop.history["step"].iloc[-1] < 200


def test_direct_search_on_an_objective_reports_accepted_moves():
    f = tasks.get("rosenbrock", dim=4)
    m = search.one_plus_one(lambda p: f(p), sigma=0.05)
    r = train.fit(m, f.x0, f, steps=60, eval_every=20)
    h = r.history
    assert {"value", "skipped", "accepted"} <= set(h.columns)
    assert h["value"].iloc[-1] <= h["value"].iloc[0]  # (1+1)-ES only accepts improvements
    assert h["accepted"].sum() > 0


def test_objective_and_apply_arguments_are_checked(tiny):
    f = tasks.get("sphere")
    task, _, params = tiny
    cases = [
        (dict(task=f, params=f.x0, apply=lambda p, x: x), ValueError,
         "apply .*Objective.*leave apply=None"),
        (dict(task=f, params=params), ValueError, "params must be one array of shape"),
        (dict(task=f, params=jnp.ones(3)), ValueError, r"params has shape \(3,\).*\(10,\)"),
        (dict(task=f, params=f.x0.at[2].set(jnp.nan)), ValueError, "params.* non-finite"),
        (dict(task=f, params=f.x0, target_metric="accuracy"), ValueError,
         r"allowed for an Objective: \['value'\]"),
        (dict(task=task, params=params), TypeError, "apply is required for a Task"),
        (dict(task="sphere", params=f.x0), TypeError, "task must be a fold_jax.tasks.Task"),
    ]
    for options, error, match in cases:
        with pytest.raises(error, match=match):
            train.fit(_untouchable(), steps=5, **options)


# ------------------------------------------------------------- eval_split (tuning)


def test_eval_split_val_scores_and_targets_the_validation_split_only(tiny, monkeypatch):
    task, net, params = tiny
    read = []
    original = type(task).split

    def spy(self, split):
        read.append(split)
        return original(self, split)

    monkeypatch.setattr(type(task), "split", spy)
    # the training chunk is test_fit_takes_numpy_and_jax_counts' (batch 32): compiled once
    r = train.fit(methods.gradient(task.loss_fn(net.apply), "adam", 1e-2), params, task,
                  apply=net.apply, steps=20, eval_every=10, batch_size=32, eval_split="val",
                  target=2.0)
    assert read == ["val"]  # the test split is never looked at
    assert {"val_accuracy", "val_loss"} <= set(r.history.columns)
    assert not any(c.startswith("test_") for c in r.history.columns)
    # the history's val accuracy is the head's metric on the whole validation split
    assert r.history["val_accuracy"].iloc[-1] == pytest.approx(
        task.evaluate(net.apply, r.state.params, "val")["accuracy"], abs=1e-7)


def test_eval_split_is_checked_before_anything_runs(tiny):
    task, net, params = tiny
    m = methods.gradient(task.loss_fn(net.apply), "adam")
    with pytest.raises(ValueError, match=r"eval_split='train' is not known; allowed: \['test', "
                                         r"'val'\]"):
        train.fit(m, params, task, apply=net.apply, steps=1, eval_split="train")
    x, y = task.x_train, task.y_train
    no_val = tasks.from_arrays(x, y, kind="binary", val_fraction=0.0)
    with pytest.raises(ValueError, match="has no validation split"):
        train.fit(m, params, no_val, apply=net.apply, steps=1, eval_split="val")


@pytest.mark.parametrize("steps, executed", [(30, 40), (10, 10)])
def test_a_multi_chunk_run_warms_up_once_off_the_clock_and_keeps_its_numbers(steps, executed):
    objective = tasks.Objective("bowl", 3, lambda x: jnp.sum(x**2, axis=-1), jnp.ones(3),
                                jnp.zeros(3))
    calls = []

    class Halving(NamedTuple):
        params: jax.Array

    def step(state, key):
        jax.debug.callback(lambda: calls.append(1), ordered=True)
        state = Halving(state.params * 0.5)
        return state, {"loss": objective(state.params), "evals": jnp.int32(1)}

    method = methods.Method(Halving, step, "halve")
    r = train.fit(method, objective.x0, objective, steps=steps, eval_every=10)
    jax.effects_barrier()
    # a run of 3 chunks executes one more (the warm-up, discarded); a one-chunk run does not
    assert len(calls) == executed
    # halving is exact in float32 (0.5**30 is a normal number): the warm-up left no trace
    np.testing.assert_array_equal(np.asarray(r.state.params),
                                  np.full(3, 0.5**steps, np.float32))
    assert list(r.history["evals"]) == list(range(0, steps + 1, 10))
