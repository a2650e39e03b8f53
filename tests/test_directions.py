"""Directions: the per-leaf layout (thin leaves and conv kernels), dense views, and a
contraction that selects valid directions instead of multiplying by zero."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax.estimators import directions


def test_layout_thin_leaves_and_conv_kernels():
    leaves, size = directions.layout([(64, 128), (128, 1), (3, 3, 8, 16), (16,)], rank=4)
    low = [leaf.lowrank for leaf in leaves]
    assert low == [True, False, True, False]  # (128, 1) is thinner than rank 4
    assert leaves[2].matrix == (72, 16)  # conv: (kh kw cin, cout)
    assert size == 4 * (64 + 128) + 128 + 4 * (72 + 16) + 16
    shapes = [(64, 128), (128, 1), (3, 3, 8, 16), (16,)]
    d = directions.directions([jnp.zeros(x) for x in shapes], rank=4)
    assert d.matrices == {0: (64, 128), 2: (72, 16)}  # the low-rank leaves only
    assert directions.directions([jnp.zeros(x) for x in shapes]).matrices == {}


def test_dense_views_have_the_leaf_shapes_and_masks_apply():
    params = [jnp.zeros((3, 3, 8, 16)), jnp.zeros((10,))]
    mask = [jnp.ones((3, 3, 8, 16)), (jnp.arange(10) % 2).astype(jnp.float32)]
    d = directions.directions(params, rank=2, mask=mask)
    dense = jax.device_get(jax.jit(lambda key: d.dense(d.draw(key, jnp.uint32(3))))(
        jax.random.key(0)))  # one program, not op by op
    assert [u.shape for u in dense] == [(3, 3, 8, 16), (10,)]
    assert np.all(dense[1][::2] == 0) and float(d.d_eff) == 3 * 3 * 8 * 16 + 5


def test_contract_selects_valid_directions_even_with_inf_noise():
    params = [jnp.zeros((5,)), jnp.zeros((4, 6))]
    d = directions.directions(params, rank=2)
    idx = np.arange(3, dtype=np.uint32)
    parts = jax.tree.map(np.array, jax.jit(d.stacked)(jax.random.key(1), idx))  # copies
    parts[0][1, 0] = np.inf  # direction 1's noise is poisoned
    coef = np.array([1.0, 0.0, -2.0], np.float32)
    valid = np.array([True, False, True])

    @jax.jit  # one program for the contraction and the dense views, not op by op
    def contract_and_views(coef, valid, parts):
        return d.contract(coef, valid, parts), jax.vmap(d.dense)(parts), jax.vmap(d.finite)(
            parts)

    got, dense, finite = jax.device_get(contract_and_views(coef, valid, parts))
    assert all(np.all(np.isfinite(g)) for g in got)
    want = [c0 * u[0] + c2 * u[2] for u, c0, c2 in
            [(dense[0], 1.0, -2.0), (dense[1], 1.0, -2.0)]]
    eps = float(np.finfo(np.float32).eps)
    for g, w in zip(got, want, strict=True):  # two terms, plus rank-2 einsum order
        np.testing.assert_allclose(g, w, rtol=4 * eps, atol=4 * eps * float(np.max(np.abs(w))))
    assert not finite[1]


@pytest.mark.parametrize("noise", directions.NOISES)
@pytest.mark.parametrize("prng", ["hash", "threefry"])
def test_stacked_equals_each_draw_bit_for_bit(prng, noise):
    """The stacked loop changes nothing: every direction's parts are exactly its own
    draw, for every noise kind and both word sources."""
    params = [jnp.zeros((3, 3, 8, 16)), jnp.zeros((10,)), jnp.zeros((64, 5))]
    d = directions.directions(params, noise=noise, prng=prng,
                              rank=None if noise == "sphere" else 2)
    k = 7
    key = jax.random.key(5)
    idx = jnp.arange(100, 100 + k, dtype=jnp.uint32)
    got = jax.device_get(jax.jit(d.stacked)(key, idx))
    draw = jax.jit(d.draw)  # one program, called on each index (a traced uint32)
    for i in range(k):
        want = draw(key, idx[i])
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(g[i], w)
    assert all(g.shape[0] == k for g in jax.tree.leaves(got))
