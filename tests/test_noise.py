"""Random words to noise: finite at every word (the extremes driven directly, and all
2^24 gaussian grid points), symmetric, and N(0, 1) in moments and tails on 1e7 draws."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from fold_jax.estimators import noise

EXTREME_WORDS = np.array([0, 1, 0xFF, 0x100, 0x7FFFFF00, 0x7FFFFFFF, 0x80000000, 0x800000FF,
                          0xFFFFFE00, 0xFFFFFEFF, 0xFFFFFF00, 0xFFFFFFFE, 0xFFFFFFFF],
                         dtype=np.uint32)
TAIL_4 = math.erfc(4 / math.sqrt(2))  # P(|z| > 4) = 6.334e-5


def test_gaussian_is_finite_and_bounded_at_the_extreme_words():
    u = np.asarray(jax.jit(noise.gaussian)(EXTREME_WORDS))  # one program, not op by op
    assert np.all(np.isfinite(u))
    # the top grid point is 1 - 2^-24 -> sqrt(2) erfinv(.) = 5.42 (float32 erf_inv
    # approximation: within 1e-3 of the exact 5.4199)
    assert np.max(np.abs(u)) < 5.43
    np.testing.assert_array_equal(u[0], -u[-1])  # word 0 and word 2^32-1 mirror


def test_every_gaussian_grid_point_is_finite_and_the_grid_is_symmetric():
    top = np.arange(2**24, dtype=np.uint32) << 8  # every value of the 24 bits used
    gaussian = jax.jit(noise.gaussian)
    u = np.asarray(gaussian(top))
    assert np.all(np.isfinite(u))
    # w and 2^24 - 1 - w give exactly opposite values (the grid is exact in float32)
    np.testing.assert_array_equal(u, -u[::-1])
    # the low 8 bits are ignored
    np.testing.assert_array_equal(np.asarray(gaussian(top[:1000] | np.uint32(0xFF))), u[:1000])


def test_rademacher_is_pm_one_at_the_extreme_words():
    signs = np.asarray(jax.jit(noise.rademacher, static_argnums=1)(EXTREME_WORDS,
                                                                   32 * EXTREME_WORDS.size))
    assert set(np.unique(signs).tolist()) == {-1.0, 1.0}
    np.testing.assert_array_equal(signs[:32], -1.0)  # word 0: every bit 0
    np.testing.assert_array_equal(signs[-32:], 1.0)  # word 2^32-1: every bit 1


@pytest.mark.optimized  # runs one program many times: compile it optimized
@pytest.mark.parametrize("prng", noise.PRNGS)
def test_gaussian_moments_and_tails_on_1e7_draws(prng):
    n = 10_000_000
    keys = jax.random.split(jax.random.key(11), 10)
    u = np.asarray(jax.jit(jax.vmap(lambda k: noise.draw(k, n // 10, "gaussian", prng)))(keys),
                   dtype=np.float64).ravel()
    assert np.all(np.isfinite(u))
    # 5 standard errors: mean SE 1/sqrt(n); sample variance SE sqrt(2/n) (normal kurtosis);
    # tail count binomial SE sqrt(p (1-p) n). A 5-sigma miss has probability < 1e-6.
    assert abs(u.mean()) < 5 / math.sqrt(n)
    assert abs(u.var() - 1) < 5 * math.sqrt(2 / n)
    tail = np.count_nonzero(np.abs(u) > 4)
    assert abs(tail - TAIL_4 * n) < 5 * math.sqrt(TAIL_4 * n)
    # the fourth moment (3 for a normal; SE sqrt(96/n))
    assert abs(np.mean(u**4) - 3) < 5 * math.sqrt(96 / n)


@pytest.mark.parametrize("prng", noise.PRNGS)
def test_rademacher_moments_on_1e7_draws(prng):
    n = 10_000_000
    draw = jax.jit(noise.draw, static_argnums=(1, 2, 3))  # one program, not op by op
    u = np.asarray(draw(jax.random.key(3), n, "rademacher", prng), dtype=np.float64)
    assert abs(u.mean()) < 5 / math.sqrt(n)  # +-1: variance exactly 1
    np.testing.assert_array_equal(np.abs(u), 1.0)


def test_words_differ_by_key_and_prng():
    a, b, c = (np.asarray(noise.words(jax.random.key(seed), 64, prng))
               for seed, prng in ((0, "hash"), (1, "hash"), (0, "threefry")))
    assert a.dtype == np.uint32 and a.shape == (64,)
    assert np.sum(a == b) < 4 and np.sum(a == c) < 4  # 64 / 2^32 expected
