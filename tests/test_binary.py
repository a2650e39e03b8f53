"""fold_jax.binary: exact packed kernels, STE gradients, layers, training."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fold_jax import binary, methods, nets, tasks, train

pack = jax.jit(binary.pack, static_argnames=("axis", "word_bits"))
unpack = jax.jit(binary.unpack, static_argnames=("k", "axis", "dtype"))
xnor = jax.jit(binary.xnor_matmul, static_argnames=("k", "block_m"))
sign = jax.jit(binary.sign)

SHAPES = [(1, 1, 1), (5, 31, 3), (7, 32, 9), (130, 100, 17), (9, 127, 130)]


def _operands(m, k, n, seed=0):
    kx, kw = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (m, k))
    w = jax.random.normal(kw, (k, n))
    return x.at[0, 0].set(0.0), w.at[-1, -1].set(0.0)  # sign(0) = +1 exercised


@pytest.mark.parametrize(("m", "k", "n"), SHAPES)
def test_xnor_matmul_equals_float_sign_matmul_exactly(m, k, n):
    x, w = _operands(m, k, n)
    ref = (sign(x) @ sign(w)).astype(jnp.int32)
    got = xnor(pack(x), pack(w, axis=0), k=k, block_m=64)
    assert got.dtype == jnp.int32 and got.shape == (m, n)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
    for block_m in (None, "auto"):
        other = xnor(pack(x), pack(w, axis=0), k=k, block_m=block_m)
        np.testing.assert_array_equal(np.asarray(other), np.asarray(ref))


@pytest.mark.parametrize(("m", "k", "n"), [(5, 63, 3), (4, 130, 7)])
def test_xnor_matmul_uint64_words(m, k, n):
    x, w = _operands(m, k, n, seed=1)
    with jax.enable_x64(True):
        a, b = pack(x, word_bits=64), pack(w, axis=0, word_bits=64)
        assert a.dtype == jnp.uint64 and a.shape == (m, -(-k // 64))
        got = np.asarray(xnor(a, b, k=k))
        np.testing.assert_array_equal(np.asarray(unpack(a, k=k)), np.asarray(sign(x)))
    ref = np.asarray(sign(x) @ sign(w)).astype(np.int32)
    np.testing.assert_array_equal(got, ref)


def test_pack_unpack_round_trip_and_layout():
    x = jax.random.normal(jax.random.key(2), (3, 70, 5))
    for axis in (0, 1, 2, -1):
        p = pack(x, axis=axis)
        assert p.dtype == jnp.uint32
        assert p.shape[axis % 3] == -(-x.shape[axis] // 32)
        back = unpack(p, k=x.shape[axis], axis=axis)
        np.testing.assert_array_equal(np.asarray(back), np.asarray(sign(x)))
    # bit k of word 0 is element k (LSB first), bit 1 means -1; sign(0) = +1
    v = jnp.array([-1.0, 1.0, 0.0, -2.0])
    assert int(pack(v)[0]) == 0b1001
    assert pack(jnp.ones(32)).item() == 0 and pack(-jnp.ones(32)).item() == 2**32 - 1


def test_sign_ste_gradient_values():
    x = jnp.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5])
    np.testing.assert_array_equal(binary.sign_ste(x), [-1, -1, -1, 1, 1, 1, 1])
    g = jax.grad(lambda v: jnp.sum(binary.sign_ste(v) * jnp.arange(1.0, 8.0)))(x)
    np.testing.assert_array_equal(g, [0, 2, 3, 4, 5, 6, 0])  # passes where |x| <= 1


def test_clip_latent_keeps_kernels_in_range_and_leaves_biases():
    params = {"kernel": jnp.array([[0.9, -0.9]]), "bias": jnp.array([0.9])}
    tx = optax.chain(optax.sgd(1.0), binary.clip_latent())
    grads = {"kernel": jnp.array([[-1.0, 1.0]]), "bias": jnp.array([-1.0])}
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new["kernel"], [[1.0, -1.0]])
    np.testing.assert_allclose(new["bias"], [1.9])


def test_binary_mlp_packed_inference_matches_latent_net():
    # odd fan-ins: a sum of an odd number of +-1 is never 0, so float rounding in the
    # reference cannot flip a sign at an exact tie
    x = jax.random.normal(jax.random.key(3), (11, 20))
    for act, bin_act in (("relu", False), ("tanh", True)):
        layer = binary.binary_layer(binarize_activations=bin_act)
        net = nets.mlp((20, 41, 33, 3), act, layer=layer)
        params = net.init(jax.random.key(4))
        packed = binary.pack_mlp(params, act, binarize_activations=bin_act)
        assert [layer.binarize_input for layer in packed.layers] == [False, bin_act, bin_act]
        assert packed.weight_bytes == 4 * (1 * 41 + 2 * 33 + 2 * 3)  # words * out * 4 bytes
        got = jax.jit(lambda x, packed=packed: binary.packed_apply(packed, x))(x)
        np.testing.assert_allclose(got, jax.jit(net.apply)(params, x), rtol=1e-5, atol=1e-5)


def test_flip_search_never_increases_batch_loss():
    task = tasks.get("digits")
    net = nets.mlp((64, 32, 10), "relu", layer=binary.binary_layer())
    loss = jax.jit(task.loss_fn(net.apply))
    m = binary.flip_search(loss, flips=4)
    state = m.init(net.init(jax.random.key(0)))
    x, y = task.x_train[:128], task.y_train[:128]
    step = jax.jit(m.step)
    losses = [float(loss(state.params, x, y))]
    for i in range(20):
        state, info = step(state, jax.random.key(i), x, y)
        losses.append(float(loss(state.params, x, y)))
        assert int(info["evals"]) == 2
    assert all(b <= a for a, b in itertools.pairwise(losses))
    assert losses[-1] < losses[0]


def test_ste_binarized_mlp_learns_digits():
    task = tasks.get("digits")
    net = nets.mlp((64, 128, 10), "relu", layer=binary.binary_layer())
    tx = optax.chain(optax.adam(3e-3), binary.clip_latent())
    r = train.fit(methods.gradient(task.loss_fn(net.apply), tx), net.init(jax.random.key(0)),
                  task, apply=net.apply, steps=300, eval_every=300)
    assert r.history["test_accuracy"].iloc[-1] >= 0.90


def test_bad_input_names_the_argument():
    a = binary.pack(jnp.ones((4, 40)))
    b = binary.pack(jnp.ones((70, 3)), axis=0)
    with pytest.raises(ValueError, match="packed shapes"):
        binary.xnor_matmul(a, b, 40)
    with pytest.raises(ValueError, match="k="):
        binary.xnor_matmul(a, binary.pack(jnp.ones((40, 3)), axis=0), 70)
    with pytest.raises(ValueError, match="2-D"):
        binary.xnor_matmul(a[0], b, 40)
    with pytest.raises(ValueError, match="block_m"):
        binary.xnor_matmul(a, binary.pack(jnp.ones((40, 3)), axis=0), 40, block_m=0)
    with pytest.raises(ValueError, match="word_bits"):
        binary.pack(jnp.ones(3), word_bits=16)
    if not jax.config.jax_enable_x64:
        with pytest.raises(ValueError, match="word_bits=64"):
            binary.pack(jnp.ones(3), word_bits=64)
    with pytest.raises(ValueError, match="k="):
        binary.unpack(a, 80)
    with pytest.raises(ValueError, match="packed"):
        binary.unpack(jnp.ones((2, 2)), 3)
    with pytest.raises(ValueError, match="kernel"):
        binary._binarize_kernel(jnp.ones(3), True)
    with pytest.raises(ValueError, match="kernel"):
        binary.pack_mlp({"params": {"dense_0": {"kernel": jnp.ones((2, 2, 2))}}})
    with pytest.raises(ValueError, match="flips"):
        binary.flip_search(lambda p: 0.0, flips=0)
    with pytest.raises(ValueError, match="limit"):
        binary.clip_latent(-1.0)
