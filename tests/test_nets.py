import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax.estimators import perturb
from fold_jax.learn import nets


def test_mlp_shapes_names_and_count(digits_net, digits_params):
    layers = digits_params["params"]
    assert sorted(layers) == ["dense_0", "dense_1", "dense_2"]
    assert layers["dense_1"]["kernel"].shape == (128, 128)
    assert nets.count_params(digits_params) == 64 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    assert digits_net.apply(digits_params, jnp.ones((5, 64))).shape == (5, 10)


@pytest.mark.parametrize("name", sorted(nets.ACTIVATIONS))
def test_every_activation_runs_and_matches_jax_nn(name):
    net = nets.mlp((3, 4, 2), name)
    params = net.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (6, 3))
    p = params["params"]
    h = nets.activation(name)(x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"])
    expected = h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"]
    np.testing.assert_allclose(net.apply(params, x), expected, rtol=1e-5, atol=1e-6)


def test_dense_accepts_lowrank_kernels_fused(digits_net, digits_params):
    k = jax.random.split(jax.random.key(2), 2)
    p = digits_params["params"]
    a = jax.random.normal(k[0], (128, 2))
    b = jax.random.normal(k[1], (128, 2))
    layer = p["dense_1"]
    lazy_kernel = perturb.LowRank(layer["kernel"], a, b, 0.1)
    lazy = {"params": {**p, "dense_1": {**layer, "kernel": lazy_kernel}}}
    dense = {"params": {**p, "dense_1": {**layer, "kernel": perturb.materialize(lazy_kernel)}}}
    x = jax.random.normal(jax.random.key(3), (4, 64))
    np.testing.assert_allclose(digits_net.apply(lazy, x), digits_net.apply(dense, x), rtol=1e-5,
                               atol=1e-5)


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
    k = jax.random.split(jax.random.key(4), 3)
    base = jax.random.normal(k[0], (32, 32))
    a, b = jax.random.normal(k[1], (32, 2)), jax.random.normal(k[2], (32, 2))
    dense = perturb.materialize(perturb.LowRank(base, a, b, 0.3))
    for rows in (4, 64):
        x = jnp.ones((rows, 32))
        for how in perturb.ASSOCIATIONS:
            got = perturb.matmul(x, perturb.LowRank(base, a, b, 0.3, how))
            np.testing.assert_allclose(got, x @ dense, rtol=1e-4, atol=1e-4)
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
    k = jax.random.split(jax.random.key(5), 5)
    base = jax.random.normal(k[0], (16, 24))
    a = jax.random.normal(k[1], (3, 16, rank))
    b = jax.random.normal(k[2], (3, 24, rank))
    x = jax.random.normal(k[3], (3, 2, 5, 16))

    def one(x, a, b):
        w = perturb.LowRank(base, a, b, 0.7, "factored")
        return perturb.matmul(x, w), x @ perturb.materialize(w)

    got, want = jax.vmap(one)(x, a, b)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_dense_layers_in_numeric_order_and_bad_trees():
    params = nets.mlp((3, *[4] * 11, 2)).init(jax.random.key(0))
    names = [n for n, _ in nets.dense_layers(params)]
    assert names == [f"dense_{i}" for i in range(12)]
    assert nets.dense_layers(params["params"])[10][0] == "dense_10"
    for bad in ({}, {"params": {"conv_0": {}}}, [1, 2], {"params": {"dense_1": {}}}):
        with pytest.raises(ValueError, match="dense_"):
            nets.dense_layers(bad)
