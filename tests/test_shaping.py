"""Fitness shaping: built-ins by name, user functions (local or population-wide), sign,
and invariance of ranks to monotone transforms of the loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax.estimators import shaping, zo


def population(losses, valid=None, baseline=None, step=0.2):
    losses = jnp.asarray(losses, jnp.float32)
    valid = jnp.ones(losses.shape[0], bool) if valid is None else jnp.asarray(valid)
    return shaping.Population(losses, valid, baseline, step)


def test_raw_is_the_finite_difference_slope():
    p = population([[3.0, 1.0], [0.0, 2.0]])
    np.testing.assert_array_equal(shaping.raw(p), [10.0, -10.0])  # (f+ - f-) / 0.2
    one_sided = population([[3.0], [0.0]], baseline=jnp.float32(1.0), step=0.1)
    np.testing.assert_allclose(shaping.raw(one_sided), [20.0, -10.0], rtol=1e-6)  # 1 ulp


def test_centered_ranks_ignore_invalid_entries_and_monotone_transforms():
    losses = np.array([[5.0, 1.0], [2.0, 9.0], [np.nan, 0.0], [4.0, 3.0]], np.float32)
    valid = np.array([True, True, False, True])
    c = shaping.centered_ranks(population(losses, valid))
    c_exp = shaping.centered_ranks(population(np.exp(losses), valid))
    np.testing.assert_array_equal(c, c_exp)
    # six valid values ranked 0..5 over [-0.5, 0.5]: 5 -> 4, 1 -> 0; 2 -> 1, 9 -> 5; 4 -> 3, 3 -> 2
    np.testing.assert_allclose(c, [(4 - 0) / 5, (1 - 5) / 5, 0.0, (3 - 2) / 5], rtol=1e-6)


def test_resolve_names_shapings_and_callables():
    assert shaping.resolve(None).name == "raw" and shaping.resolve("sign").local
    assert not shaping.resolve("centered_ranks").local
    assert shaping.resolve(lambda p: p.losses[:, 0]).local is False  # bare callable: 2 passes
    assert shaping.resolve("raw", use_sign=True).name == "sign(raw)"
    with pytest.raises(ValueError, match="shaping='ranks'"):
        shaping.resolve("ranks")
    with pytest.raises(TypeError, match="shaping"):
        shaping.resolve(3)


def test_user_shapings_run_in_one_or_two_passes_with_the_same_numbers():
    def quad(p):
        return jnp.sum((p["x"] - 1.0) ** 2)

    params, key = {"x": jnp.zeros(64)}, jax.random.key(0)
    options = dict(num_directions=32, sigma=1e-2, chunk_size=8)
    raw = zo.value_and_grad(quad, **options)(params, key)[1]["x"]
    doubled = lambda p: 2.0 * shaping.raw(p)  # noqa: E731
    local = zo.value_and_grad(quad, shaping=shaping.Shaping(doubled, local=True), **options)
    wide = zo.value_and_grad(quad, shaping=doubled, **options)
    assert local.describe(params)["schedule"] == "one_pass"
    assert wide.describe(params)["schedule"] == "two_pass"
    # the same coefficients and noise: equal up to the sums' order (32 terms, eps each)
    eps = float(np.finfo(np.float32).eps)
    scale = float(jnp.max(jnp.abs(raw)))
    for vg in (local, wide):
        np.testing.assert_allclose(vg(params, key)[1]["x"], 2 * raw, atol=32 * eps * 2 * scale)
