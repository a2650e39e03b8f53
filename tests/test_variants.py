"""fold_jax.compress.variants: one interface for dense, binarized and pruned nets."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fold_jax.compress import binary, prune, variants
from fold_jax.estimators import methods

WIDTHS = (12, 16, 3)
# numpy inputs (no program at collection); every forward below runs under jax.jit: one
# program per call instead of one per eager op (a flax apply is dozens of them)
X = np.random.default_rng(1).normal(size=(8, WIDTHS[0])).astype(np.float32)


def _steps(v, tx, n=3):
    loss = lambda p: jnp.mean(v.apply(p, X) ** 2)  # noqa: E731
    m = methods.descent(lambda p, k: jax.value_and_grad(loss)(p), v.wrap_tx(tx),
                        evals_per_step=1)
    state = m.init(v.params)
    step = jax.jit(m.step)
    for i in range(n):
        state, _ = step(state, jax.random.key(i))
    return state.params


@pytest.mark.parametrize("name", variants.NAMES)
def test_every_variant_trains_through_the_same_method(name):
    v = variants.make(name, WIDTHS, key=jax.random.key(0), sparsity=0.5)
    assert isinstance(v, variants.Variant) and v.name == name
    assert v.apply == v.net.apply and (v.inference is None) == (name == "dense")
    params = _steps(v, optax.adam(0.5))  # a large step: constraints must still hold
    kernels = [p for p in jax.tree.leaves(params) if p.ndim == 2]
    if name == "binarized":
        assert all(np.max(np.abs(np.asarray(k))) <= 1.0 for k in kernels)
        assert v.zo_mask is None
    elif name == "pruned":
        assert prune.sparsity(params) == pytest.approx(0.5, abs=1e-6)
        for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(v.zo_mask), strict=True):
            assert np.all(np.asarray(p)[np.asarray(m) == 0] == 0)
    else:
        assert v.zo_mask is None


def test_gradual_pruned_variant_reaches_sparsity():
    v = variants.make("pruned", WIDTHS, key=jax.random.key(0), sparsity=0.6, gradual=4,
                      frequency=1)
    assert prune.sparsity(v.params) == 0.0
    assert prune.sparsity(_steps(v, optax.sgd(1e-2), n=5)) == pytest.approx(0.6, abs=0.02)


def test_variant_zo_mask_feeds_zeroth_order():
    zo = pytest.importorskip("fold_jax.zo")
    v = variants.make("pruned", WIDTHS, key=jax.random.key(0), sparsity=0.8)
    vg = zo.value_and_grad(lambda p: jnp.mean(v.net.apply(p, X) ** 2), num_directions=4,
                           mask=v.zo_mask)
    _, g = jax.jit(vg)(v.params, jax.random.key(2))
    for gl, m in zip(jax.tree.leaves(g), jax.tree.leaves(v.zo_mask), strict=True):
        assert np.all(np.asarray(gl)[np.asarray(m) == 0] == 0)


def test_bad_input():
    with pytest.raises(ValueError, match="name="):
        variants.make("ternary", WIDTHS, key=jax.random.key(0))
    with pytest.raises(ValueError, match="sparsity"):
        variants.make("pruned", WIDTHS, key=jax.random.key(0), sparsity=1.0)
    with pytest.raises(ValueError, match="scope"):
        variants.make("pruned", WIDTHS, key=jax.random.key(0), scope="row")
    with pytest.raises(ValueError, match="mask="):
        variants.make("pruned", WIDTHS, key=jax.random.key(0), mask="hessian")
    with pytest.raises(ValueError, match="unknown options"):
        variants.make("binarized", WIDTHS, key=jax.random.key(0), bits=2)
    with pytest.raises(ValueError, match="activation"):
        variants.make("binarized", WIDTHS, key=jax.random.key(0), binarize_activations=True)


# ----------------------------------------------------------------- a user's flax model


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.relu(nn.LayerNorm()(nn.Dense(16)(x)))


class UserModel(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(WIDTHS[-1])(Block()(x))


USER = UserModel()
KERNELS = [("params", "Block_0", "Dense_0", "kernel"), ("params", "Dense_0", "kernel")]


@pytest.fixture(scope="module")
def user_params():
    """The user model's params, built once for the module (one jitted init)."""
    return jax.jit(USER.init)(jax.random.key(2), X)


def _leaves(tree):
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prune.key_path(kp): np.asarray(v) for kp, v in flat}


def test_from_model_pruned_keeps_its_mask_trains_layernorm_and_runs_bcsr(user_params):
    v = variants.from_model("pruned", USER.apply, user_params, sparsity=0.8)
    assert v.net is None and v.apply == USER.apply
    params = _steps(v, optax.adam(0.5))
    mask, before, after = _leaves(v.zo_mask), _leaves(user_params), _leaves(params)
    for path, m in mask.items():
        if path in KERNELS:
            assert (m == 0).sum() == round(0.8 * m.size) and np.all(after[path][m == 0] == 0)
        else:  # LayerNorm and biases: never masked, and trained
            assert np.all(m == 1) and not np.array_equal(after[path], before[path]), path
    # inference is prune.sparse_inference of the model, its mask and the trained params
    np.testing.assert_array_equal(
        jax.jit(v.inference(params))(X),
        jax.jit(prune.sparse_inference(USER.apply, params, v.zo_mask))(X))
    g = variants.from_model("pruned", USER.apply, user_params, sparsity=0.6, gradual=4,
                            frequency=1)
    assert prune.sparsity(_steps(g, optax.sgd(1e-2), n=5)) == pytest.approx(0.6, abs=0.02)


def test_from_model_binarized_runs_on_sign_weights_and_clips_only_kernels(user_params):
    v = variants.from_model("binarized", USER.apply, user_params)
    np.testing.assert_array_equal(
        jax.jit(v.apply)(user_params, X),
        jax.jit(lambda p, x: USER.apply(binary.binarize(p), x))(user_params, X))
    grads = _leaves(jax.jit(jax.grad(lambda p: jnp.sum(v.apply(p, X) ** 2)))(user_params))
    assert all(np.any(grads[path] != 0) for path in KERNELS)  # STE reaches the latents
    params = _steps(v, optax.adam(0.5))
    for path, leaf in _leaves(params).items():
        if path in KERNELS:
            assert np.max(np.abs(leaf)) <= 1.0
    big = jax.tree.map(lambda p: np.full(p.shape, 1.5, np.float32), user_params)
    tx = v.wrap_tx(optax.sgd(0.0))

    @jax.jit
    def clipped(p):
        updates, _ = tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)
        return optax.apply_updates(p, updates)

    for path, leaf in _leaves(clipped(big)).items():
        np.testing.assert_array_equal(leaf, (1.0 if path in KERNELS else 1.5) * np.ones(leaf.shape))
    np.testing.assert_array_equal(jax.jit(v.inference(params))(X),
                                  jax.jit(binary.packed_inference(USER.apply, params))(X))


def test_from_model_dense_and_make_inference(user_params):
    v = variants.from_model("dense", USER.apply, user_params)
    assert v.apply == USER.apply and v.inference is None and v.zo_mask is None
    p = variants.make("pruned", WIDTHS, key=jax.random.key(0), sparsity=0.7)
    np.testing.assert_array_equal(
        jax.jit(p.inference(p.params))(X),
        jax.jit(prune.sparse_inference(p.net.apply, p.params, p.zo_mask))(X))
    b = variants.make("binarized", WIDTHS, key=jax.random.key(0))
    np.testing.assert_array_equal(jax.jit(b.inference(b.params))(X),
                                  jax.jit(binary.packed_inference(b.net.apply, b.params))(X))


def test_from_model_bad_input(user_params):
    with pytest.raises(ValueError, match="name="):
        variants.from_model("ternary", USER.apply, user_params)
    with pytest.raises(TypeError, match="apply must be callable"):
        variants.from_model("pruned", user_params, user_params)
    with pytest.raises(ValueError, match="needs key"):
        variants.from_model("pruned", USER.apply, user_params, mask="random")
    with pytest.raises(ValueError, match="unknown options"):
        variants.from_model("binarized", USER.apply, user_params, binarize_activations=True)
    norm = nn.LayerNorm()
    norm_params = {"params": {"scale": np.ones(WIDTHS[0], np.float32),
                              "bias": np.zeros(WIDTHS[0], np.float32)}}  # norm.init's tree
    with pytest.raises(ValueError, match="no Dense kernels"):
        variants.from_model("binarized", norm.apply, norm_params)
    with pytest.raises(ValueError, match="no leaves to prune"):
        variants.from_model("pruned", norm.apply, norm_params)
    with pytest.raises(ValueError, match="params has no leaves"):
        variants.from_model("dense", USER.apply, {})
