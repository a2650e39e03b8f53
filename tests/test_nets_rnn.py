"""fold_jax.learn.nets.rnn: flax cells under lax.scan, logits from the last state, and
truncated backprop through time."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fold_jax.bench import timing
from fold_jax.learn import nets

EPS = float(jnp.finfo(jnp.float32).eps)
CELL_CLASSES = {"gru": nn.GRUCell, "lstm": nn.OptimizedLSTMCell, "simple": nn.SimpleCell}


def _x(batch=3, T=6, features=2, seed=1):
    """Standard normal inputs (numpy: nothing compiled to draw them)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, T, features)).astype(np.float32)


@pytest.mark.parametrize("cell", ["gru", "lstm", "simple"])
def test_matches_a_python_loop_over_the_flax_cell(cell):
    net = nets.rnn(2, 5, 3, cell)
    params = net.init(jax.random.key(0))
    x = _x()
    out = jax.jit(net.apply)(params, x)
    assert out.shape == (3, 3)
    # the same cell stepped by hand, then the read-out of the last hidden state
    module = CELL_CLASSES[cell](features=5)

    @jax.jit
    def by_hand(params, x):
        cell_params = {"params": params["params"]["rnn"]["cell"]}
        carry = module.initialize_carry(jax.random.key(0), x[:, 0].shape)
        for t in range(x.shape[1]):
            carry, h = module.apply(cell_params, carry, x[:, t])
        head = params["params"]["head"]
        return h @ head["kernel"] + head["bias"]

    expected = np.asarray(by_hand(params, x))
    # the same float32 ops in another order: a few ulps per step and per read-out sum
    tol = 16 * EPS * x.shape[1] * float(np.max(np.abs(expected)) + 1)
    np.testing.assert_allclose(out, expected, atol=tol, rtol=0)


def test_logits_come_from_the_last_state():
    net = nets.rnn(2, 4, 1, "gru")
    params = net.init(jax.random.key(0))
    x = _x()
    # appending a step changes the output; the output of a prefix is the prefix's
    longer = np.concatenate([x, np.ones_like(x[:, :1])], axis=1)
    apply = jax.jit(net.apply)
    assert not np.allclose(apply(params, longer), apply(params, x))
    np.testing.assert_array_equal(apply(params, longer[:, :-1]), apply(params, x))


@pytest.mark.parametrize("cell", ["lstm"])
def test_truncation_keeps_the_value_and_cuts_the_gradient(cell):
    k, T = 3, 8
    full, cut = nets.rnn(2, 4, 1, cell), nets.rnn(2, 4, 1, cell, truncate=k)
    params = full.init(jax.random.key(0))
    x = _x(T=T)
    # the forward is the same scan run in two pieces: equal up to float32 rounding
    np.testing.assert_allclose(jax.jit(cut.apply)(params, x), jax.jit(full.apply)(params, x),
                               atol=16 * EPS * T, rtol=0)
    gx_full = jax.jit(jax.grad(lambda x: jnp.sum(full.apply(params, x))))(x)
    gx_cut = jax.jit(jax.grad(lambda x: jnp.sum(cut.apply(params, x))))(x)
    # no gradient reaches inputs before the last k steps; the last k see the same path
    assert np.all(np.asarray(gx_cut[:, :-k]) == 0)
    assert np.any(np.asarray(gx_full[:, :-k]) != 0)
    np.testing.assert_allclose(gx_cut[:, -k:], gx_full[:, -k:], atol=64 * EPS, rtol=1e-5)


def test_truncated_backprop_memory_does_not_grow_with_T():
    def grad_mem(net, T):
        params = jax.eval_shape(net.init, jax.random.key(0))  # only shapes are compiled
        x = jax.ShapeDtypeStruct((16, T, 2), jnp.float32)
        g = jax.grad(lambda p, x: jnp.sum(net.apply(p, x) ** 2))
        compiled, _ = timing.aot(g, params, x)
        return timing.mem_bytes(compiled)

    full, cut = nets.rnn(2, 32, 1), nets.rnn(2, 32, 1, truncate=8)
    # T = 32 and 128 (4x the steps, 4 and 16 truncation windows): measured on a 2-core CPU,
    # full 0.65 / 2.4 MB, truncated 0.21 / 0.22 MB (shorter scans compile faster than 64/256)
    full_32, full_128 = grad_mem(full, 32), grad_mem(full, 128)
    cut_32, cut_128 = grad_mem(cut, 32), grad_mem(cut, 128)
    if not np.isfinite(full_32):
        pytest.skip("this backend gives no memory_analysis")
    # full BPTT stores every step's activations: 4x the steps, > 2x the bytes; truncated
    # stores k = 8 steps whatever T (only the input itself grows, 16 * T * 2 floats, and
    # its time-major copy)
    assert full_128 > 2 * full_32
    assert cut_128 - cut_32 <= 2 * 16 * (128 - 32) * 2 * 4
    assert cut_128 < full_128 / 4


def test_forward_memory_does_not_grow_with_T():
    # a forward pass carries only the state along the scan (no stacked outputs): beyond
    # the input (16 x T x 2 float32) and its time-major copy for the scan, its memory is
    # the same at T = 64 and 512
    net = nets.rnn(2, 32, 1, "lstm")
    params = jax.eval_shape(net.init, jax.random.key(0))  # only shapes are compiled

    def mem(T):
        compiled, _ = timing.aot(net.apply, params, jax.ShapeDtypeStruct((16, T, 2),
                                                                        jnp.float32))
        return timing.mem_bytes(compiled)

    m64, m512 = mem(64), mem(512)
    if not np.isfinite(m64):
        pytest.skip("this backend gives no memory_analysis")
    assert m512 - m64 <= 2 * 16 * (512 - 64) * 2 * 4


@pytest.mark.parametrize("kwargs, argument", [
    (dict(features=0, hidden=4, outputs=1), "features"),
    (dict(features=2, hidden=True, outputs=1), "hidden"),
    (dict(features=2, hidden=4, outputs=-1), "outputs"),
    (dict(features=2, hidden=4, outputs=1, cell="rnn"), "cell"),
    (dict(features=2, hidden=4, outputs=1, truncate=0), "truncate"),
])
def test_bad_arguments_name_themselves(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        nets.rnn(**kwargs)


def test_numpy_integer_sizes_build_the_same_net():
    assert nets.rnn(np.int32(2), np.int64(4), np.int16(1)) == nets.rnn(2, 4, 1)


def test_bad_input_shape_is_a_value_error():
    net = nets.rnn(2, 4, 1)
    params = net.init(jax.random.key(0))
    with pytest.raises(ValueError, match="batch, T"):
        net.apply(params, jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="in_features=2"):
        net.apply(params, jnp.zeros((3, 5, 4)))
