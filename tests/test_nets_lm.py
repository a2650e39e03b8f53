"""Language models in fold_jax.learn.nets: shapes, causality, preset sizes, errors."""

import jax
import numpy as np
import pytest

from fold_jax.learn import nets

V = 85


def _pair(net, T=12, t=5, seed=0):
    """Logits for a batch and for the same batch with token t changed (numpy arrays;
    init and apply each one compiled program, the tokens drawn by numpy: an eager
    flax init or jnp op compiles one small program per operation)."""
    params = jax.jit(net.init)(jax.random.key(seed))
    x = np.random.default_rng(seed + 1).integers(0, V, (3, T), dtype=np.int32)
    x2 = x.copy()
    x2[:, t] = (x[:, t] + 1 + np.arange(3)) % V
    apply = jax.jit(net.apply)
    return np.asarray(apply(params, x)), np.asarray(apply(params, x2))


@pytest.mark.parametrize("net", [
    nets.gru_lm(V, embed=8, hidden=16),
    nets.gru_lm(V, embed=8, hidden=16, layers=2),
    nets.transformer_lm(V, None, width=16, depth=2, heads=2, max_len=32),
], ids=["gru", "gru2", "transformer"])
def test_changing_token_t_never_changes_earlier_logits(net):
    T, t = 12, 5
    y, y2 = _pair(net, T, t)
    assert y.shape == (3, T, V) and y.dtype == np.float32
    # masked attention weights are exactly 0 and a recurrence has not read token t yet:
    # positions < t are computed from identical numbers, so equality is exact
    np.testing.assert_array_equal(y[:, :t], y2[:, :t])
    assert np.min(np.max(np.abs(y[:, t:] - y2[:, t:]), axis=(1, 2))) > 0


@pytest.mark.parametrize("preset,low,high", [("tiny", 5e4, 2e5), ("small", 5e5, 2e6),
                                             ("base", 5e6, 2e7)])
def test_preset_param_counts(preset, low, high):
    net = nets.transformer_lm(V, preset)
    shapes = jax.eval_shape(net.init, jax.random.key(0))  # nothing allocated
    n = nets.count_params(shapes)
    sizes = nets.TRANSFORMER_PRESETS[preset]
    assert n == nets.lm_param_count(V, sizes["width"], sizes["depth"])
    assert low <= n <= high


def test_gru_param_count_is_the_architectures():
    e, h = 64, 128
    shapes = jax.eval_shape(nets.gru_lm(V, embed=e, hidden=h).init, jax.random.key(0))
    # embedding V e; flax GRUCell: input gates 3 (e h + h), recurrent 3 h h and the
    # candidate's recurrent bias h; head h V + V
    assert set(shapes["params"]) == {"embed", "gru_0", "head"}
    assert nets.count_params(shapes) == V * e + 3 * (e * h + h) + 3 * h * h + h + h * V + V


def test_transformer_reads_any_length_up_to_max_len():
    net = nets.transformer_lm(V, None, width=16, depth=1, heads=4, max_len=8)
    params = jax.jit(net.init)(jax.random.key(0))
    apply = jax.jit(net.apply)  # one program per length (eager flax: one per operation)
    assert apply(params, np.zeros((2, 8), np.int32)).shape == (2, 8, V)
    assert apply(params, np.zeros((1, 3), np.int32)).shape == (1, 3, V)
    with pytest.raises(ValueError, match="max_len=8"):  # raised while tracing
        apply(params, np.zeros((1, 9), np.int32))


def test_language_model_errors():
    net = nets.gru_lm(V, embed=4, hidden=4)
    # shapes only: every check below is raised before (or while) tracing, nothing compiles
    params = jax.eval_shape(net.init, jax.random.key(0))
    with pytest.raises(TypeError, match="integer token ids"):
        net.apply(params, np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(batch, T\)"):
        net.apply(params, np.zeros((4,), np.int32))
    with pytest.raises(ValueError, match="params do not fit"):
        jax.eval_shape(nets.gru_lm(V, embed=4, hidden=8).apply, params,
                       np.zeros((1, 4), np.int32))
    with pytest.raises(ValueError, match="preset='huge'"):
        nets.transformer_lm(V, "huge")
    with pytest.raises(ValueError, match="multiple of heads"):
        nets.transformer_lm(V, None, width=10, depth=1, heads=4)
    with pytest.raises(ValueError, match="depth is required"):
        nets.transformer_lm(V, None, width=8, heads=2)
    with pytest.raises(ValueError, match="vocab_size"):
        nets.gru_lm(1)
