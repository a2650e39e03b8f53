"""Linear-region counting: the tent-map construction, agreement with brute-force
dense sampling, grid estimates, and bad input."""

import jax
import numpy as np
import pytest

from fold_jax.analysis import probes, regions
from fold_jax.estimators import perturb


def _tent(x, depth):
    for _ in range(depth):
        x = 1.0 - np.abs(2.0 * x - 1.0)
    return x


@pytest.mark.parametrize("activation", ["abs", "relu"])
def test_tent_net_has_two_to_the_depth_pieces(activation):
    x = np.linspace(0.0, 1.0, 257)[:, None]
    for depth in range(1, 11):
        net, params = regions.tent_net(depth, activation)
        np.testing.assert_allclose(np.asarray(net.apply(params, x))[:, 0], _tent(x[:, 0], depth),
                                   atol=1e-5)
        r = regions.line_regions(params, [0.0], [1.0], activation=activation)
        assert r.n_regions == 2**depth
        assert r.n_pieces == 2**depth
        # slopes alternate +-2^depth, breakpoints on the dyadic grid k / 2^depth
        np.testing.assert_allclose(np.abs(r.slopes[:, 0]), 2.0**depth, rtol=1e-9)
        np.testing.assert_allclose(r.breakpoints, np.arange(1, 2**depth) / 2**depth, atol=1e-12)


def _brute_force(params, a, b, activation, n=100_001):
    t = np.linspace(0.0, 1.0, n)
    x = (a + t[:, None] * (b - a)).astype(np.float32)
    pattern = np.asarray(jax.jit(regions.activation_patterns, static_argnums=2)(
        params, x, activation))
    changed = np.any(pattern[1:] != pattern[:-1], axis=1)
    return 1 + int(changed.sum()), t[:-1][changed], t[1:][changed]


@pytest.mark.parametrize(("activation", "seed"), [("relu", 0), ("relu", 1), ("abs", 0),
                                                  ("leaky_relu", 1)])
def test_line_regions_match_dense_sampling(activation, seed):
    net = probes.deep_mlp(3, 2, depth=3, width=6, activation=activation)
    params = net.init(jax.random.key(seed))
    a, b = np.array([-2.0, -1.0, 0.5]), np.array([2.0, 1.5, -1.0])
    r = regions.line_regions(params, a, b, activation=activation)
    count, left, right = _brute_force(params, a, b, activation)
    assert r.n_regions == count
    # every exact breakpoint lies in a sampling gap where the sampled pattern changes
    assert np.all((left <= r.breakpoints + 1e-6) & (r.breakpoints - 1e-6 <= right))
    assert 1 <= r.n_pieces <= r.n_regions
    # the tracked slopes are the net's derivative along the segment
    mids = 0.5 * (r.edges[:-1] + r.edges[1:])
    # one program (eager, vmap of jacfwd compiles each of its ops on its own)
    slope = jax.jit(jax.vmap(jax.jacfwd(lambda t: net.apply(params, a + t * (b - a)))))(mids)
    np.testing.assert_allclose(np.asarray(slope), r.slopes, rtol=1e-4, atol=1e-5)


def test_line_regions_of_an_affine_net_is_one():
    net = probes.deep_mlp(2, 1, depth=2, width=5, activation="identity")
    params = net.init(jax.random.key(0))
    r = regions.line_regions(params, [0.0, 0.0], [1.0, 1.0], activation="identity")
    assert (r.n_regions, r.n_pieces, r.breakpoints.size) == (1, 1, 0)


def test_line_regions_reads_lowrank_kernels():
    net = probes.deep_mlp(2, 1, depth=2, width=4, activation="relu")
    params = net.init(jax.random.key(3))
    k = params["params"]["dense_0"]["kernel"]
    rng = np.random.default_rng(1)  # numpy factors: nothing compiled to draw them
    a, b = rng.normal(size=(2, 1)).astype(np.float32), rng.normal(size=(4, 1)).astype(np.float32)
    lowrank = jax.tree.map(lambda x: x, params)
    lowrank["params"]["dense_0"]["kernel"] = perturb.LowRank(k, a, b, 0.5)
    dense = jax.tree.map(lambda x: x, params)
    dense["params"]["dense_0"]["kernel"] = perturb.materialize(
        lowrank["params"]["dense_0"]["kernel"])
    r1 = regions.line_regions(lowrank, [-3.0, -3.0], [3.0, 2.0], activation="relu")
    r2 = regions.line_regions(dense, [-3.0, -3.0], [3.0, 2.0], activation="relu")
    np.testing.assert_allclose(r1.breakpoints, r2.breakpoints, atol=1e-6)


def test_grid_regions_counts_and_bounds():
    net = probes.deep_mlp(2, 1, depth=2, width=4, activation="relu")
    params = net.init(jax.random.key(0))
    origin, u, v = regions.box_plane([-2.0, -2.0], [2.0, 2.0])
    g = regions.grid_regions(params, origin, u, v, activation="relu", resolution=64)
    assert g.pattern_ids.shape == (64, 64)
    assert 1 <= g.n_patterns <= g.n_components
    # a finer grid sees at least as many patterns (nested: 127 = 2 * 64 - 1 shares points)
    fine = regions.grid_regions(params, origin, u, v, activation="relu", resolution=127)
    assert fine.n_patterns >= g.n_patterns
    # each row of the grid is a segment: its distinct runs never exceed the exact count
    for row in (0, 31, 63):
        y = -2.0 + 4.0 * row / 63
        exact = regions.line_regions(params, [-2.0, y], [2.0, y], activation="relu")
        runs = 1 + int(np.sum(g.pattern_ids[row, 1:] != g.pattern_ids[row, :-1]))
        assert runs <= exact.n_regions


def test_grid_regions_of_one_fold_is_two_halfplanes():
    _net, params = regions.tent_net(1, "abs")  # 1-D input: embed a 2-D grid by a plane
    g = regions.grid_regions(params, [0.0], [1.0], [0.0], activation="abs", resolution=9)
    assert (g.n_patterns, g.n_components) == (2, 2)


def test_bad_input_names_the_argument():
    net = probes.deep_mlp(2, 1, depth=1, width=3, activation="relu")
    params = net.init(jax.random.key(0))
    with pytest.raises(ValueError, match="depth"):
        regions.tent_net(0)
    with pytest.raises(ValueError, match="depth"):
        probes.deep_mlp(2, 1, depth=0)
    with pytest.raises(ValueError, match="start"):
        regions.line_regions(params, [1.0, 1.0], [1.0, 1.0], activation="relu")
    with pytest.raises(ValueError, match="start"):
        regions.line_regions(params, [1.0], [1.0, 2.0], activation="relu")
    with pytest.raises(ValueError, match="resolution"):
        regions.grid_regions(params, *regions.box_plane([0, 0], [1, 1]), activation="relu",
                             resolution=1)
    with pytest.raises(ValueError, match="activation"):
        regions.line_regions(params, [0.0, 0.0], [1.0, 1.0], activation="sigmoid")
    with pytest.raises(ValueError, match="activation"):
        regions.grid_regions(params, *regions.box_plane([0, 0], [1, 1]), activation="tanh")
    with pytest.raises(ValueError, match="activation"):
        regions.tent_net(3, "sigmoid")
    with pytest.raises(ValueError, match="params"):
        regions.line_regions({"w": 1}, [0.0], [1.0], activation="relu")
