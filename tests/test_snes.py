"""fold_jax.estimators.snes: rank utilities, descent and scale adaptation at d >= 1e4, parity with
evosax's SNES, dropped directions, masks, chunk invariance, determinism and argument
validation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax.estimators import directions, peers, snes

D = 10_000  # the scale statistical checks run at (the brief: d >= 1e4)
F32 = float(np.finfo(np.float32).eps)


def _run(method, params, n, seed=0, *, step=None, state=None, first=0):
    """Steps ``first .. first + n - 1`` of ``method`` (key i = fold_in(key(seed), i)) from
    ``state`` (default: init(params)) with ``step`` (default: a fresh jit of its step);
    returns the last state and the infos."""
    state = method.init(params) if state is None else state
    step = jax.jit(method.step) if step is None else step
    infos = []
    for i in range(first, first + n):
        state, info = step(state, jax.random.fold_in(jax.random.key(seed), i))
        infos.append(jax.device_get(info))
    return state, infos


@pytest.mark.parametrize("n", [2, 7, 32, 64])
def test_utilities_sum_to_zero_favour_low_losses_and_ignore_invalid(n):
    rng = np.random.default_rng(n)
    losses = rng.normal(size=n).astype(np.float32)
    valid = rng.random(n) > 0.25
    valid[:2] = True
    w = np.asarray(jax.jit(snes.utilities)(losses, valid))  # one program, not op by op
    m = int(valid.sum())
    # n terms of magnitude <= 1, each rounded once: |sum| <= n * eps
    assert abs(w[np.asarray(valid)].sum()) <= n * F32
    assert np.all(w[~np.asarray(valid)] == 0.0)
    order = np.argsort(np.where(valid, losses, np.inf))[:m]
    assert np.all(np.diff(w[order]) <= 0)  # lower loss, no smaller weight
    assert w[order[0]] > 0 and w[order[-1]] == pytest.approx(-1.0 / m)


def test_utilities_of_extreme_losses_are_finite():
    losses = np.array([np.finfo(np.float32).max, -np.finfo(np.float32).max, 0.0,
                       np.inf, np.nan], np.float32)
    valid = np.array([True, True, True, False, False])
    w = np.asarray(jax.jit(snes.utilities)(losses, valid))
    assert np.all(np.isfinite(w)) and w[1] > w[2] > w[0]


@pytest.mark.optimized  # runs one program many times: compile it optimized
def test_descends_an_ill_conditioned_quadratic_at_d_1e4_without_skips():
    scale = jnp.logspace(-2, 1, D)
    params = {"x": jnp.ones(D)}

    def loss(p):
        return jnp.sum(scale * p["x"] ** 2)

    state, infos = _run(snes.snes(loss, num_directions=32, sigma=0.1), params, 300)
    assert sum(int(i["skipped"]) for i in infos) == 0
    assert sum(int(i["dropped_directions"]) for i in infos) == 0
    # an update from weights unrelated to the losses is a random walk of step sigma per
    # coordinate and raises this loss by about 300 sigma^2 sum(scale) (x3 here); SNES
    # must instead remove more than half of it (0.37 of it remains on two seeds)
    assert float(loss(state.params)) < 0.5 * float(loss(params))


def _final_losses(method, loss, params, steps, seeds):
    """loss(params) after ``steps`` steps from each of ``seeds`` (one compile)."""

    def one(seed):
        def body(state, i):
            return method.step(state, jax.random.fold_in(jax.random.key(seed), i))[0], None

        state, _ = jax.lax.scan(body, method.init(params), jnp.arange(steps))
        return loss(state.params)

    run = jax.jit(one)
    return np.array([float(run(s)) for s in seeds])


@pytest.mark.optimized  # runs one program many times: compile it optimized
def test_matches_evosax_snes_in_distribution_at_d_1e4():
    # fold_jax's SNES (noise regenerated from keys, not mirrored) and evosax's are the
    # same update, so after 200 steps on the same problem their final losses come from
    # one distribution. lr_sigma = 0.2 (not SNES's 0.013 at this d) makes the scales
    # matter: x1.5 it moves the final loss by about 15%, seed to seed it varies ~1-2%.
    # Five seeds a side (eight before: each seed is 200 steps at d = 1e4 in all three
    # programs) leave the 1.5x error at Welch's t ~ 20 (measured 19.8; 29.6 with 8).
    scale = jnp.logspace(-2, 1, D)
    params = {"x": jnp.ones(D)}

    def loss(p):
        return jnp.sum(scale * p["x"] ** 2)

    seeds, lr = range(5), 0.2
    theirs = _final_losses(peers.evosax_method("SNES", loss, population_size=16, sigma=0.1,
                                               lr_std_init=lr), loss, params, 200, seeds)

    def welch_t(lr_sigma):
        ours = _final_losses(snes.snes(loss, num_directions=16, sigma=0.1, antithetic=False,
                                       sigma_learning_rate=lr_sigma, chunk_size=None),
                             loss, params, 200, seeds)
        se = math.sqrt(ours.var(ddof=1) / len(ours) + theirs.var(ddof=1) / len(theirs))
        return abs(ours.mean() - theirs.mean()) / se

    # equal means: Welch's t exceeds 7 with probability about 1e-4 at its 8 degrees of
    # freedom (4e-4 at 6, the df of the measured variance ratio ~3; 2e-3 even at its
    # minimum of 4), so a platform's rounding, which changes every trajectory, passes
    assert welch_t(lr) < 7.0
    assert welch_t(1.5 * lr) > 7.0  # and the check sees a 1.5x error in the scales' rate


@pytest.mark.optimized  # runs one program many times: compile it optimized
def test_scales_shrink_along_steep_coordinates_and_not_along_flat_ones():
    half = D // 2
    weights = jnp.concatenate([jnp.full(half, 100.0), jnp.zeros(D - half)])

    def loss(p):
        return jnp.sum(weights * p["x"] ** 2)

    state, _ = _run(snes.snes(loss, num_directions=32, sigma=0.1), {"x": jnp.zeros(D)}, 200)
    sig = np.exp(np.asarray(state.log_sigma["x"]))
    # flat coordinates do not affect the ranking, so their log-scale is a zero-mean walk:
    # per step lr_sigma / 2 (0.012) times sum_k w_k (z_k^2 - 1) (std ~0.45), so after 200
    # steps ~0.076 per coordinate and ~0.001 for a mean over 5,000 (plus a Jensen term
    # 0.076^2 / 2 = 0.003 in exp). The steep half (curvature 200 at sigma 0.1: every
    # perturbation costs loss) drifts down: -0.023 measured, more than 10 such stds.
    flat, steep = sig[half:].mean(), sig[:half].mean()
    assert abs(math.log(flat / 0.1)) < 0.01
    assert math.log(steep / flat) < -0.01


@pytest.mark.optimized  # runs one program many times: compile it optimized
def test_non_finite_losses_drop_directions_and_never_reach_the_params():
    params = {"x": jnp.zeros(D)}

    def loss(p):  # NaN whenever the first coordinate moved up: about half the points
        return jnp.where(p["x"][0] > 0, jnp.nan, jnp.sum(p["x"] ** 2))

    method = snes.snes(loss, num_directions=32, antithetic=False)
    step = jax.jit(method.step)
    first = [step(method.init(params), jax.random.key(i))[1] for i in range(100)]
    dropped = sum(int(i["dropped_directions"]) for i in first)
    kept = sum(int(i["valid_directions"]) for i in first)
    # from x = 0 each point is NaN with probability 1/2: 3,200 Bernoulli(1/2) draws have
    # std 28 around 1,600; 0.4-0.6 is more than 5 stds wide
    assert dropped + kept == 100 * 32 and 0.4 < dropped / (100 * 32) < 0.6
    state, infos = _run(method, params, 100)  # a trajectory: the mean drifts, stays finite
    assert all(int(i["dropped_directions"]) + int(i["valid_directions"]) == 32 for i in infos)
    assert np.all(np.isfinite(np.asarray(state.params["x"])))
    assert np.all(np.isfinite(np.asarray(state.log_sigma["x"])))


def test_a_step_with_no_valid_direction_is_skipped_and_changes_nothing():
    params = {"x": jnp.ones(100)}
    method = snes.snes(lambda p: jnp.nan * jnp.sum(p["x"]), num_directions=8)
    state = method.init(params)
    new, info = jax.jit(method.step)(state, jax.random.key(0))
    assert int(info["skipped"]) == 1 and int(info["valid_directions"]) == 0
    assert int(info["dropped_directions"]) == 8 and math.isnan(float(info["loss"]))
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)


def test_masked_entries_are_never_searched():
    mask = {"x": (jnp.arange(D) % 3 != 0).astype(jnp.float32)}
    params = {"x": jnp.ones(D)}
    method = snes.snes(lambda p: jnp.sum(p["x"] ** 2), num_directions=16, mask=mask)
    state, _ = _run(method, params, 20)
    off = np.asarray(mask["x"]) == 0
    np.testing.assert_array_equal(np.asarray(state.params["x"])[off], 1.0)
    np.testing.assert_array_equal(np.asarray(state.log_sigma["x"])[off],
                                  np.float32(math.log(0.02)))
    assert np.all(np.asarray(state.params["x"])[~off] != 1.0)


@pytest.mark.parametrize("antithetic", [True, False])
def test_chunking_changes_only_the_summation_order(antithetic):
    params = {"w": jnp.linspace(-1, 1, D).reshape(100, 100), "b": jnp.zeros(100)}

    def loss(p):
        return jnp.sum(jnp.tanh(p["w"]) ** 2) + jnp.sum(p["b"] ** 2)

    kw = dict(num_directions=24, sigma=0.05, antithetic=antithetic)
    one, _ = _run(snes.snes(loss, chunk_size=None, **kw), params, 3)
    chunked, _ = _run(snes.snes(loss, chunk_size=5, **kw), params, 3)
    # contractions of 24 terms |w z| <= 4 in another order differ by <= 24 * 4 * eps per
    # step, times lr * sigma (0.05) on the mean and lr_sigma / 2 (~0.012) on log sigma;
    # the losses are computed identically, so the ranks (and weights) agree
    bound = 3 * 24 * 4 * F32
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(chunked), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=bound)


def test_same_key_same_numbers():
    params = {"x": jnp.linspace(0, 1, D)}
    method = snes.snes(lambda p: jnp.sum(jnp.cos(p["x"])), num_directions=16)
    a, _ = _run(method, params, 5, seed=3)
    b, _ = _run(method, params, 5, seed=3)
    c, _ = _run(method, params, 5, seed=4)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.params["x"], c.params["x"])


def test_evals_count_the_padding_of_a_short_last_chunk():
    params = {"x": jnp.ones(10)}
    info = jax.jit(snes.snes(lambda p: jnp.sum(p["x"] ** 2), num_directions=10,
                             antithetic=False, chunk_size=4).step)(
        snes.snes(lambda p: jnp.sum(p["x"] ** 2)).init(params), jax.random.key(0))[1]
    # 10 evaluations in chunks of at most 4: 3 balanced chunks of 4, 2 padding rows
    assert int(info["evals"]) == 12 and int(info["valid_directions"]) == 10


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_directions=7), "num_directions=7 must be even"),
    (dict(num_directions=0), "num_directions"),
    (dict(sigma=0.0), "sigma"),
    (dict(sigma_learning_rate=-1.0), "sigma_learning_rate"),
    (dict(prng="mt"), "prng='mt' is not known"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(tx="newton"), "tx='newton' is not known"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        snes.snes(lambda p: jnp.sum(p), **kwargs)


def test_a_non_callable_loss_and_a_non_bool_antithetic_are_type_errors():
    with pytest.raises(TypeError, match="loss"):
        snes.snes(3.0)
    with pytest.raises(TypeError, match="antithetic"):
        snes.snes(lambda p: jnp.sum(p), antithetic=1)


def test_default_sigma_learning_rate_is_snes_formula():
    assert snes.default_sigma_learning_rate(26_122) == pytest.approx(
        (3 + math.log(26_122)) / (5 * math.sqrt(26_122)))


# ------------------------------------------------------------ rank: factored scales


def _lowrank_dirs(n, m, rank=4):
    from fold_jax.estimators import directions

    return directions.directions([jnp.zeros((n, m))], rank=rank)


def test_factored_scale_gradient_is_the_row_and_column_means_of_the_dense_one():
    n, m, k = 128, 96, 8  # 12,288 entries (d >= 1e4)
    dirs = _lowrank_dirs(n, m)
    coef = np.random.default_rng(0).normal(size=k).astype(np.float32)
    valid = np.array([True] * (k - 1) + [False])

    @jax.jit  # one program, not op by op
    def gradient_and_views(key, coef, valid):
        parts = dirs.stacked(key, jnp.arange(k, dtype=jnp.uint32))
        return snes.scale_gradient(dirs, coef, valid, parts), jax.vmap(dirs.dense)(parts)

    (got,), (dense,) = gradient_and_views(jax.random.key(0), coef, valid)
    e2 = np.asarray(dense, np.float64) ** 2
    c = np.where(np.asarray(valid), np.asarray(coef, np.float64), 0.0)
    g = np.tensordot(c, e2 - 1.0, axes=1)
    # the least-squares projection onto separable matrices (the family's natural gradient)
    want = g.mean(axis=1, keepdims=True) + g.mean(axis=0, keepdims=True) - g.mean()
    # float32: each row/column sum adds n or m squares of size <= max E^2 through r^2
    # products; k such sums weighted by |c| <= 3: error <= k * 3 * max E^2 * (n + m) * eps
    bound = k * 3 * e2.max() * (n + m) * F32
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=bound)


@pytest.fixture(scope="module")
def mlp_loss():
    """(loss, params) of a 64-128-96-10 MLP memorizing 32 examples, built once."""
    from fold_jax.learn import nets

    net = nets.mlp((64, 128, 96, 10), "relu")  # 21,930 params, two fusable matrices
    params = net.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (32, 64))
    y = jax.random.randint(jax.random.key(2), (32,), 0, 10)

    def loss(p):
        import optax

        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(net.apply(p, x), y))

    return loss, params


def test_rank_keeps_log_sigma_separable_and_fused_equals_materialized(mlp_loss):
    loss, params = mlp_loss
    kw = dict(num_directions=16, sigma=0.05, rank=4, antithetic=False, chunk_size=8)
    method = snes.snes(loss, **kw)
    step = jax.jit(method.step)  # one program for the first 3 steps and the 17 after
    few, infos = _run(method, params, 3, step=step)
    fused, more = _run(method, params, 17, step=step, state=few, first=3)
    assert sum(int(i["skipped"]) for i in infos + more) == 0
    for ls in jax.tree.leaves(fused.log_sigma):
        if ls.ndim == 2:
            ls = np.asarray(ls, np.float64)
            resid = ls - ls[:, :1] - ls[:1, :] + ls[0, 0]
            # 20 float32 updates of size <= lr_sigma * |g| ~ 0.05 on values ~3: each
            # rounds by <= 4 eps, four terms: 20 * 4 * 4 * 3 eps
            assert np.abs(resid).max() <= 20 * 4 * 4 * 3 * F32
            assert np.ptp(ls) > 0  # the scales did move apart
    # fused (x A) B^T and materialized x (A B^T) losses differ by float32 association
    # only (~1e-6 relative); the update reads the losses through their ranks alone, so with
    # the same noise the two runs take the same ranks unless two of 16 losses (spread
    # ~1e-2) fall within that rounding of each other. Their updates are then the same sums
    # compiled in two programs, which XLA may fuse and order differently: each of 3 steps
    # sums 16 terms (each entry <= |leaf|-sized), 16 eps relative per sum, 2 sums
    # (mean and log sigma) -> <= 3 * 2 * 16 eps * max|leaf|. A wrong rank or factor moves
    # entries by a step, ~1e-2.
    few_dense, _ = _run(snes.snes(loss, fused=False, **kw), params, 3)
    for a, b in zip(jax.tree.leaves(few), jax.tree.leaves(few_dense), strict=True):
        b = np.asarray(b)
        np.testing.assert_allclose(np.asarray(a), b, rtol=0,
                                   atol=3 * 2 * 16 * F32 * max(float(np.abs(b).max()), 1.0))


def test_rank_descends_a_network_loss_at_d_2e4(mlp_loss):
    loss, params = mlp_loss
    state, infos = _run(snes.snes(loss, num_directions=16, sigma=0.05, rank=4,
                                  antithetic=False), params, 150)
    assert sum(int(i["skipped"]) + int(i["dropped_directions"]) for i in infos) == 0
    # ln(10) = 2.30 at the start; memorizing 32 examples with 150 rank-ordered steps
    # must remove at least a fifth (a random walk of step sigma would raise it)
    assert float(loss(state.params)) < 0.8 * float(loss(params))


def test_rank_on_a_loss_that_reads_raw_weights_warns_and_materializes():
    from fold_jax.estimators.zo import FallbackWarning

    params = {"w": jnp.ones((100, 100))}
    method = snes.snes(lambda p: jnp.sum(p["w"] ** 2), rank=4, num_directions=8)
    with pytest.warns(FallbackWarning, match=r"materialized.*\['w'\]"):
        _, info = jax.jit(method.step)(method.init(params), jax.random.key(0))
    assert int(info["valid_directions"]) == 8


@pytest.mark.parametrize("kwargs, match", [
    (dict(rank=0), "rank"),
    (dict(rank=4, fused="yes"), "fused='yes' is not known"),
    (dict(rank=4, fused=np.True_), "fused=np.True_ is not known"),
    (dict(rank=4, fused=0), "fused=0 is not known"),
    (dict(rank=4, mask={"x": jax.device_put(np.ones(3, np.float32))}),
     "cannot be combined with a mask"),
])
def test_bad_rank_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        snes.snes(lambda p: jnp.sum(p), **kwargs)


def test_learning_rate_none_is_snes_step_with_a_name_and_optax_objects_work():
    params = {"x": jnp.linspace(-1, 1, 64)}

    def loss(p):
        return jnp.sum(p["x"] ** 2)

    default, _ = _run(snes.snes(loss, num_directions=8), params, 2)
    explicit, _ = _run(snes.snes(loss, "sgd", 1.0, num_directions=8), params, 2)
    optax_sgd, _ = _run(snes.snes(loss, __import__("optax").sgd(1.0), num_directions=8),
                        params, 2)
    for a, b, c in zip(jax.tree.leaves(default), jax.tree.leaves(explicit),
                       jax.tree.leaves(optax_sgd), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("mask, match", [
    ({"not_x": jax.device_put(np.ones(8, np.float32))},
     "mask must be a pytree with the structure of params"),
    ({"x": jax.device_put(np.ones(5, np.float32))},
     r"mask leaf shape \(5,\) != param shape \(8,\)"),
])
def test_a_mask_unlike_params_is_named(mask, match):
    method = snes.snes(lambda p: jnp.sum(p["x"] ** 2), num_directions=4, mask=mask)
    with pytest.raises(ValueError, match=match):
        method.init({"x": jnp.ones(8)})


def test_a_non_scalar_loss_is_named_before_anything_runs():
    method = snes.snes(lambda p: p["x"] ** 2, num_directions=4, rank=4)
    with pytest.raises(ValueError, match=r"loss must return a scalar loss; it returned \(8,\)"):
        method.step(method.init({"x": jnp.ones(8)}), jax.random.key(0))


def test_a_numpy_bool_antithetic_acts_as_a_python_bool():
    params = {"x": jnp.linspace(0, 1, 64)}

    def loss(p):
        return jnp.sum(jnp.cos(p["x"]))

    for flag in (True, False):
        a, _ = _run(snes.snes(loss, num_directions=16, antithetic=flag), params, 3)
        b, _ = _run(snes.snes(loss, num_directions=16, antithetic=np.bool_(flag)), params, 3)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)  # the same program: bit-identical


def test_default_scale_learning_rate_counts_only_the_searched_entries():
    params = {"x": jnp.linspace(0, 1, D)}
    mask = {"x": (jnp.arange(D) < D // 4).astype(jnp.float32)}

    def loss(p):
        return jnp.sum(jnp.cos(p["x"]))

    def after(**kw):
        state, _ = _run(snes.snes(loss, num_directions=16, mask=mask, **kw), params, 2)
        return np.asarray(state.log_sigma["x"])

    default = after()
    # the same Python float reaches the same program: bit-identical
    np.testing.assert_array_equal(
        default, after(sigma_learning_rate=snes.default_sigma_learning_rate(D // 4)))
    assert not np.array_equal(
        default, after(sigma_learning_rate=snes.default_sigma_learning_rate(D)))
    assert np.all(default[D // 4:] == np.float32(math.log(0.02)))  # unsearched: untouched


def _reference_step(mu, log_sigma, key, c, n_pairs, lr_sigma):
    """One plain SNES step (lr 1 on the mean, mirrored pairs) re-derived in float64 NumPy
    from the noise fold_jax.estimators.directions draws; returns (mu, log_sigma, noise, losses)."""
    dirs = directions.directions([jnp.asarray(mu, jnp.float32)], noise="gaussian")
    z = np.stack([np.asarray(dirs.draw(key, k)[0], np.float64) for k in range(n_pairs)])
    s = np.exp(log_sigma)
    losses = np.stack([(mu + s * z) @ c, (mu - s * z) @ c], axis=1)  # (pairs, 2)
    m = losses.size
    rank = np.empty(m, np.int64)
    rank[np.argsort(losses.reshape(-1), kind="stable")] = np.arange(1, m + 1)
    raw = np.maximum(0.0, np.log(m / 2 + 1) - np.log(rank))
    w = (raw / raw.sum() - 1.0 / m).reshape(-1, 2)
    g_mu = (w[:, 0] - w[:, 1]) @ z
    g_sigma = (w[:, 0] + w[:, 1]) @ (z * z - 1.0)
    return mu + s * g_mu, log_sigma + 0.5 * lr_sigma * g_sigma, z, losses


def test_steps_match_a_numpy_rederivation_of_snes_at_d_1e4():
    # a linear loss on 16 of d = 10,000 entries (the others are multiplied by exact
    # zeros, so a float32 loss sums 16 nonzero terms): the ranks are then provably the
    # float64 ranks, and each step's whole update is compared entry by entry
    d, n_pairs, active = D, 8, 16
    c = np.zeros(d)
    c[:active] = np.linspace(1.0, 2.0, active)
    loss = lambda p: jnp.dot(p["x"], jnp.asarray(c, jnp.float32))  # noqa: E731
    method = snes.snes(loss, num_directions=2 * n_pairs, sigma=0.05, chunk_size=6)
    state = method.init({"x": jnp.zeros(d)})
    step = jax.jit(method.step)
    lr_sigma = snes.default_sigma_learning_rate(d)
    for i in range(3):  # later steps start from per-entry scales set by earlier ones
        key = jax.random.key(100 + i)
        mu = np.asarray(state.params["x"], np.float64)
        ls = np.asarray(state.log_sigma["x"], np.float64)
        mu_ref, ls_ref, z, losses = _reference_step(mu, ls, key, c, n_pairs, lr_sigma)
        # float32 loss: 16 products of rounded points (<= 3 roundings each) summed in any
        # order: |error| <= (16 + 3) * eps * sum |terms|; distinct ranks need a wider gap
        terms = np.abs(mu[:active]) + np.exp(ls[:active]) * np.abs(z[:, :active])
        loss_err = (active + 3) * F32 * float(np.max(terms @ c[:active]))
        gaps = np.diff(np.sort(losses.reshape(-1)))
        assert gaps.min() > 2 * loss_err, "the fixed keys must give well-separated losses"
        state, info = step(state, key)
        assert int(info.skipped) == 0 and int(info["valid_directions"]) == 2 * n_pairs
        # utilities: <= 10 float32 roundings of terms <= log(m/2 + 1) < 3: |dw| <= 30 eps;
        # a pair's coefficient <= 60 eps off and <= 2 in size; a sum of K = 8 products
        # adds K eps of each |c z|: |d g_mu| <= (60 + 2 K) eps sum_k |z_k|, and the same
        # over |z_k^2 - 1| (+ 2 eps |z^2| for the square) for g_sigma
        k_err = (60 + 2 * n_pairs) * F32
        g_mu_err = k_err * np.sum(np.abs(z), axis=0)
        g_sigma_err = k_err * np.sum(np.abs(z * z - 1.0) + 2 * z * z, axis=0)
        s = np.exp(ls)
        # mean: mu + s g (s rounded once, the product and the sum once each: 3 eps)
        mu_tol = s * g_mu_err + 3 * F32 * (np.abs(mu) + np.abs(mu_ref - mu) + np.abs(mu_ref))
        np.testing.assert_array_less(np.abs(np.asarray(state.params["x"]) - mu_ref), mu_tol)
        ls_tol = 0.5 * lr_sigma * g_sigma_err + 3 * F32 * (np.abs(ls) + np.abs(ls_ref))
        np.testing.assert_array_less(np.abs(np.asarray(state.log_sigma["x"]) - ls_ref), ls_tol)
        # info: the mean of the 16 losses (loss_err each), and the mean scale
        assert abs(float(info.loss) - losses.mean()) <= loss_err + 16 * F32 * np.abs(
            losses).max()
        np.testing.assert_allclose(float(info.sigma_mean), np.exp(ls_ref).mean(),
                                   rtol=d * F32)
