import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax.estimators import perturb
from fold_jax.learn import nets

# Inputs are numpy and each check runs as one jitted program (an eager forward compiles
# one program per jnp op and shape).


def _normal(seed, *shape):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@pytest.fixture(scope="module")
def small_params():
    """Params of a (3, 4, 2) MLP (the same for every activation), one jitted init."""
    return jax.jit(nets.mlp((3, 4, 2)).init)(jax.random.key(0))


def test_mlp_shapes_names_and_count(digits_net, digits_params):
    layers = digits_params["params"]
    assert sorted(layers) == ["dense_0", "dense_1", "dense_2"]
    assert layers["dense_1"]["kernel"].shape == (128, 128)
    assert nets.count_params(digits_params) == 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    assert jax.eval_shape(digits_net.apply, digits_params, jnp.ones((5, 64))).shape == (5, 10)


@pytest.mark.parametrize("name", sorted(nets.ACTIVATIONS))
def test_every_activation_runs_and_matches_jax_nn(name, small_params):
    net = nets.mlp((3, 4, 2), name)
    x = _normal(1, 6, 3)

    @jax.jit
    def both(params, x):
        p = params["params"]
        h = nets.activation(name)(x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"])
        return net.apply(params, x), h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"]

    got, expected = both(small_params, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_dense_accepts_lowrank_kernels_fused(digits_net, digits_params):
    p = digits_params["params"]
    a, b, x = _normal(2, 128, 2), _normal(3, 128, 2), _normal(4, 4, 64)

    @jax.jit
    def both(p, a, b, x):
        layer = p["dense_1"]
        lazy_kernel = perturb.LowRank(layer["kernel"], a, b, 0.1)
        lazy = {"params": {**p, "dense_1": {**layer, "kernel": lazy_kernel}}}
        dense = {"params": {**p, "dense_1": {**layer,
                                              "kernel": perturb.materialize(lazy_kernel)}}}
        return digits_net.apply(lazy, x), digits_net.apply(dense, x)

    got, want = both(p, a, b, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("widths", "activation", "error", "match"),
    [((), "relu", ValueError, "widths"), ((64,), "relu", ValueError, "widths"),
     ((64, 0, 10), "relu", ValueError, "widths"), ((64, -3, 10), "relu", ValueError, "widths"),
     ((64, 2.5, 10), "relu", ValueError, "widths"), (64, "relu", TypeError, "widths"),
     ((64, 10), "swish", ValueError, "sigmoid")],
)
def test_bad_construction(widths, activation, error, match):
    with pytest.raises(error, match=match):
        nets.mlp(widths, activation)


def test_numpy_integer_widths_build_the_same_net():
    net = nets.mlp(tuple(np.int64(w) for w in (4, 3, 2)))
    assert net == nets.mlp((4, 3, 2))  # widths become Python ints


def test_wrong_feature_size_names_x(digits_net, digits_params):
    with pytest.raises(ValueError, match="in_features=64"):
        digits_net.apply(digits_params, jnp.ones((3, 30)))


def test_lowrank_associations_agree_and_auto_follows_the_shape_rule():
    base, a, b = _normal(5, 32, 32), _normal(6, 32, 2), _normal(7, 32, 2)

    @jax.jit
    def products(x, base, a, b):  # every association, and x @ the materialized kernel
        dense = perturb.materialize(perturb.LowRank(base, a, b, 0.3))
        return x @ dense, [perturb.matmul(x, perturb.LowRank(base, a, b, 0.3, how))
                           for how in perturb.ASSOCIATIONS]

    for rows in (4, 64):
        want, got = products(np.ones((rows, 32), np.float32), base, a, b)
        assert len(got) == len(perturb.ASSOCIATIONS)
        for g in got:
            np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-4)
    # 4 r (in + out) = 512 < in out = 1024: the factors add < 1/4, factored at any rows
    for rows in (1, 64, 4096):
        assert perturb._factored_is_cheaper((rows, 32), perturb.LowRank(base, a, b, 0.3))
    # a thin 32 -> 4 head: 4 r (in + out) = 288 > 128, so the FLOP rule rows * 36 <= 128
    thin = perturb.LowRank(base[:, :4], a, b[:4], 0.3)
    assert perturb._factored_is_cheaper((3, 32), thin)
    assert not perturb._factored_is_cheaper((4, 32), thin)
    with pytest.raises(ValueError, match="association"):
        perturb.LowRank(base, a, b, 0.3, "fast")


@pytest.mark.parametrize("rank", [1, perturb.UNROLL_MAX_RANK, perturb.UNROLL_MAX_RANK + 1])
def test_factored_product_matches_dense_on_both_sides_of_the_unroll_rank(rank):
    """(x @ a) b^T is unrolled into multiply-adds up to UNROLL_MAX_RANK and a dot
    above it; both equal x @ (base + s a b^T), with leading batch dims and under vmap."""
    base, a, b = _normal(8, 16, 24), _normal(9, 3, 16, rank), _normal(10, 3, 24, rank)
    x = _normal(11, 3, 2, 5, 16)

    def one(x, a, b):
        w = perturb.LowRank(base, a, b, 0.7, "factored")
        return perturb.matmul(x, w), x @ perturb.materialize(w)

    got, want = jax.jit(jax.vmap(one))(x, a, b)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_dense_layers_in_numeric_order_and_bad_trees():
    params = jax.eval_shape(nets.mlp((3, *[4] * 11, 2)).init, jax.random.key(0))  # names only
    names = [n for n, _ in nets.dense_layers(params)]
    assert names == [f"dense_{i}" for i in range(12)]
    assert nets.dense_layers(params["params"])[10][0] == "dense_10"
    for bad in ({}, {"params": {"conv_0": {}}}, [1, 2], {"params": {"dense_1": {}}}):
        with pytest.raises(ValueError, match="dense_"):
            nets.dense_layers(bad)
