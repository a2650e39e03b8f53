"""fold_jax.estimators.peers: evosax strategies as fold_jax Methods, through the one training loop
(fold_jax.learn.train.fit) on digits; NaN safety, the CMA-ES size limit, option routing and
validation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fold_jax.estimators import peers
from fold_jax.learn import nets, tasks, train

WIDTHS = (64, 16, 10)  # 1,210 parameters: small enough for CMA-ES's d x d covariance
# the smoke and NaN tests' net (310 parameters): they check plumbing, not learning, and
# CMA-ES's per-step eigendecomposition of its d x d covariance costs ~2.4 s at d = 1,210
# on a 2-core CPU against ~0.07 s here (measured, unoptimized compile)
SMOKE_WIDTHS = (64, 4, 10)
POP = 32
SIGMA = 0.05  # exploration std in weight units (lecun-normal weights are ~0.1-0.25)


@pytest.fixture(scope="module")
def digits():
    return tasks.get("digits")


@pytest.fixture(scope="module")
def small():
    net = nets.mlp(WIDTHS, "relu")
    return net, jax.jit(net.init)(jax.random.key(0))  # one program, not op by op


@pytest.fixture(scope="module")
def tiny():
    net = nets.mlp(SMOKE_WIDTHS, "relu")
    return net, jax.jit(net.init)(jax.random.key(0))  # one program, not op by op


def loss_of(task, net):
    return task.loss_fn(net.apply)


def test_strategies_lists_the_supported_names():
    names = peers.strategies()
    assert {"Open_ES", "SNES", "PGPE", "ARS", "CMA_ES"} <= set(names)
    assert names == peers.STRATEGIES


@pytest.mark.parametrize("name", peers.strategies())
def test_each_strategy_runs_20_steps_through_fit(name, digits, tiny):
    net, params = tiny
    method = peers.evosax_method(name, loss_of(digits, net), population_size=POP, sigma=SIGMA)
    result = train.fit(method, params, digits, apply=net.apply, steps=20, batch_size=128,
                       eval_every=20)
    history = result.history
    assert list(history["step"]) == [0, 20]
    assert int(history["evals"].iloc[-1]) == 20 * (POP + 1)  # population + the mean
    assert result.skipped == 0
    assert np.isfinite(history["batch_loss"].iloc[-1])
    # state.params is the mean, a pytree like the init params, finite
    assert jax.tree.structure(result.state.params) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(result.state.params), jax.tree.leaves(params), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert np.all(np.isfinite(a))
    moved = sum(float(np.sum(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in  # NumPy:
                zip(jax.tree.leaves(result.state.params), jax.tree.leaves(params),  # no compile
                    strict=True))
    assert moved > 0  # the mean moved: tell ran and its result is what fit evaluated


# Hyperparameters for the training runs: population 64, sigma 0.05, 200 steps on
# minibatches of 128 (about 13,000 loss evaluations).
LEARNERS = {
    "Open_ES": {"optimizer": "adam", "learning_rate": 2e-2},
    "SNES": {},  # evosax's natural-gradient mean update (sgd, lr 1) and std adaptation
}


@pytest.mark.optimized  # runs one program many times: compile it optimized
@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_open_es_and_snes_learn_digits(name, digits, small):
    net, params = small
    method = peers.evosax_method(name, loss_of(digits, net), population_size=64, sigma=SIGMA,
                                 **LEARNERS[name])
    result = train.fit(method, params, digits, apply=net.apply, steps=200, batch_size=128,
                       eval_every=100, seed=1)
    h = result.history
    # The training loss falls (chance-level cross-entropy is ln 10 = 2.30 at step 0).
    assert h["train_loss"].iloc[-1] < 0.6 * h["train_loss"].iloc[0], h
    # Bar: test accuracy > 0.5, five times chance (0.1 for ten balanced classes). These
    # runs reach 0.92-0.93 (train loss 2.42 -> 0.09-0.12) with seeds 1 and 2; a strategy
    # that did not learn (wrong fitness sign, params not the mean, NaN) stays near 0.1.
    assert h["test_accuracy"].iloc[-1] > 0.5, h
    assert result.skipped == 0


def test_cma_es_refuses_a_big_net(digits, small):
    big = nets.mlp((64, 128, 128, 10), "relu")  # 26,122 parameters > CMA_MAX_DIMS
    big_params = jax.jit(big.init)(jax.random.key(0))  # one program, not op by op
    method = peers.evosax_method("CMA_ES", loss_of(digits, big), population_size=POP)
    with pytest.raises(ValueError, match=r"population_size=32.*d=26122.*max_dims=4096"):
        method.init(big_params)
    # the limit is only CMA-ES's default: the diagonal strategies take the big net
    snes = peers.evosax_method("SNES", loss_of(digits, big), population_size=POP)
    snes.init(big_params)
    # and it can be overridden (here lowered to refuse the small net)
    small_net, small_params = small
    tight = peers.evosax_method("CMA_ES", loss_of(digits, small_net), population_size=POP,
                                max_dims=1000)
    with pytest.raises(ValueError, match="max_dims=1000"):
        tight.init(small_params)


@pytest.mark.parametrize("name", ["Open_ES", "ARS", "CMA_ES"])
def test_nan_losses_do_not_poison_the_mean(name, digits, tiny):
    net, params = tiny
    loss = loss_of(digits, net)

    def poisoned(p, x, y):
        # NaN for about half of the members, pseudo-randomly: sigma = 0.05 moves the
        # first entry by ~500 radians of sin(1e4 w), so the sign is a coin flip that the
        # strategy cannot learn to avoid
        w = jax.tree.leaves(p)[0].reshape(-1)[0]
        return jnp.where(jnp.sin(1e4 * w) > 0, jnp.nan, loss(p, x, y))

    method = peers.evosax_method(name, poisoned, population_size=POP, sigma=SIGMA)
    step = jax.jit(method.step)
    state = method.init(params)
    x, y = np.asarray(digits.x_train)[:128], np.asarray(digits.y_train)[:128]
    dropped = 0
    for i in range(5):
        state, info = step(state, jax.random.key(i), x, y)
        dropped += int(info["dropped"])
        assert int(info["skipped"]) == 0  # finite members remain: the step is taken
        for leaf in jax.tree.leaves(state.params):
            assert np.all(np.isfinite(leaf))
        assert np.all(np.isfinite(state.es_state.mean))
    # 160 members, each NaN with probability 1/2: 80 +- 6.3 (binomial std; up to 8.9
    # when mirrored pairs share their sign), so the bounds are 4.5+ std away
    assert 40 < dropped < 120, dropped

    # every loss NaN: the step is skipped and the state left as it was
    always_nan = peers.evosax_method(name, lambda p, x, y: jnp.nan * loss(p, x, y),
                                     population_size=POP, sigma=SIGMA)
    state = always_nan.init(params)
    new, info = jax.jit(always_nan.step)(state, jax.random.key(0), x, y)
    assert int(info["skipped"]) == 1 and int(info["dropped"]) == POP
    assert np.isnan(float(info["loss"]))
    jax.tree.map(np.testing.assert_array_equal, new.params, state.params)
    np.testing.assert_array_equal(new.es_state.mean, state.es_state.mean)


def test_info_loss_is_the_mean_loss_or_the_population_best(digits, small):
    net, params = small
    loss = loss_of(digits, net)
    x, y = np.asarray(digits.x_train)[:128], np.asarray(digits.y_train)[:128]
    with_mean = peers.evosax_method("SNES", loss, population_size=POP, sigma=SIGMA)
    _, info = jax.jit(with_mean.step)(with_mean.init(params), jax.random.key(0), x, y)
    # the same loss at the same params, evaluated inside and outside one program
    np.testing.assert_allclose(float(info["loss"]), float(jax.jit(loss)(params, x, y)),
                               rtol=1e-5)
    assert int(info["evals"]) == POP + 1
    best = peers.evosax_method("SNES", loss, population_size=POP, sigma=SIGMA,
                               eval_mean=False, chunk_size=8)
    _, info = jax.jit(best.step)(best.init(params), jax.random.key(0), x, y)
    assert int(info["evals"]) == POP
    assert info["loss"].dtype == jnp.float32 and np.isfinite(float(info["loss"]))


def test_options_reach_evosax(digits, small):
    net, params = small
    loss = loss_of(digits, net)
    # sigma: Open_ES's constant std_schedule, SNES's std_init
    state = peers.evosax_method("Open_ES", loss, population_size=POP, sigma=0.03).init(params)
    np.testing.assert_allclose(float(state.es_state.std), 0.03)
    state = peers.evosax_method("SNES", loss, population_size=POP, sigma=0.03).init(params)
    np.testing.assert_allclose(np.asarray(state.es_state.std), 0.03)
    # an optimizer by name with its learning rate, or an optax object; an evosax param
    m = peers.evosax_method("PGPE", loss, population_size=POP, optimizer="sgd",
                            learning_rate=0.1, std_init=0.02, std_lr=0.05)
    state = m.init(params)
    np.testing.assert_allclose(np.asarray(state.es_state.std), 0.02)
    np.testing.assert_allclose(float(state.es_params.std_lr), 0.05)
    peers.evosax_method("ARS", loss, population_size=POP, optimizer=optax.sgd(0.1)).init(params)
    # the flat mean is the init params
    flat, _ = jax.flatten_util.ravel_pytree(params)
    np.testing.assert_array_equal(state.es_state.mean, flat)


def test_validation(digits, small):
    net, _ = small
    loss = loss_of(digits, net)
    with pytest.raises(ValueError, match=r"strategy='Nope'.*allowed.*Open_ES"):
        peers.evosax_method("Nope", loss, population_size=POP)
    with pytest.raises(TypeError, match="strategy must be a name"):
        peers.evosax_method(object(), loss, population_size=POP)
    with pytest.raises(ValueError, match=r"population_size=33 must be even for Open_ES"):
        peers.evosax_method("Open_ES", loss, population_size=33)
    with pytest.raises(ValueError, match="population_size"):
        peers.evosax_method("SNES", loss, population_size=1)
    with pytest.raises(ValueError, match=r"no option \['std_lr'\].*allowed"):
        peers.evosax_method("Open_ES", loss, population_size=POP, std_lr=0.1)
    with pytest.raises(ValueError, match="sigma"):
        peers.evosax_method("SNES", loss, population_size=POP, sigma=-1.0)
    with pytest.raises(ValueError, match="sigma= or std_init="):
        peers.evosax_method("SNES", loss, population_size=POP, sigma=0.1, std_init=0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        peers.evosax_method("SNES", loss, population_size=POP, learning_rate=0.1)
    with pytest.raises(ValueError, match="learning_rate"):
        peers.evosax_method("CMA_ES", loss, population_size=POP, learning_rate=0.1)
    with pytest.raises(ValueError, match="optimizer"):
        peers.evosax_method("SNES", loss, population_size=POP, optimizer="nope")
    with pytest.raises(TypeError, match="loss must be callable"):
        peers.evosax_method("SNES", "loss", population_size=POP)
    with pytest.raises(ValueError, match="chunk_size"):
        peers.evosax_method("SNES", loss, population_size=POP, chunk_size=0)
