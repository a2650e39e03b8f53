"""Zeroth-order estimators: unbiasedness, exactness, fused == materialized, chunking,
NaN handling, validation, no recompilation, and a short training run."""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fold_jax import methods, nets, tasks, train, zo

D = 20
H = jnp.diag(jnp.linspace(0.5, 2.0, D))
B = jnp.linspace(-1.0, 1.0, D)
X0 = {"x": jnp.linspace(-1.0, 1.0, D)[::-1]}
G = H @ X0["x"] + B  # true gradient at X0


def quad(p, *args):
    x = p["x"]
    return 0.5 * x @ H @ x + B @ x


def flat(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def cosine(a, b):
    a, b = flat(a), flat(b)
    return float(a @ b / jnp.sqrt((a @ a) * (b @ b)))


@pytest.fixture(scope="module")
def mlp_problem():
    net = nets.mlp((12, 16, 4), "tanh")
    params = net.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (64, 12))
    y = jnp.argmax(x[:, :4], axis=1)

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()

    return loss, params, x, y


# one-direction variance with an exact directional derivative, |g|^2 units
VARIANCE = {"gaussian": D + 2, "rademacher": D - 1, "sphere": D - 1}


@pytest.mark.parametrize("noise", zo.NOISES)
@pytest.mark.parametrize("antithetic", [True, False])
def test_unbiased_on_quadratic(noise, antithetic):
    k, m = 32, 100
    vg = zo.value_and_grad(quad, num_directions=k, sigma=1e-2, noise=noise,
                           antithetic=antithetic)
    grads = jax.jit(jax.vmap(lambda key: vg(X0, key)[1]["x"]))(
        jax.random.split(jax.random.key(3), m))
    mean = jnp.mean(grads, axis=0)
    units = k // 2 if antithetic else k  # independent directions per estimate
    # E|mean - g|^2 = var / (units m); a sum of ~D squared normals is < 3x its mean
    # except with probability ~1e-6 (chi^2_20). Forward differences add
    # (sigma/2) u^T H u u: zero mean, variance O(sigma^2) -> negligible here.
    expected = VARIANCE[noise] * float(G @ G) / (units * m)
    err = float(jnp.sum((mean - G) ** 2))
    assert err < 3 * expected, (err, expected)
    # and it is a real estimate: much closer to g than to 0 or -g
    assert cosine({"x": mean}, {"x": G}) > 0.9


@pytest.mark.parametrize("noise", zo.NOISES)
def test_antithetic_difference_is_exact_directional_derivative(noise):
    vg = zo.value_and_grad(quad, num_directions=2, sigma=0.5, noise=noise)
    key = jax.random.key(7)
    value, grads = jax.jit(vg)(X0, key)
    u = zo.sample(X0, key, 0, noise=noise)["x"]
    # quadratic: (f(x+su) - f(x-su)) / 2s == g.u for any s; value = f(x) + s^2/2 u^T H u
    np.testing.assert_allclose(grads["x"], (G @ u) * u, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(value, quad(X0) + 0.125 * u @ H @ u, rtol=1e-5)


def test_sphere_noise_has_radius_sqrt_d():
    mask = {"x": (jnp.arange(D) % 2).astype(jnp.float32)}
    u = zo.sample(X0, jax.random.key(1), 5, noise="sphere", mask=mask)["x"]
    np.testing.assert_allclose(jnp.linalg.norm(u), math.sqrt(D // 2), rtol=1e-5)
    assert jnp.all(u[::2] == 0)


def test_rademacher_is_pm_one_and_mask_zeroes_grads():
    mask = {"x": (jnp.arange(D) < 5).astype(jnp.float32)}
    u = zo.sample(X0, jax.random.key(1), 3, noise="rademacher")["x"]
    assert set(np.unique(np.asarray(u)).tolist()) == {-1.0, 1.0}
    _, grads = jax.jit(zo.value_and_grad(quad, num_directions=8, mask=mask))(
        X0, jax.random.key(0))
    assert jnp.all(grads["x"][5:] == 0) and jnp.any(grads["x"][:5] != 0)


def test_threefry_and_hash_prng_agree_in_distribution():
    for prng in zo.PRNGS:
        us = jax.jit(jax.vmap(lambda k, p=prng: flat(zo.sample(X0, jax.random.key(0), k,
                                                                 prng=p))))(jnp.arange(2000))
        # 40000 draws: mean within 5 standard errors, variance 1 within 5%
        assert abs(float(us.mean())) < 5 / math.sqrt(us.size)
        assert abs(float(us.var()) - 1) < 0.05


def test_rank_estimate_aligns_with_mlp_gradient(mlp_problem):
    loss, params, x, y = mlp_problem
    true = jax.grad(loss)(params, x, y)
    n = sum(w.size for w in jax.tree.leaves(params))
    k = 512
    vg = zo.value_and_grad(loss, num_directions=k, sigma=1e-3, rank=2)
    _, grads = jax.jit(vg)(params, jax.random.key(0), x, y)
    # K i.i.d. unit-covariance directions: cos ~ sqrt(K / (K + n)) for an exact
    # derivative (here K = 256 pairs, n = 276 -> 0.69); require 3/4 of it.
    assert cosine(grads, true) > 0.75 * math.sqrt((k // 2) / (k // 2 + n))


def test_fused_equals_materialized(mlp_problem):
    loss, params, x, y = mlp_problem
    key = jax.random.key(4)
    out = {}
    for fused in (True, False):
        vg = zo.value_and_grad(loss, num_directions=16, sigma=1e-2, rank=3, fused=fused)
        out[fused] = jax.jit(vg)(params, key, x, y)
    np.testing.assert_allclose(out[True][0], out[False][0], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(out[True][1]), jax.tree.leaves(out[False][1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3 * float(jnp.max(jnp.abs(b))))


def test_auto_fuses_fold_jax_nets_only(mlp_problem):
    loss, params, x, y = mlp_problem
    assert zo._fusable(loss, params, (x, y), 2)

    def generic(p, x, y):  # flattens params: must not see LowRank factors
        return sum(jnp.sum(w**2) for w in jax.tree.leaves(p))

    assert not zo._fusable(generic, params, (x, y), 2)
    vg = zo.value_and_grad(generic, num_directions=4, rank=2)  # auto -> materialized
    value, _ = jax.jit(vg)(params, jax.random.key(0), x, y)
    assert jnp.isfinite(value)


@pytest.mark.parametrize(
    "options",
    [{"rank": 2}, {"shaping": "centered_ranks"}, {"antithetic": False, "shaping": None}],
)
def test_chunked_equals_unchunked(mlp_problem, options):
    loss, params, x, y = mlp_problem
    key = jax.random.key(5)
    out = []
    for chunk in (None, 6):  # 6 does not divide 16: padded and masked
        vg = zo.value_and_grad(loss, num_directions=16, sigma=1e-2, chunk_size=chunk,
                               **options)
        out.append(jax.jit(vg)(params, key, x, y))
    for value, grads in out[1:]:
        np.testing.assert_allclose(value, out[0][0], rtol=1e-5)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(out[0][1]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_evals_count_padding():
    assert zo.value_and_grad(quad, num_directions=16).evals == 16
    assert zo.value_and_grad(quad, num_directions=16, antithetic=False).evals == 17
    assert zo.value_and_grad(quad, num_directions=16, chunk_size=6).evals == 18


def test_shaping_and_sign_are_invariant_to_monotone_transforms():
    key = jax.random.key(2)
    for options in ({"shaping": "centered_ranks"}, {"sign": True}):
        a = jax.jit(zo.value_and_grad(quad, num_directions=8, sigma=0.1, **options))(X0, key)
        b = jax.jit(zo.value_and_grad(lambda p: jnp.exp(quad(p)), num_directions=8, sigma=0.1,
                                      **options))(X0, key)
        a, b = a[1], b[1]
        np.testing.assert_allclose(a["x"], b["x"], rtol=1e-5, atol=1e-6)
        assert cosine(a, {"x": G}) > 0


def test_nan_directions_are_dropped():
    def spiky(p):  # NaN whenever the first coordinate is pushed up
        return jnp.where(p["x"][0] > X0["x"][0] + 1e-3, jnp.nan, quad(p))

    vg = zo.value_and_grad(spiky, num_directions=64, sigma=1e-2)
    with_info = jax.jit(vg.with_info)
    value, grads, info = with_info(X0, jax.random.key(0))
    assert jnp.isfinite(value) and all(jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads))
    assert 0 < int(info["valid_directions"]) < 64 and int(info["valid_directions"]) % 2 == 0

    value, grads, info = with_info({"x": X0["x"].at[0].add(1.0)}, jax.random.key(0))
    assert jnp.isnan(value) and int(info["valid_directions"]) == 0
    assert all(jnp.all(g == 0) for g in jax.tree.leaves(grads))


def test_nan_injection_never_makes_nan_params(mlp_problem):
    loss, params, x, y = mlp_problem

    def flaky(p, x, y):  # NaN on about half of the perturbations
        return jnp.where(jnp.sin(1e4 * jnp.sum(p["params"]["dense_1"]["bias"])) > 0, jnp.nan,
                         loss(p, x, y))

    m = methods.zeroth_order(flaky, "adam", 1e-2, num_directions=8, sigma=1e-2)
    state = m.init(params)
    step = jax.jit(m.step)
    for i in range(20):
        state, _ = step(state, jax.random.key(i), x, y)
        assert all(jnp.all(jnp.isfinite(w)) for w in jax.tree.leaves(state.params))


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_python_float_and_numpy_leaves_work_like_arrays(chunk_size):
    """jax.value_and_grad takes a Python float or NumPy leaf; so do the estimators."""
    f = lambda p, x: jnp.sum((p["w"] * x) ** 2) + p["b"] ** 2  # noqa: E731
    x = jnp.arange(3.0)
    loose = {"w": np.ones(3, np.float32), "b": 1.5}
    arrays = {"w": jnp.ones(3), "b": jnp.float32(1.5)}
    key = jax.random.key(0)
    vg = zo.value_and_grad(f, num_directions=8, sigma=1e-2, chunk_size=chunk_size)
    fwd = zo.forward_value_and_grad(f, num_directions=3)
    for estimator in (vg, fwd):
        got, want = estimator(loose, key, x), estimator(arrays, key, x)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            assert jnp.shape(a) == jnp.shape(b)
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shards", [None, 1, 3, 8])
def test_population_map_gets_one_row_of_directions_per_shard(mlp_problem, shards):
    """A population map sees (rows, size) direction indices: one row per ``shards``
    (a single row without the attribute), padding dropped; estimates equal vmap's."""
    loss, params, x, y = mlp_problem
    rows_seen = []

    def pmap_like(f):
        def mapped(rows):
            rows_seen.append(rows.shape)
            return jax.vmap(f)(rows)
        return mapped

    if shards is not None:
        pmap_like.shards = shards
    key = jax.random.key(3)
    for make, n in ((lambda **o: zo.value_and_grad(loss, num_directions=10, sigma=1e-2, **o), 5),
                    (lambda **o: zo.forward_value_and_grad(loss, num_directions=7, **o), 7)):
        rows_seen.clear()
        want = make()(params, key, x, y)
        got = make(population_map=pmap_like)(params, key, x, y)
        size = -(-n // (shards or 1))
        assert rows_seen == [(-(-n // size), size)]
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_forward_gradient_unbiased():
    k, m = 4, 500
    vg = zo.forward_value_and_grad(quad, num_directions=k)
    value, _ = jax.jit(vg)(X0, jax.random.key(0))
    np.testing.assert_allclose(value, quad(X0), rtol=1e-6)
    grads = jax.jit(jax.vmap(lambda key: vg(X0, key)[1]["x"]))(
        jax.random.split(jax.random.key(1), m))
    err = float(jnp.sum((grads.mean(0) - G) ** 2))
    assert err < 3 * (D + 2) * float(G @ G) / (k * m)


def test_second_jitted_step_does_not_recompile(mlp_problem):
    loss, params, x, y = mlp_problem
    traces = []

    def counted(p, x, y):
        traces.append(1)
        return loss(p, x, y)

    m = methods.zeroth_order(counted, "adam", 1e-3, num_directions=8, rank=2)
    step = jax.jit(m.step)
    state = m.init(params)
    state, _ = step(state, jax.random.key(0), x, y)
    n_traces, n_cache = len(traces), step._cache_size()
    state, _ = step(state, jax.random.key(1), x, y)
    assert len(traces) == n_traces and step._cache_size() == n_cache == 1


@pytest.mark.parametrize(
    ("options", "argument"),
    [
        ({"num_directions": 0}, "num_directions"),
        ({"num_directions": 7}, "num_directions"),
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -1.0}, "sigma"),
        ({"noise": "uniform"}, "noise"),
        ({"rank": 0}, "rank"),
        ({"rank": 2, "noise": "sphere"}, "sphere"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": 3}, "chunk_size"),
        ({"shaping": "ranks"}, "shaping"),
        ({"fused": "yes"}, "fused"),
        ({"prng": "mt"}, "prng"),
    ],
)
def test_bad_options(options, argument):
    with pytest.raises(ValueError, match=argument):
        zo.value_and_grad(quad, **options)


def test_bad_rank_for_leaf_and_mask(mlp_problem):
    loss, params, x, y = mlp_problem
    with pytest.raises(ValueError, match="rank"):
        zo.value_and_grad(loss, rank=5)(params, jax.random.key(0), x, y)
    with pytest.raises(ValueError, match="mask"):
        zo.value_and_grad(loss, mask={"x": 1})(params, jax.random.key(0), x, y)
    with pytest.raises(ValueError, match="num_directions"):
        zo.forward_value_and_grad(quad, num_directions=0)


def test_zeroth_order_trains_digits_quickly():
    task = tasks.get("digits")
    net = nets.mlp((64, 32, 10), "relu")
    m = methods.zeroth_order(task.loss_fn(net.apply), optax.adam(1e-2), num_directions=32,
                             sigma=1e-2, rank=2, shaping="centered_ranks")
    t0 = time.perf_counter()
    r = train.fit(m, net.init(jax.random.key(0)), task, apply=net.apply, steps=200,
                  batch_size=128, eval_every=200)
    assert time.perf_counter() - t0 < 30
    assert r.history.evals.iloc[-1] == 200 * 32
    # chance is 10%; a working estimator gets past 80% in 200 steps (0.92 measured)
    assert r.history.test_accuracy.iloc[-1] > 0.8, r.history


def test_forward_gradient_method_trains():
    task = tasks.get("digits")
    net = nets.mlp((64, 32, 10), "relu")
    m = methods.forward_gradient(task.loss_fn(net.apply), "adam", 3e-3, num_directions=16)
    r = train.fit(m, net.init(jax.random.key(0)), task, apply=net.apply, steps=200,
                  batch_size=128, eval_every=200)
    assert r.history.test_accuracy.iloc[-1] > r.history.test_accuracy.iloc[0] + 0.3
