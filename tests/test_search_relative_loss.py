"""fold_jax.estimators.search.relative_loss: the essay's fixed-radius search (sample at a fixed
distance, keep if lower)."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax.estimators import search

EPS = float(jnp.finfo(jnp.float32).eps)
D = 10


def sphere(p):
    return jnp.sum(p["x"] ** 2)


def _start():
    x = jax.random.normal(jax.random.key(0), (D,))
    return {"x": x / jnp.linalg.norm(x)}  # ||x0|| = 1


def _run(method, steps, params):
    state = method.init(params)
    step = jax.jit(method.step)
    trail = [np.asarray(state.params["x"])]
    infos = []
    for i in range(steps):
        state, info = step(state, jax.random.key(i + 1))
        trail.append(np.asarray(state.params["x"]))
        infos.append({k: float(v) for k, v in info.items()})
    return trail, infos


@pytest.mark.parametrize("k", [1, 4])
def test_moves_exactly_radius_and_only_downhill(k):
    r = 0.05
    trail, infos = _run(search.relative_loss(sphere, radius=r, num_candidates=k,
                                             acceptance="batch"), 200, _start())
    moves = [np.linalg.norm(b - a) for a, b in itertools.pairwise(trail)]
    losses = [float(np.sum(x**2)) for x in trail]
    for move, before, after, info in zip(moves, losses, losses[1:], infos, strict=False):
        if info["accepted"]:
            # x + r z/|z| in float32: the step length is r up to a few ulps of |x| and r
            assert abs(move - r) <= 8 * EPS * (1 + r)
            assert after < before
        else:
            assert move == 0.0
        assert info["evals"] == k + 1
    assert sum(i["accepted"] for i in infos) > 10


def test_cannot_get_closer_than_half_the_radius():
    # ||x + r u||^2 < ||x||^2 needs x.u < -r/2 <= -|x||u| cos...: impossible once
    # ||x|| < r/2, so the fixed radius leaves a floor at r/2 (GLD's shrinking radii and
    # the (1+1)-ES's adapted sigma are what remove it)
    r = 0.2
    trail, _ = _run(search.relative_loss(sphere, radius=r, acceptance="batch"), 1500,
                    _start())
    norms = [float(np.linalg.norm(x)) for x in trail]
    assert min(norms) >= r / 2 * (1 - 8 * EPS)
    assert norms[-1] < 2 * r  # it did descend from ||x0|| = 1 toward the floor
    gld_trail, _ = _run(search.gld(sphere, max_radius=r, min_radius=1e-3,
                                   acceptance="batch"), 1500, _start())
    assert float(np.linalg.norm(gld_trail[-1])) < r / 2


def test_default_rule_confirms_before_moving():
    method = search.relative_loss(sphere, radius=0.05)
    _, infos = _run(method, 60, _start())
    accepted = [i for i, info in enumerate(infos) if info["accepted"]]
    assert accepted, "no move in 60 steps"
    # "reevaluate": a nomination (2 evals: x and one candidate) and 2 confirmations
    # (2 evals each) precede every move
    for i in accepted:
        assert [infos[j]["evals"] for j in (i - 2, i - 1, i)] == [2, 2, 2]
        assert infos[i - 1]["pending"] == 1


def test_loss_never_rises_on_a_fixed_set():
    # linear regression, decided on a fixed set: the loss of the point kept never rises
    x = jax.random.normal(jax.random.key(3), (64, 5))
    y = x @ jnp.arange(1.0, 6.0)

    def mse(p, x, y):
        return jnp.mean((x @ p["w"] - y) ** 2)

    method = search.relative_loss(mse, radius=0.1, acceptance="fixed_set",
                                  eval_batch=(x, y))
    state = method.init({"w": jnp.zeros(5)})
    step = jax.jit(method.step)
    losses = []
    for i in range(300):
        state, info = step(state, jax.random.key(i), x, y)
        losses.append(float(info["loss"]))
    assert all(b <= a for a, b in itertools.pairwise(losses))
    assert losses[-1] < 0.1 * losses[0]


@pytest.mark.parametrize("options, argument", [
    (dict(radius=0.0), "radius"), (dict(radius=-1.0), "radius"),
    (dict(radius=math.nan), "radius"), (dict(num_candidates=0), "num_candidates"),
    (dict(acceptance="greedy"), "acceptance"),
])
def test_bad_options_name_themselves(options, argument):
    with pytest.raises(ValueError, match=argument):
        search.relative_loss(sphere, **options)
