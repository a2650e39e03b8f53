import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fold_jax import methods, tasks, train


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
    again = train.fit(m, digits_params, digits, apply=digits_net.apply, steps=300, seed=0)
    for a, b in zip(jax.tree.leaves(adam_run.state.params), jax.tree.leaves(again.state.params),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    cols = [c for c in adam_run.history.columns if c != "elapsed_s"]
    assert adam_run.history[cols].equals(again.history[cols])
    other = train.fit(m, digits_params, digits, apply=digits_net.apply, steps=50, seed=1)
    assert not np.array_equal(other.state.params["params"]["dense_0"]["kernel"],
                              adam_run.state.params["params"]["dense_0"]["kernel"])


def test_target_stops_early_and_budget_in_seconds(digits, digits_net, digits_params):
    m = methods.gradient(digits.loss_fn(digits_net.apply), "adam", 1e-3)
    r = train.fit(m, digits_params, digits, apply=digits_net.apply, steps=1000, target=0.9,
                  eval_every=10)
    assert r.reached and r.history["step"].iloc[-1] < 1000
    assert r.history["test_accuracy"].iloc[-1] >= 0.9
    r = train.fit(m, digits_params, digits, apply=digits_net.apply, budget_s=0.05, eval_every=5)
    assert not r.reached and r.history["elapsed_s"].iloc[-1] >= 0.05


def test_full_batch_and_multilabel_metrics(digits_net):
    from fold_jax import nets

    task = tasks.get("breast_cancer")
    net = nets.mlp((30, 16, 1), "tanh")
    m = methods.gradient(task.loss_fn(net.apply), "sgd", 0.1)
    r = train.fit(m, net.init(jax.random.key(0)), task, apply=net.apply, steps=20,
                  batch_size=task.n_train, eval_every=20)
    assert r.history["test_accuracy"].iloc[-1] > 0.85
    task = tasks.get("digit_attributes")
    net = nets.mlp((64, 32, 4), "relu")
    m = methods.gradient(task.loss_fn(net.apply), "adam", 1e-2)
    r = train.fit(m, net.init(jax.random.key(0)), task, apply=net.apply, steps=40, eval_every=20,
                  target_metric="micro_f1")
    assert {"test_micro_f1", "train_micro_f1"} <= set(r.history.columns)
    assert r.history["test_micro_f1"].iloc[-1] > 0.8


def test_non_finite_loss_never_poisons_params(digits, digits_net, digits_params):
    base = digits.loss_fn(digits_net.apply)

    def flaky(params, x, y):  # NaN on roughly half of the minibatches
        return jnp.where(jnp.sum(y) % 2 == 0, jnp.nan, base(params, x, y))

    m = methods.gradient(flaky, "adam", 1e-3)
    r = train.fit(m, digits_params, digits, apply=digits_net.apply, steps=40, eval_every=20)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(r.state))
    assert r.history["test_accuracy"].iloc[-1] > 0.5  # the finite steps still trained


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
    from fold_jax import nets

    task = tasks.get("breast_cancer")  # 30 features, the net expects 64
    net = nets.mlp((64, 8, 1))
    m = methods.gradient(task.loss_fn(net.apply), "sgd")
    with pytest.raises(ValueError, match="in_features"):
        train.fit(m, net.init(jax.random.key(0)), task, apply=net.apply, steps=2)
