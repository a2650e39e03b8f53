"""Directions: the per-leaf layout (thin leaves and conv kernels), dense views, and a
contraction that selects valid directions instead of multiplying by zero."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fold_jax import directions


def test_layout_thin_leaves_and_conv_kernels():
    leaves, size = directions.layout([(64, 128), (128, 1), (3, 3, 8, 16), (16,)], rank=4)
    low = [leaf.lowrank for leaf in leaves]
    assert low == [True, False, True, False]  # (128, 1) is thinner than rank 4
    assert leaves[2].matrix == (72, 16)  # conv: (kh kw cin, cout)
    assert size == 4 * (64 + 128) + 128 + 4 * (72 + 16) + 16


def test_dense_views_have_the_leaf_shapes_and_masks_apply():
    params = [jnp.zeros((3, 3, 8, 16)), jnp.zeros((10,))]
    mask = [jnp.ones((3, 3, 8, 16)), (jnp.arange(10) % 2).astype(jnp.float32)]
    d = directions.directions(params, rank=2, mask=mask)
    dense = d.dense(d.draw(jax.random.key(0), jnp.uint32(3)))
    assert [u.shape for u in dense] == [(3, 3, 8, 16), (10,)]
    assert bool(jnp.all(dense[1][::2] == 0)) and float(d.d_eff) == 3 * 3 * 8 * 16 + 5


def test_contract_selects_valid_directions_even_with_inf_noise():
    params = [jnp.zeros((5,)), jnp.zeros((4, 6))]
    d = directions.directions(params, rank=2)
    idx = jnp.arange(3, dtype=jnp.uint32)
    parts = d.stacked(jax.random.key(1), idx)
    parts = [parts[0].at[1, 0].set(jnp.inf), parts[1]]  # direction 1's noise is poisoned
    coef = jnp.array([1.0, 0.0, -2.0])
    valid = jnp.array([True, False, True])
    got = d.contract(coef, valid, parts)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in got)
    dense = jax.vmap(d.dense)(parts)
    want = [c0 * u[0] + c2 * u[2] for u, c0, c2 in
            [(dense[0], 1.0, -2.0), (dense[1], 1.0, -2.0)]]
    eps = float(np.finfo(np.float32).eps)
    for g, w in zip(got, want, strict=True):  # two terms, plus rank-2 einsum order
        np.testing.assert_allclose(g, w, rtol=4 * eps, atol=4 * eps * float(jnp.max(jnp.abs(w))))
    assert not bool(jax.vmap(d.finite)(parts)[1])
