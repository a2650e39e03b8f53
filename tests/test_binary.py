"""fold_jax.compress.binary: exact packed kernels, STE gradients, layers, training."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fold_jax.compress import binary, prune
from fold_jax.estimators import methods
from fold_jax.learn import nets, train

pack = jax.jit(binary.pack, static_argnames=("axis", "word_bits"))
unpack = jax.jit(binary.unpack, static_argnames=("k", "axis", "dtype"))
xnor = jax.jit(binary.xnor_matmul, static_argnames=("k", "block_m"))
sign = jax.jit(binary.sign)

SHAPES = [(1, 1, 1), (5, 31, 3), (7, 32, 9), (130, 100, 17), (9, 127, 130)]
# References are computed in numpy (an eager jnp op compiles a program per shape); the
# programs under test (pack, unpack, xnor_matmul, the nets) run jitted.


def np_sign(x):
    """binary.sign in numpy: {-1, +1} with sign(0) = +1."""
    return np.where(np.asarray(x) >= 0, 1, -1).astype(np.float32)


def _operands(m, k, n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, k)).astype(np.float32)
    w = rng.normal(size=(k, n)).astype(np.float32)
    x[0, 0], w[-1, -1] = 0.0, 0.0  # sign(0) = +1 exercised
    return x, w


@pytest.mark.parametrize(("m", "k", "n"), SHAPES)
def test_xnor_matmul_equals_float_sign_matmul_exactly(m, k, n):
    x, w = _operands(m, k, n)
    ref = (np_sign(x).astype(np.int64) @ np_sign(w).astype(np.int64)).astype(np.int32)
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
        np.testing.assert_array_equal(np.asarray(unpack(a, k=k)), np_sign(x))
    ref = (np_sign(x).astype(np.int64) @ np_sign(w).astype(np.int64)).astype(np.int32)
    np.testing.assert_array_equal(got, ref)


def test_pack_unpack_round_trip_and_layout():
    x = np.random.default_rng(2).normal(size=(3, 70, 5)).astype(np.float32)
    for axis in (0, 1, 2, -1):
        p = pack(x, axis=axis)
        assert p.dtype == jnp.uint32
        assert p.shape[axis % 3] == -(-x.shape[axis] // 32)
        back = unpack(p, k=x.shape[axis], axis=axis)
        np.testing.assert_array_equal(np.asarray(back), np_sign(x))
    # bit k of word 0 is element k (LSB first), bit 1 means -1; sign(0) = +1
    v = np.array([-1.0, 1.0, 0.0, -2.0], np.float32)
    assert int(np.asarray(pack(v))[0]) == 0b1001
    np.testing.assert_array_equal(sign(v), [-1, 1, 1, -1])  # the library's sign agrees
    np.testing.assert_array_equal(sign(x), np_sign(x))
    ones = np.ones(32, np.float32)
    assert int(np.asarray(pack(ones))[0]) == 0 and int(np.asarray(pack(-ones))[0]) == 2**32 - 1


def test_sign_ste_gradient_values():
    x = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5], np.float32)
    np.testing.assert_array_equal(jax.jit(binary.sign_ste)(x), [-1, -1, -1, 1, 1, 1, 1])
    g = jax.jit(jax.grad(lambda v: jnp.sum(binary.sign_ste(v) * jnp.arange(1.0, 8.0))))(x)
    np.testing.assert_array_equal(g, [0, 2, 3, 4, 5, 6, 0])  # passes where |x| <= 1


def test_clip_latent_keeps_kernels_in_range_and_leaves_biases():
    params = {"kernel": np.array([[0.9, -0.9]], np.float32), "bias": np.array([0.9], np.float32)}
    tx = optax.chain(optax.sgd(1.0), binary.clip_latent())
    grads = {"kernel": np.array([[-1.0, 1.0]], np.float32), "bias": np.array([-1.0], np.float32)}
    new = jax.jit(lambda g, p: optax.apply_updates(p, tx.update(g, tx.init(p), p)[0]))(
        grads, params)
    np.testing.assert_allclose(new["kernel"], [[1.0, -1.0]])
    np.testing.assert_allclose(new["bias"], [1.9])


def test_binary_mlp_packed_inference_matches_latent_net():
    # odd fan-ins: a sum of an odd number of +-1 is never 0, so float rounding in the
    # reference cannot flip a sign at an exact tie
    x = np.random.default_rng(3).normal(size=(11, 20)).astype(np.float32)
    # the activation and binarize_activations do not change the params: one init for both
    params = jax.jit(nets.mlp((20, 41, 33, 3), layer=binary.binary_layer()).init)(
        jax.random.key(4))
    for act, bin_act in (("relu", False), ("tanh", True)):
        layer = binary.binary_layer(binarize_activations=bin_act)
        net = nets.mlp((20, 41, 33, 3), act, layer=layer)
        packed = binary.pack_mlp(params, act, binarize_activations=bin_act)
        assert [layer.binarize_input for layer in packed.layers] == [False, bin_act, bin_act]
        assert packed.weight_bytes == 4 * (1 * 41 + 2 * 33 + 2 * 3)  # words * out * 4 bytes
        got = jax.jit(lambda x, packed=packed: binary.packed_apply(packed, x))(x)
        np.testing.assert_allclose(got, jax.jit(net.apply)(params, x), rtol=1e-5, atol=1e-5)


def test_flip_search_never_increases_batch_loss(digits):
    task = digits
    net = nets.mlp((64, 32, 10), "relu", layer=binary.binary_layer())
    loss = jax.jit(task.loss_fn(net.apply))
    m = binary.flip_search(loss, flips=4)
    state = m.init(jax.jit(net.init)(jax.random.key(0)))
    x, y = np.asarray(task.x_train)[:128], np.asarray(task.y_train)[:128]
    step = jax.jit(m.step)
    losses = [float(loss(state.params, x, y))]
    for i in range(20):
        state, info = step(state, jax.random.key(i), x, y)
        losses.append(float(loss(state.params, x, y)))
        assert int(info["evals"]) == 2
    assert all(b <= a for a, b in itertools.pairwise(losses))
    assert losses[-1] < losses[0]


def test_ste_binarized_mlp_learns_digits(digits):
    task = digits
    net = nets.mlp((64, 128, 10), "relu", layer=binary.binary_layer())
    tx = optax.chain(optax.adam(3e-3), binary.clip_latent())
    r = train.fit(methods.gradient(task.loss_fn(net.apply), tx), net.init(jax.random.key(0)),
                  task, apply=net.apply, steps=300, eval_every=300)
    assert r.history["test_accuracy"].iloc[-1] >= 0.90


def test_bad_input_names_the_argument():
    # packed words of the right shape and dtype (the checks read shapes only)
    a, b, b40 = (np.zeros(s, np.uint32) for s in ((4, 2), (3, 3), (2, 3)))
    with pytest.raises(ValueError, match="packed shapes"):
        binary.xnor_matmul(a, b, 40)
    with pytest.raises(ValueError, match="k="):
        binary.xnor_matmul(a, b40, 70)
    with pytest.raises(ValueError, match="2-D"):
        binary.xnor_matmul(a[0], b, 40)
    with pytest.raises(ValueError, match="block_m"):
        binary.xnor_matmul(a, b40, 40, block_m=0)
    with pytest.raises(ValueError, match="word_bits"):
        binary.pack(np.ones(3, np.float32), word_bits=16)
    if not jax.config.jax_enable_x64:
        with pytest.raises(ValueError, match="word_bits=64"):
            binary.pack(np.ones(3, np.float32), word_bits=64)
    with pytest.raises(ValueError, match="k="):
        binary.unpack(a, 80)
    with pytest.raises(ValueError, match="packed"):
        binary.unpack(np.ones((2, 2), np.float32), 3)
    with pytest.raises(ValueError, match="kernel"):
        binary.binarize_kernel(np.ones(3, np.float32), True)
    with pytest.raises(ValueError, match="kernel"):
        binary.pack_mlp({"params": {"dense_0": {"kernel": np.ones((2, 2, 2), np.float32)}}})
    with pytest.raises(ValueError, match="flips"):
        binary.flip_search(lambda p: 0.0, flips=0)
    with pytest.raises(ValueError, match="limit"):
        binary.clip_latent(-1.0)


# ------------------------------------------------- any flax model: packed by path
#
# A user's linen model with LayerNorm, nested so kernels sit at deep paths; biases and
# LayerNorm parameters moved off their init values.

from user_model import (  # noqa: E402  (shared with the other variant tests)
    BATCH,
    EPS,
    KERNELS,
    OUTPUTS,
    USER,
    USER_PARAMS,
    WIDTH,
    X,
    assert_within,
    at,
    chain_bound,
    jitter_vectors,
    user_steps,
)


def test_user_model_packed_inference_matches_the_sign_weight_model():
    infer = binary.packed_inference(USER.apply, USER_PARAMS)
    for path in KERNELS:  # 1 bit per weight: 64 fan-in -> 2 uint32 words per output
        kernel = at(infer.args[0], path)
        assert isinstance(kernel, binary.PackedKernel)
        assert kernel.bits.dtype == jnp.uint32 and kernel.bits.shape == (2, kernel.shape[1])
        assert kernel.shape == at(USER_PARAMS, path).shape
    np.testing.assert_array_equal(  # LayerNorm and biases stay as they were
        at(infer.args[0], ("params", "Block_0", "LayerNorm_0", "scale")),
        at(USER_PARAMS, ("params", "Block_0", "LayerNorm_0", "scale")))
    signed = jax.jit(binary.binarize)(USER_PARAMS)
    got = jax.jit(infer)(X)
    ref = jax.jit(USER.apply)(signed, X)
    exact, bound = chain_bound(X, user_steps(signed))
    assert_within(got, ref, exact, bound)
    # first layer on XNOR-popcount: sign(x) @ sign(W) exact in int32, then * alpha
    xnor_first = binary.packed_inference(USER.apply, USER_PARAMS, binarize_inputs=[KERNELS[0]])
    fn = jax.jit(xnor_first)
    assert "popcnt" in fn.lower(X).as_text()
    sx = sign(X)
    exact, bound = chain_bound(sx, user_steps(signed))
    assert_within(fn(X), jax.jit(USER.apply)(signed, sx), exact, bound)


class SignBlock(nn.Module):
    """A BNN as a user writes it: every Dense sees sign(input) (sign_ste in training)."""

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(WIDTH)(binary.sign(x))
        return nn.Dense(WIDTH)(binary.sign(x))


class SignModel(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(OUTPUTS)(binary.sign(SignBlock()(x)))


def test_user_bnn_packed_xnor_inference_is_exact():
    model = SignModel()
    params = jax.jit(jitter_vectors, static_argnums=1)(
        jax.jit(model.init)(jax.random.key(1), X[:1]), 2)
    infer = jax.jit(binary.packed_inference(model.apply, params, scale=False,
                                            binarize_inputs=True))
    assert infer.lower(X).as_text().count("popcnt") >= 3  # every layer: XNOR-popcount
    ref = jax.jit(lambda p, x: model.apply(binary.binarize(p, scale=False), x))(params, X)
    # every Dense sums 64 products of +-1: an integer |.| <= 64, exact in float32 and in
    # int32; the bias add is one correctly rounded op on equal operands: equal bits
    np.testing.assert_array_equal(np.asarray(infer(X)), np.asarray(ref))


def test_binary_dense_mlp_through_packed_inference_equals_net_apply():
    # this draw keeps every layer-0 |y| above the rounding bound (checked below)
    x = np.asarray(jax.random.normal(jax.random.key(3), (BATCH, 20)))
    net = nets.mlp((20, 41, 33, 3), "tanh", layer=binary.binary_layer(binarize_activations=True))
    params = jax.jit(net.init)(jax.random.key(4))
    fn = jax.jit(binary.packed_inference(net.apply, params))  # BinaryDense's own fields
    assert "popcnt" in fn.lower(x).as_text()
    got, ref = np.asarray(fn(x)), np.asarray(jax.jit(net.apply)(params, x))
    # The hidden layers' outputs are binarized (sign(tanh(y))), so they agree unless
    # rounding moves some y across 0. Layer 0 (real input): the two runs' y differ by
    # <= 2 (k + 2) EPS (|x| @ |W|), checked here to be below every |y|. Layer 1 (+-1
    # input, odd fan-in 41, zero bias): y is an odd integer times alpha, >= alpha away
    # from 0. So only the output layer differs: its sum of k = 33 terms +-alpha, by
    # <= (k + 2) EPS k alpha per run.
    p = {name: {key: np.asarray(v, np.float64) for key, v in layer.items()}
         for name, layer in params["params"].items()}
    w0 = np.sign(p["dense_0"]["kernel"]) * np.abs(p["dense_0"]["kernel"]).mean(axis=0)
    y0 = np.asarray(x, np.float64) @ w0
    assert np.all(np.abs(y0) > 2 * (20 + 2) * EPS * (np.abs(np.asarray(x)) @ np.abs(w0)))
    alpha = np.abs(p["dense_2"]["kernel"]).mean(axis=0)
    assert np.all(np.abs(got - ref) <= 2 * (33 + 2) * EPS * 33 * alpha)


def test_clip_latent_select_clips_only_the_chosen_kernels():
    params = jax.tree.map(lambda p: np.full(p.shape, 1.5, np.float32), USER_PARAMS)
    tx = binary.clip_latent(select=prune.is_kernel)
    new = jax.jit(lambda p: optax.apply_updates(
        p, tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)[0]))(params)
    for kp, leaf in jax.tree_util.tree_flatten_with_path(new)[0]:
        expected = 1.0 if prune.key_path(kp) in KERNELS else 1.5
        np.testing.assert_array_equal(leaf, expected * np.ones(leaf.shape))


def test_packed_inference_names_bad_inputs():
    norm_only = {"params": {"LayerNorm_0": {"scale": np.ones(4, np.float32),
                                            "bias": np.zeros(4, np.float32)}}}
    with pytest.raises(ValueError, match="no Dense kernels"):
        binary.packed_inference(nn.LayerNorm().apply, norm_only)
    with pytest.raises(ValueError, match="no Dense kernels"):
        binary.binarize(norm_only)
    with pytest.raises(ValueError, match="binarize_inputs has paths"):
        binary.packed_inference(USER.apply, USER_PARAMS,
                                binarize_inputs=[("params", "Dense_0", "bias")])
    with pytest.raises(TypeError, match="binarize_inputs"):
        binary.packed_inference(USER.apply, USER_PARAMS, binarize_inputs="all")
    with pytest.raises(TypeError, match="scale"):
        binary.packed_inference(USER.apply, USER_PARAMS, scale=1)
    with pytest.raises(ValueError, match="word_bits"):
        binary.packed_inference(USER.apply, USER_PARAMS, word_bits=16)
    with pytest.raises(TypeError, match="apply must be callable"):
        binary.packed_inference(None, USER_PARAMS)
    with pytest.raises(ValueError, match="for any other flax model"):
        binary.pack_mlp(USER_PARAMS)


def test_flip_search_names_a_mask_unlike_params():
    params = {"k": np.ones((4, 3), np.float32), "b": np.zeros(3, np.float32)}
    method = binary.flip_search(lambda p: jnp.sum(p["k"]), mask={"k": np.ones((4, 2), np.float32),
                                                                 "b": np.ones(3, np.float32)})
    with pytest.raises(ValueError, match="mask"):
        method.init(params)
