"""Direct search: monotone invariance, never accepting a higher loss, the 1/5 rule,
NaN safety, validation and a run through train.fit."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax import nets, search, tasks, train

D = 10


def sphere(p, shift):
    return jnp.sum((p["w"] - shift) ** 2) + jnp.sum(p["b"] ** 2)


P0 = {"w": jnp.ones((2, D // 2)), "b": jnp.full((3,), 0.5)}
SHIFT = jnp.zeros((2, D // 2))

BUILDERS = {
    "gld": lambda f, **kw: search.gld(f, max_radius=1.0, min_radius=1e-3, **kw),
    "rso": lambda f, **kw: search.rso(f, num_candidates=4, **kw),
    "one_plus_one": lambda f, **kw: search.one_plus_one(f, sigma=0.3, **kw),
}


def run(method, steps, fun_args=(SHIFT,), params=P0, seed=0):
    step = jax.jit(method.step)
    state = method.init(params)
    states, infos = [state], []
    for i in range(steps):
        state, info = step(state, jax.random.key(seed + i), *fun_args)
        states.append(state)
        infos.append(info)
    return states, infos


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_never_accepts_higher_loss_and_decreases(name):
    # a different shift per step plays the minibatch: compare on the same args
    method = BUILDERS[name](sphere)
    step, f = jax.jit(method.step), jax.jit(sphere)
    state = method.init(P0)
    start = float(f(P0, SHIFT))
    for i in range(30):
        shift = 0.1 * jax.random.normal(jax.random.key(100 + i), SHIFT.shape)
        before = float(f(state.params, shift))
        state, info = step(state, jax.random.key(i), shift)
        after = float(f(state.params, shift))
        assert after <= before
        np.testing.assert_allclose(float(info["loss"]), after, rtol=1e-5)
        assert int(info["accepted"]) == int(after < before)
    assert float(f(state.params, SHIFT)) < 0.8 * start


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_same_trajectory_under_monotone_transform(name):
    a, _ = run(BUILDERS[name](sphere), 10)
    b, _ = run(BUILDERS[name](lambda p, s: jnp.exp(sphere(p, s))), 10)
    for sa, sb in zip(a, b, strict=True):
        for x, y in zip(jax.tree.leaves(sa.params), jax.tree.leaves(sb.params), strict=True):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_nan_candidates_never_accepted(name):
    def holes(p, s):  # NaN on a random half of the space
        v = sphere(p, s)
        return jnp.where(jnp.sin(37.0 * jnp.sum(p["w"])) > 0, jnp.nan, v)

    p0 = {"w": jnp.full((2, D // 2), 0.1), "b": P0["b"]}  # sin(37) < 0: finite start
    assert jnp.isfinite(holes(p0, SHIFT))
    states, infos = run(BUILDERS[name](holes), 30, params=p0)
    for s in states:
        assert jnp.isfinite(holes(s.params, SHIFT))
    assert sum(int(i["accepted"]) for i in infos) > 0  # it did move, around the holes


def test_gld_ladder_and_evals():
    m = search.gld(sphere, max_radius=1.0, min_radius=1 / 8, num_per_radius=2)
    _, info = jax.jit(m.step)(m.init(P0), jax.random.key(0), SHIFT)
    assert int(info["evals"]) == 4 * 2 + 1  # radii 1, 1/2, 1/4, 1/8


def test_one_plus_one_follows_one_fifth_rule():
    damping = 2.0
    m = search.one_plus_one(sphere, sigma=0.3, damping=damping)
    states, infos = run(m, 60)
    wins = np.array([int(i["accepted"]) for i in infos])
    assert 0 < wins.sum() < len(wins)
    sig = np.array([float(s.sigma) for s in states])
    # each step: log sigma += (success - 1/5) / (4/5 damping)
    np.testing.assert_allclose(np.diff(np.log(sig)), (wins - 0.2) / (0.8 * damping), rtol=1e-4,
                               atol=1e-6)


def test_rso_moves_one_coordinate_and_respects_mask():
    mask = {"w": jnp.zeros((2, D // 2)).at[0, 1].set(1.0), "b": jnp.zeros(3)}
    m = search.rso(sphere, num_candidates=4, mask=mask)
    states, infos = run(m, 10)
    assert sum(int(i["accepted"]) for i in infos) > 0
    moved = jax.tree.map(lambda a, b: a != b, states[0].params, states[-1].params)
    np.testing.assert_array_equal(moved["w"], mask["w"] != 0)
    assert not jnp.any(moved["b"])
    # without a mask a step changes at most block_size coordinates
    s2, _ = run(search.rso(sphere, num_candidates=4, block_size=2), 1)
    changed = sum(int(jnp.sum(a != b)) for a, b in zip(jax.tree.leaves(s2[0].params),
                                                       jax.tree.leaves(s2[1].params),
                                                       strict=True))
    assert changed <= 2


@pytest.mark.parametrize(
    ("builder", "options", "argument"),
    [
        (search.gld, {"max_radius": 0.0}, "max_radius"),
        (search.gld, {"min_radius": -1.0}, "min_radius"),
        (search.gld, {"max_radius": 0.1, "min_radius": 1.0}, "min_radius"),
        (search.gld, {"num_per_radius": 0}, "num_per_radius"),
        (search.rso, {"num_candidates": 0}, "num_candidates"),
        (search.rso, {"block_size": 0}, "block_size"),
        (search.rso, {"sigma": 0}, "sigma"),
        (search.one_plus_one, {"sigma": -0.1}, "sigma"),
        (search.one_plus_one, {"damping": 0}, "damping"),
        (search.one_plus_one, {"mask": {"w": jnp.zeros(3)}}, "mask"),
    ],
)
def test_bad_options(builder, options, argument):
    with pytest.raises(ValueError, match=argument):
        builder(sphere, **options)


def test_search_runs_through_fit():
    task = tasks.get("digits")
    net = nets.mlp((64, 16, 10), "relu")
    loss = task.loss_fn(net.apply)
    for m in (search.gld(loss, max_radius=0.5, min_radius=1e-2),
              search.rso(loss, num_candidates=8),
              search.one_plus_one(loss, sigma=0.01)):
        r = train.fit(m, net.init(jax.random.key(0)), task, apply=net.apply, steps=60,
                      batch_size=256, eval_every=60)
        h = r.history
        assert h.train_loss.iloc[-1] < h.train_loss.iloc[0]
        assert h.evals.iloc[-1] > 60
        # history says how many moves were taken: at most one a step, none at step 0
        assert h.accepted.tolist()[0] == 0 and 0 < h.accepted.sum() <= 60
        assert h.skipped.sum() == 0 == r.skipped  # search rejects, it never skips
