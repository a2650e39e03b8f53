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

from fold_jax.analysis import probes
from fold_jax.estimators import methods, perturb, zo
from fold_jax.learn import nets, tasks, train

# Module constants are built in NumPy and placed with device_put: nothing compiles at
# collection, which every xdist worker repeats for every file.
D = 20
H = jax.device_put(np.diag(np.linspace(0.5, 2.0, D, dtype=np.float32)))
B = jax.device_put(np.linspace(-1.0, 1.0, D, dtype=np.float32))
X0 = {"x": jax.device_put(np.linspace(-1.0, 1.0, D, dtype=np.float32)[::-1].copy())}
G = jax.device_put(np.asarray(H) @ np.asarray(X0["x"]) + np.asarray(B))  # true gradient at X0


def quad(p, *args):
    x = p["x"]
    return 0.5 * x @ H @ x + B @ x


EPS32 = float(np.finfo(np.float32).eps)


def loss_rounding_atol(f0: float, sigma: float) -> float:
    """Bound on an estimate's change when its losses are evaluated in batches of another
    shape (XLA may pick other kernels): each loss may move by its float32 rounding,
    <= 64 eps |f| (64-term sums), a coefficient divides a difference by 2 sigma (pairs:
    two losses), and the estimate averages c_k u_k with |u| < 5.5 (the noise bound)."""
    return 5.5 * 64 * EPS32 * abs(f0) / sigma


def flat(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def cosine(a, b):
    """Cosine of two pytrees, in float64 NumPy (eager jnp would compile each op)."""
    a, b = (np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(t)])
            for t in (a, b))
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


@pytest.fixture(scope="module")
def mlp_problem():
    net = nets.mlp((12, 16, 4), "tanh")

    @jax.jit  # params and data in one program, not op by op (same values as eager)
    def make():
        x = jax.random.normal(jax.random.key(1), (64, 12))
        return net.init(jax.random.key(0)), x, jnp.argmax(x[:, :4], axis=1)

    params, x, y = make()

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()

    return loss, params, x, y


@pytest.fixture(scope="module")
def mlp_f0(mlp_problem):
    """f(params) of mlp_problem, in one compiled program shared by the tests."""
    loss, params, x, y = mlp_problem
    return float(jax.jit(loss)(params, x, y))


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
    mean = np.asarray(grads, np.float64).mean(axis=0)
    g = np.asarray(G, np.float64)
    units = k // 2 if antithetic else k  # independent directions per estimate
    # E|mean - g|^2 = var / (units m); a sum of ~D squared normals is < 3x its mean
    # except with probability ~1e-6 (chi^2_20). Forward differences add
    # (sigma/2) u^T H u u: zero mean, variance O(sigma^2) -> negligible here.
    expected = VARIANCE[noise] * float(g @ g) / (units * m)
    err = float(np.sum((mean - g) ** 2))
    assert err < 3 * expected, (err, expected)
    # and it is a real estimate: much closer to g than to 0 or -g
    assert cosine({"x": mean}, {"x": g}) > 0.9


@pytest.mark.parametrize("noise", zo.NOISES)
def test_antithetic_difference_is_exact_directional_derivative(noise):
    vg = zo.value_and_grad(quad, num_directions=2, sigma=0.5, noise=noise)
    key = jax.random.key(7)
    value, grads = jax.jit(vg)(X0, key)
    u = np.asarray(jax.jit(lambda k: zo.sample(X0, k, 0, noise=noise)["x"])(key), np.float64)
    # the references in float64 NumPy (eager jnp would compile each op)
    x0, h, b, g = (np.asarray(a, np.float64) for a in (X0["x"], H, B, G))

    def quad64(x):
        return 0.5 * x @ h @ x + b @ x

    # quadratic: (f(x+su) - f(x-su)) / 2s == g.u for any s; value = f(x) + s^2/2 u^T H u
    # float32: f(x +- su) round to D eps |f|-ish (D-term sums); their difference over 2s
    # = 1 then carries 2 D eps max|f| per coefficient, times |u| per entry
    f_max = max(abs(quad64(x0 + 0.5 * u)), abs(quad64(x0 - 0.5 * u)))
    np.testing.assert_allclose(grads["x"], (g @ u) * u, rtol=D * EPS32,
                               atol=2 * D * EPS32 * f_max * float(np.max(np.abs(u))))
    np.testing.assert_allclose(value, quad64(x0) + 0.125 * u @ h @ u, rtol=2 * D * EPS32,
                               atol=2 * D * EPS32 * f_max)


def test_sphere_noise_has_radius_sqrt_d():
    mask = {"x": (np.arange(D) % 2).astype(np.float32)}
    u = np.asarray(jax.jit(lambda k: zo.sample(X0, k, 5, noise="sphere", mask=mask)["x"])(
        jax.random.key(1)))
    # the norm is a D-term sum: float32 rounding within D eps
    np.testing.assert_allclose(np.linalg.norm(u.astype(np.float64)), math.sqrt(D // 2),
                               rtol=D * EPS32)
    assert np.all(u[::2] == 0)


def test_rademacher_is_pm_one_and_mask_zeroes_grads():
    mask = {"x": (np.arange(D) < 5).astype(np.float32)}
    u = jax.jit(lambda k: zo.sample(X0, k, 3, noise="rademacher")["x"])(jax.random.key(1))
    assert set(np.unique(np.asarray(u)).tolist()) == {-1.0, 1.0}
    _, grads = jax.jit(zo.value_and_grad(quad, num_directions=8, mask=mask))(
        X0, jax.random.key(0))
    g = np.asarray(grads["x"])
    assert np.all(g[5:] == 0) and np.any(g[:5] != 0)


def test_threefry_and_hash_prng_agree_in_distribution():
    for prng in zo.PRNGS:
        us = np.asarray(jax.jit(jax.vmap(lambda k, p=prng: flat(zo.sample(
            X0, jax.random.key(0), k, prng=p))))(np.arange(2000)), np.float64)
        # 40000 draws: mean within 5 standard errors, variance 1 within 5%
        assert abs(float(us.mean())) < 5 / math.sqrt(us.size)
        assert abs(float(us.var()) - 1) < 0.05


def test_rank_estimate_aligns_with_mlp_gradient(mlp_problem):
    loss, params, x, y = mlp_problem
    true = jax.jit(jax.grad(loss))(params, x, y)  # one program, not op by op
    n = sum(w.size for w in jax.tree.leaves(params))
    k = 512
    vg = zo.value_and_grad(loss, num_directions=k, sigma=1e-3, rank=2)
    _, grads = jax.jit(vg)(params, jax.random.key(0), x, y)
    # K i.i.d. unit-covariance directions: cos ~ sqrt(K / (K + n)) for an exact
    # derivative (here K = 256 pairs, n = 276 -> 0.69); require 3/4 of it.
    assert cosine(grads, true) > 0.75 * math.sqrt((k // 2) / (k // 2 + n))


def test_fused_equals_materialized(mlp_problem, mlp_f0):
    loss, params, x, y = mlp_problem
    key = jax.random.key(4)
    out = {}
    for fused in (True, False):
        vg = zo.value_and_grad(loss, num_directions=16, sigma=1e-2, rank=3, fused=fused)
        out[fused] = jax.jit(vg)(params, key, x, y)
    f0 = mlp_f0
    # the same perturbed weights in two associations: each loss rounds differently
    # (<= 64 eps |f|), which moves the value by that and the estimate by
    # loss_rounding_atol
    np.testing.assert_allclose(out[True][0], out[False][0], rtol=0, atol=64 * EPS32 * f0)
    for a, b in zip(jax.tree.leaves(out[True][1]), jax.tree.leaves(out[False][1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=64 * EPS32, atol=loss_rounding_atol(f0, 1e-2))


def test_auto_fuses_fold_jax_nets_and_says_which_path_ran(mlp_problem):
    loss, params, x, y = mlp_problem
    info = zo.value_and_grad(loss, rank=2).describe(params, x, y)
    assert info["path"] == "fused"
    assert {v["association"] for k, v in info["leaves"].items() if "kernel" in k} <= {
        "factored", "dense"}
    assert all(v["association"] == "full_rank" for k, v in info["leaves"].items()
               if "bias" in k)

    def generic(p, x, y):  # flattens params: must not see LowRank factors
        return sum(jnp.sum(w**2) for w in jax.tree.leaves(p))

    vg = zo.value_and_grad(generic, num_directions=4, rank=2)  # auto -> materialized
    assert vg.describe(params, x, y)["path"] == "materialized"
    with pytest.warns(zo.FallbackWarning, match="dense_0"):
        value, _ = jax.jit(vg)(params, jax.random.key(0), x, y)
    assert np.isfinite(float(value))
    with pytest.raises(ValueError, match=r"fused=True.*\['dense_0'\]\['kernel'\]"):
        zo.value_and_grad(generic, rank=2, fused=True)(params, jax.random.key(0), x, y)
    assert zo.value_and_grad(loss).describe(params, x, y)["path"] == "full_rank"


@pytest.mark.parametrize(
    "options",
    [{"rank": 2}, {"shaping": "centered_ranks"}, {"antithetic": False, "shaping": None}],
)
def test_chunked_equals_unchunked(mlp_problem, mlp_f0, options):
    loss, params, x, y = mlp_problem
    key = jax.random.key(5)
    out = []
    for chunk in (None, 6):  # 6 does not divide 16: padded and masked
        vg = zo.value_and_grad(loss, num_directions=16, sigma=1e-2, chunk_size=chunk,
                               **options)
        out.append(jax.jit(vg)(params, key, x, y))
    f0 = mlp_f0
    for value, grads in out[1:]:  # chunks evaluate the same losses in other batch shapes
        np.testing.assert_allclose(value, out[0][0], rtol=0, atol=64 * EPS32 * f0)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(out[0][1]), strict=True):
            np.testing.assert_allclose(a, b, rtol=64 * EPS32, atol=loss_rounding_atol(f0, 1e-2))


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
        # ranks and signs are equal unless two losses tie within rounding (probability
        # ~ eps here), so the coefficients are equal and the grads agree to the
        # contraction's rounding: 8 terms of |c u| <= 5.5 each
        np.testing.assert_allclose(a["x"], b["x"], rtol=8 * EPS32, atol=8 * 5.5 * EPS32)
        assert cosine(a, {"x": G}) > 0


def test_nan_directions_are_dropped():
    def spiky(p):  # NaN whenever the first coordinate is pushed up
        return jnp.where(p["x"][0] > X0["x"][0] + 1e-3, jnp.nan, quad(p))

    vg = zo.value_and_grad(spiky, num_directions=64, sigma=1e-2)
    with_info = jax.jit(vg.with_info)
    value, grads, info = jax.device_get(with_info(X0, jax.random.key(0)))
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    assert 0 < int(info["valid_directions"]) < 64 and int(info["valid_directions"]) % 2 == 0

    pushed = np.asarray(X0["x"]).copy()
    pushed[0] += 1.0
    value, grads, info = jax.device_get(with_info({"x": pushed}, jax.random.key(0)))
    assert np.isnan(value) and int(info["valid_directions"]) == 0
    assert all(np.all(g == 0) for g in jax.tree.leaves(grads))


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
        assert all(np.all(np.isfinite(w)) for w in jax.device_get(jax.tree.leaves(state.params)))


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_python_float_and_numpy_leaves_work_like_arrays(chunk_size):
    """jax.value_and_grad takes a Python float or NumPy leaf; so do the estimators. The
    params are closed over, so the estimator itself sees the float and the NumPy array
    (as an eager call would), and each call is one program, not op by op; the arrays'
    twin is built the same way, so the two programs differ only in those constants."""
    f = lambda p, x: jnp.sum((p["w"] * x) ** 2) + p["b"] ** 2  # noqa: E731
    x = np.arange(3.0, dtype=np.float32)
    loose = {"w": np.ones(3, np.float32), "b": 1.5}
    arrays = {"w": jnp.ones(3), "b": jnp.float32(1.5)}
    key = jax.random.key(0)
    vg = zo.value_and_grad(f, num_directions=8, sigma=1e-2, chunk_size=chunk_size)
    fwd = zo.forward_value_and_grad(f, num_directions=3)
    for estimator in (vg, fwd):
        got, want = (jax.jit(lambda key, x, p=p, e=estimator: e(p, key, x))(key, x)
                     for p in (loose, arrays))
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            assert np.shape(a) == np.shape(b)
            np.testing.assert_array_equal(a, b)


# the two estimators a population map is checked on: (make, directions, sigma)
POPULATION_ESTIMATORS = (
    (lambda loss, **o: zo.value_and_grad(loss, num_directions=10, sigma=1e-2, **o), 5, 1e-2),
    (lambda loss, **o: zo.forward_value_and_grad(loss, num_directions=7, **o), 7, None))


QUAD_F0 = float(0.5 * np.asarray(X0["x"]) @ np.asarray(H) @ np.asarray(X0["x"])
                + np.asarray(B) @ np.asarray(X0["x"]))  # quad(X0) in NumPy: no compile


@pytest.fixture(scope="module")
def vmapped_estimates():
    """Each POPULATION_ESTIMATORS entry's estimate on quad without a population map
    (key 3), computed once for every ``shards`` case."""
    return [jax.device_get(jax.jit(make(quad))(X0, jax.random.key(3)))
            for make, _, _ in POPULATION_ESTIMATORS]


@pytest.mark.parametrize("shards", [None, 1, 3, 8])
def test_population_map_gets_one_row_of_directions_per_shard(vmapped_estimates, shards):
    """A population map sees (rows, size) direction indices: one row per ``shards``
    (a single row for a plain callable), padding dropped; estimates equal vmap's. On
    quad (d = 20): the rows and the padding are the population's, not the params'."""
    rows_seen = []

    def mapper(f):
        def mapped(rows):
            rows_seen.append(rows.shape)
            return jax.vmap(f)(rows)
        return mapped

    pmap = mapper if shards is None else zo.PopulationMap(mapper, shards)
    key = jax.random.key(3)
    f0 = QUAD_F0
    for (make, n, sigma), want in zip(POPULATION_ESTIMATORS, vmapped_estimates, strict=True):
        rows_seen.clear()  # the map runs at trace time: one compile each, not op by op
        got = jax.jit(make(quad, population_map=pmap))(X0, key)
        size = -(-n // (shards or 1))
        assert rows_seen == [(-(-n // size), size)]
        # the same losses, evaluated in batches of another shape: loss_rounding_atol
        # (the forward gradient's derivatives round like the loss: relative 64 eps)
        scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(want))
        atol = loss_rounding_atol(f0, sigma) if sigma else 5.5 * 64 * EPS32 * scale
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=64 * EPS32, atol=atol + 64 * EPS32 * f0)


def test_forward_gradient_unbiased():
    k, m = 4, 500
    vg = zo.forward_value_and_grad(quad, num_directions=k)
    value, _ = jax.jit(vg)(X0, jax.random.key(0))
    np.testing.assert_allclose(value, QUAD_F0, rtol=D * EPS32)  # jvp primal vs direct: D-term sums
    grads = jax.jit(jax.vmap(lambda key: vg(X0, key)[1]["x"]))(
        jax.random.split(jax.random.key(1), m))
    g = np.asarray(G, np.float64)
    err = float(np.sum((np.asarray(grads, np.float64).mean(0) - g) ** 2))
    assert err < 3 * (D + 2) * float(g @ g) / (k * m)


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


def test_thin_leaves_get_full_rank_noise_and_bad_masks_are_named(mlp_problem):
    loss, params, x, y = mlp_problem
    info = zo.value_and_grad(loss, rank=5).describe(params, x, y)  # dense_1 is (16, 4)
    leaves = info["leaves"]
    assert leaves["['params']['dense_1']['kernel']"]["noise"] == "full_rank"
    assert leaves["['params']['dense_0']['kernel']"]["noise"] == "lowrank"
    value, grads = jax.device_get(jax.jit(zo.value_and_grad(loss, rank=5))(
        params, jax.random.key(0), x, y))
    assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
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
    r = train.fit(m, jax.jit(net.init)(jax.random.key(0)), task, apply=net.apply, steps=200,
                  batch_size=128, eval_every=200)
    assert time.perf_counter() - t0 < 30
    assert r.history.evals.iloc[-1] == 200 * 32
    # chance is 10%; a working estimator gets past 80% in 200 steps (0.92 measured)
    assert r.history.test_accuracy.iloc[-1] > 0.8, r.history


def test_forward_gradient_method_trains():
    task = tasks.get("digits")
    net = nets.mlp((64, 32, 10), "relu")
    m = methods.forward_gradient(task.loss_fn(net.apply), "adam", 3e-3, num_directions=16)
    r = train.fit(m, jax.jit(net.init)(jax.random.key(0)), task, apply=net.apply, steps=200,
                  batch_size=128, eval_every=200)
    assert r.history.test_accuracy.iloc[-1] > r.history.test_accuracy.iloc[0] + 0.3


# ------------------------------------------------------- at the scale people use

N_IN, N_OUT = 316, 317  # d = 316 * 317 + 317 = 100,489 parameters
SCALE_X = jax.device_put((np.random.default_rng(20).standard_normal((8, N_IN))
                          / math.sqrt(N_IN)).astype(np.float32))


def linear_loss(p, x):
    return jnp.mean((perturb.matmul(x, p["w"]) + p["b"]) ** 2)


SCALE_PARAMS = {"w": jax.device_put((np.random.default_rng(21).standard_normal((N_IN, N_OUT))
                                     / math.sqrt(N_IN)).astype(np.float32)),
                "b": jax.device_put(np.zeros(N_OUT, np.float32))}
# Where a rare bad word can show: full-rank noise, one chunk (every entry of every
# direction is a fresh word). The low-rank and chunked paths draw through the same
# word -> noise transforms (driven at their extreme words in tests/test_noise.py); at
# d = 1e5 they are checked over fewer calls for their own plumbing (factors, chunk
# offsets), which a wrong index breaks on every call, not once in 2^24 words.
RARE = [(n, prng, None, None) for n in zo.NOISES for prng in zo.PRNGS]
PLUMBING = [(n, prng, rank, chunk) for n in zo.NOISES for prng in zo.PRNGS
            for rank in (None, 4) for chunk in (None, 2)
            if not (n == "sphere" and rank) and (rank, chunk) != (None, None)]


def count_non_finite(vg, calls=1000):
    """Non-finite estimates over ``calls`` calls (and no dropped direction: the loss is
    finite everywhere, so a drop could only come from non-finite noise)."""
    health = probes.estimator_health(vg, SCALE_PARAMS, SCALE_X, calls=calls, seed=22)
    assert health["dropped_directions"] == 0, health
    return health["non_finite"]


@pytest.mark.optimized  # runs one program many times: compile it optimized
@pytest.mark.parametrize(("noise", "prng", "rank", "chunk"), RARE)
def test_no_non_finite_estimate_in_1000_calls_at_d_1e5(noise, prng, rank, chunk):
    # 1000 calls x 4 directions x 1e5 entries = 4e8 full-rank noise draws: the old
    # mapping (+inf once in 2^24 words) gave ~24 infinite entries here (P(none) ~ e^-24)
    vg = zo.value_and_grad(linear_loss, num_directions=4, sigma=1e-2, noise=noise, prng=prng,
                           rank=rank, chunk_size=chunk)
    assert count_non_finite(vg) == 0


@pytest.mark.optimized  # runs one program many times: compile it optimized
@pytest.mark.parametrize(("noise", "prng", "rank", "chunk"), PLUMBING)
def test_no_non_finite_estimate_low_rank_or_chunked_at_d_1e5(noise, prng, rank, chunk):
    # 100 calls: 4e7 draws full-rank chunked (the old bug: ~2.4 expected), and the
    # factors of rank 4; a plumbing fault is non-finite on every call
    vg = zo.value_and_grad(linear_loss, num_directions=4, sigma=1e-2, noise=noise, prng=prng,
                           rank=rank, chunk_size=chunk)
    assert count_non_finite(vg, calls=100) == 0


@pytest.mark.optimized  # runs one program many times: compile it optimized
@pytest.mark.parametrize(("prng", "calls"), [("hash", 1000), ("threefry", 100)])
def test_no_non_finite_forward_gradient_at_d_1e5(prng, calls):
    # hash: fold_jax's own word -> gaussian map, 4e8 draws as above; threefry: the
    # same estimator on jax.random's sampler, 4e7 draws
    vg = zo.forward_value_and_grad(linear_loss, num_directions=4, prng=prng)
    assert count_non_finite(vg, calls=calls) == 0


D_BIG = 10_000
H_BIG = jax.device_put(np.linspace(0.5, 2.0, D_BIG, dtype=np.float32))
B_BIG = jax.device_put(np.linspace(-1.0, 1.0, D_BIG, dtype=np.float32))
X_BIG = {"x": jax.device_put(np.cos(np.arange(D_BIG, dtype=np.float32)))}
G_BIG = jax.device_put(np.asarray(H_BIG) * np.asarray(X_BIG["x"]) + np.asarray(B_BIG))


def quad_big(p):
    x = p["x"]
    return 0.5 * jnp.sum(H_BIG * x * x) + B_BIG @ x


def estimates(vg, params, m):
    keys = jax.random.split(jax.random.key(30), m)
    return jax.jit(jax.vmap(lambda k: flat(vg(params, k)[1])))(keys)


# trace of the covariance of one direction's (g.u) u: E[(g.u)^2 |u|^2] - |g|^2, with
# E[(g.u)^2 |u|^2] = (d + 2)|g|^2 (gaussian: fourth moments) and d |g|^2 for rademacher
# (u_i^2 = 1) and the sphere of radius sqrt(d) (|u|^2 = d, E[u u^T] = I)
def trace_cov(noise, g):
    d, g2 = g.size, float(g @ g)
    return (d + 1) * g2 if noise == "gaussian" else (d - 1) * g2


@pytest.mark.optimized  # runs one program many times: compile it optimized
@pytest.mark.parametrize("noise", zo.NOISES)
def test_unbiased_with_the_predicted_variance_at_d_1e4(noise):
    """At d = 1e4 over K m = 4096 directions: the mean estimate is within the predicted
    error of g, and the per-estimate error matches the variance formula."""
    k, m = 32, 256  # 16 pairs per estimate
    vg = zo.value_and_grad(quad_big, num_directions=k, sigma=1.0, noise=noise)
    est = np.asarray(estimates(vg, X_BIG, m), np.float64)
    g = np.asarray(G_BIG, np.float64)
    pairs = k // 2
    # central differences are exact on a quadratic; float32 rounding of f (~1e4) costs
    # eps |f| / sigma ~ 1e-3 per coefficient against |g.u| ~ |g| ~ 80: negligible.
    per_estimate = trace_cov(noise, G_BIG) / pairs
    # |e|^2 of one estimate is ~ (d / K^2) sum_k (g.u_k)^2: relative sd sqrt(2 / K);
    # averaged over m estimates sqrt(2 / (K m)); 5 of those
    tol = 5 * math.sqrt(2 / (pairs * m))
    err_each = np.mean(np.sum((est - g) ** 2, axis=1))
    assert abs(err_each / per_estimate - 1) < tol, (err_each, per_estimate)
    # the mean of m estimates: E|mean - g|^2 = per_estimate / m (+ |bias|^2)
    err_mean = float(np.sum((est.mean(0) - g) ** 2))
    assert abs(err_mean / (per_estimate / m) - 1) < tol + 5 * math.sqrt(2 / D_BIG), err_mean


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_low_rank_is_unbiased_at_d_1e4(noise):
    """rank 4 on a 100 x 100 matrix: the mean of m estimates is within the error their
    own spread predicts (a self-normalized test: no variance formula needed)."""
    # NumPy constants: eager jnp would compile each op
    w0 = np.cos(np.arange(10_000, dtype=np.float32)).reshape(100, 100)
    h = np.linspace(0.5, 2.0, 10_000, dtype=np.float32).reshape(100, 100)

    def f(p):
        return 0.5 * jnp.sum(h * p["w"] ** 2) + jnp.sum(p["w"])

    g = (h.astype(np.float64) * w0 + 1.0).ravel()
    m = 512
    vg = zo.value_and_grad(f, num_directions=32, sigma=1.0, noise=noise, rank=4,
                           fused=False)  # f reads w elementwise: nothing to fuse
    est = np.asarray(estimates(vg, {"w": w0}, m), np.float64)
    spread = np.mean(np.sum((est - est.mean(0)) ** 2, axis=1)) * m / (m - 1)
    err_mean = float(np.sum((est.mean(0) - g) ** 2))
    # E|mean - g|^2 = spread / m when unbiased; relative sd ~ sqrt(2 / m) + sqrt(2 / d)
    assert err_mean / (spread / m) < 1 + 5 * (math.sqrt(2 / m) + math.sqrt(2 / g.size))


@pytest.mark.optimized  # runs one program many times: compile it optimized
def test_forward_gradient_unbiased_with_the_predicted_variance_at_d_1e4():
    k, m = 16, 256
    vg = zo.forward_value_and_grad(quad_big, num_directions=k)
    est = np.asarray(estimates(vg, X_BIG, m), np.float64)
    g = np.asarray(G_BIG, np.float64)
    per_estimate = trace_cov("gaussian", G_BIG) / k
    tol = 5 * math.sqrt(2 / (k * m))
    assert abs(np.mean(np.sum((est - g) ** 2, axis=1)) / per_estimate - 1) < tol
    err_mean = float(np.sum((est.mean(0) - g) ** 2))
    assert abs(err_mean / (per_estimate / m) - 1) < tol + 5 * math.sqrt(2 / D_BIG)


def test_non_finite_noise_is_selected_out_not_multiplied(monkeypatch):
    """A direction whose noise has an inf is dropped; 0 * inf never reaches the sum."""
    from fold_jax.estimators import directions as directions_lib

    real = directions_lib.noise_lib.draw

    def poisoned(key, n, kind, prng):
        u = real(key, n, kind, prng)
        return u.at[0].set(jnp.where(u[1] > 0, jnp.inf, u[0]))  # about half the directions

    monkeypatch.setattr(directions_lib.noise_lib, "draw", poisoned)
    vg = zo.value_and_grad(quad, num_directions=64, sigma=1e-2)
    value, grads, info = jax.device_get(jax.jit(vg.with_info)(X0, jax.random.key(0)))
    assert np.isfinite(value) and np.all(np.isfinite(grads["x"]))
    kept = int(info["valid_directions"])
    assert 0 < kept < 64 and kept + int(info["dropped_directions"]) == 64
    fwd = zo.forward_value_and_grad(quad, num_directions=16)
    _, grads, info = jax.device_get(jax.jit(fwd.with_info)(X0, jax.random.key(0)))
    assert np.all(np.isfinite(grads["x"])) and 0 < int(info["valid_directions"]) < 16


@pytest.mark.parametrize("antithetic, sign", [(True, False), (False, True)])
def test_numpy_bool_flags_act_as_python_bools(antithetic, sign):
    key = jax.random.key(5)
    options = dict(num_directions=8, sigma=0.1)
    a = zo.value_and_grad(quad, antithetic=antithetic, sign=sign, **options)
    b = zo.value_and_grad(quad, antithetic=np.bool_(antithetic), sign=np.bool_(sign), **options)
    assert a.evals == b.evals  # the padding rule reads the flag as a Python bool
    for x, y in zip(jax.tree.leaves(jax.jit(a)(X0, key)), jax.tree.leaves(jax.jit(b)(X0, key)),
                    strict=True):
        np.testing.assert_array_equal(x, y)  # the same program: bit-identical


def test_sample_names_a_bad_key_or_index_and_takes_numpy_ints():
    with pytest.raises(ValueError, match="k=-1"):
        zo.sample(X0, jax.random.key(0), -1)
    with pytest.raises(ValueError, match=r"k=1\.5"):
        zo.sample(X0, jax.random.key(0), 1.5)
    with pytest.raises(TypeError, match="key"):
        zo.sample(X0, 3, 0)
    # each call one program (closed over its index: sample still sees the NumPy int)
    a = jax.jit(lambda: zo.sample(X0, jax.random.key(0), np.int64(3)))()
    b = jax.jit(lambda: zo.sample(X0, jax.random.key(0), 3))()
    np.testing.assert_array_equal(a["x"], b["x"])
    # a traced index (under vmap) is the caller's to keep in range
    many = jax.jit(jax.vmap(lambda k: zo.sample(X0, jax.random.key(0), k)))(np.arange(4))
    np.testing.assert_array_equal(many["x"][3], b["x"])


@pytest.fixture(scope="module")
def digits_sized_problem():
    """The digits MLP's shape (64-128-128-10, d = 26,122) on a 256-example batch."""
    net = nets.mlp((64, 128, 128, 10), "relu")
    params, x, y = jax.jit(lambda: (  # one program, not op by op (same values as eager)
        net.init(jax.random.key(0)), jax.random.normal(jax.random.key(1), (256, 64)),
        jax.random.randint(jax.random.key(2), (256,), 0, 10)))()

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y).mean()

    return loss, params, x, y


FORWARD_K, FORWARD_KEY_SEED = 8, 7  # the chunking test's K tangents and key


@pytest.fixture(scope="module")
def forward_reference(digits_sized_problem):
    """(f0, d, want): the loss, the K directional derivatives d_k = grad f . u_k and
    the estimate (1/K) sum_k d_k u_k, rebuilt from the public directions module and
    backprop's gradient in one program, shared by every chunking."""
    from fold_jax.estimators import directions as directions_lib

    loss, params, x, y = digits_sized_problem
    k, key = FORWARD_K, jax.random.key(FORWARD_KEY_SEED)

    @jax.jit
    def reference(params, x, y):
        leaves = jax.tree.leaves(params)
        parts = directions_lib.directions(leaves, noise="gaussian", prng="hash").stacked(
            key, jnp.arange(k, dtype=jnp.uint32))
        f0, g = jax.value_and_grad(loss)(params, x, y)
        d = sum(jnp.einsum("k...,...->k", u, gl)
                for u, gl in zip(parts, jax.tree.leaves(g), strict=True))
        return f0, d, [jnp.einsum("k,k...->...", d, u) / k for u in parts]

    return jax.device_get(reference(params, x, y))


@pytest.mark.parametrize("chunk_size", [None, 1, 3])  # 8 and 64: the test below
def test_forward_gradient_chunks_use_the_same_tangents_at_d_26k(digits_sized_problem,
                                                                 forward_reference,
                                                                 chunk_size):
    """Chunked or not, the estimate is (1/K) sum_k (grad f . u_k) u_k over the same K
    tangents u_k = directions(key, k), rebuilt from the public directions module and
    backprop's gradient (forward_reference); padding (K = 8 in chunks of 3: one padded
    tangent) is computed, counted in ``evals``, and dropped."""
    loss, params, x, y = digits_sized_problem
    k, key = FORWARD_K, jax.random.key(FORWARD_KEY_SEED)
    vg = zo.forward_value_and_grad(loss, num_directions=k, chunk_size=chunk_size)
    value, grads, info = jax.jit(vg.with_info)(params, key, x, y)
    per = k if chunk_size is None else min(k, chunk_size)
    assert vg.evals == -(-k // per) * per and vg.describe(params)["chunks"] == (-(-k // per),
                                                                                per)
    assert int(info["valid_directions"]) == k and int(info["dropped_directions"]) == 0

    f0, d, want = forward_reference
    # each jvp's derivative rounds like the loss (relative 64 eps of |d_k|, 64-term sums;
    # backprop's gradient alike), |u| < 5.5 (the noise bound), and the K-term sums run in
    # another order per chunking: K eps more
    atol = 5.5 * (2 * 64 + k) * EPS32 * float(np.max(np.abs(d)))
    np.testing.assert_allclose(float(value), float(f0), rtol=64 * EPS32)
    for got, ref in zip(jax.tree.leaves(grads), want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=0, atol=atol)
    assert jax.tree.structure(grads) == jax.tree.structure(params)


@pytest.mark.parametrize("chunk_size", [FORWARD_K, 8 * FORWARD_K])
def test_forward_gradient_chunks_of_k_or_more_are_the_one_chunk_program(digits_sized_problem,
                                                                       chunk_size):
    """chunk_size >= K is one chunk of K tangents: the very program chunk_size=None
    traces (equal jaxprs; that one is checked against the reference above), so it is
    traced here, not compiled and run again."""
    loss, params, x, y = digits_sized_problem
    key = jax.random.key(FORWARD_KEY_SEED)
    one, vg = (zo.forward_value_and_grad(loss, num_directions=FORWARD_K, chunk_size=c)
               for c in (None, chunk_size))
    assert vg.evals == FORWARD_K and vg.describe(params)["chunks"] == (1, FORWARD_K)
    want, got = (str(jax.make_jaxpr(e.with_info)(params, key, x, y)) for e in (one, vg))
    assert got == want


def test_forward_gradient_chunks_bound_the_tangents_in_memory(digits_sized_problem):
    """With chunk_size=1 the compiled call holds one tangent, not K = 64 of them (64 x
    26,122 floats, 6.7 MB)."""
    loss, params, x, y = digits_sized_problem
    key = jax.random.key(0)

    def temp_bytes(chunk_size):
        vg = zo.forward_value_and_grad(loss, num_directions=64, chunk_size=chunk_size)
        memory = jax.jit(vg).lower(params, key, x, y).compile().memory_analysis()
        if memory is None:
            pytest.skip("this backend reports no memory analysis")
        return memory.temp_size_in_bytes

    tangents = 64 * 26_122 * 4
    assert temp_bytes(None) >= tangents
    assert temp_bytes(1) < tangents / 4


@pytest.mark.parametrize("chunk_size", [0, -2, 2.5, True, "auto"])
def test_forward_gradient_refuses_a_bad_chunk_size(chunk_size):
    with pytest.raises((ValueError, TypeError), match="chunk_size"):
        zo.forward_value_and_grad(quad, num_directions=4, chunk_size=chunk_size)
    with pytest.raises((ValueError, TypeError), match="chunk_size"):
        methods.forward_gradient(quad, "adam", 1e-2, 4, chunk_size=chunk_size)
