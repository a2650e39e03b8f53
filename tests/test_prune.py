"""fold_jax.compress.prune: exact masks, schedules, masks through optax, BCSR inference, ZO
masks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from fold_jax.compress import prune
from fold_jax.estimators import methods
from fold_jax.learn import nets, tasks, train

NET = nets.mlp((20, 30, 7, 3), "relu")
# The masks are built by jitted programs (sparsity, scope and select static): one program
# per call instead of one per eager op (a sort, a threshold, a compare per kernel shape).
magnitude = jax.jit(prune.magnitude_mask, static_argnums=1, static_argnames=("scope", "select"))
SPARSITIES = (0.0, 0.3, 0.95, 0.999)
apply_mask = jax.jit(prune.apply_mask)


@pytest.fixture(scope="module")
def params0():
    """NET's params, built once for the module by one jitted init."""
    return jax.jit(NET.init)(jax.random.key(0))


def _zeros(tree):
    return [int((np.asarray(x) == 0).sum()) for x in jax.tree.leaves(tree) if np.ndim(x) == 2]


@pytest.fixture(scope="module")
def random_masks(params0):
    """prune.random_mask at every sparsity of SPARSITIES, one jitted program for all (the
    uniform scores do not depend on the sparsity: the draw is shared)."""
    masks = jax.jit(lambda key, p: [prune.random_mask(key, p, s) for s in SPARSITIES])(
        jax.random.key(1), params0)
    return dict(zip(SPARSITIES, masks, strict=True))


@pytest.mark.parametrize("s", SPARSITIES)
def test_masks_have_exactly_the_asked_sparsity(s, params0, random_masks):
    sizes = [x.size for x in jax.tree.leaves(params0) if x.ndim == 2]
    layer = magnitude(params0, s, scope="layer")
    assert _zeros(layer) == [round(s * n) for n in sizes]
    assert sum(_zeros(magnitude(params0, s, scope="global"))) == round(s * sum(sizes))
    rand = random_masks[s]
    assert _zeros(rand) == [round(s * n) for n in sizes]
    for mask in (layer, rand):  # biases are never pruned
        assert all(np.all(np.asarray(m) == 1) for m in jax.tree.leaves(mask) if m.ndim == 1)


def test_magnitude_mask_keeps_the_largest_weights():
    w = {"k": np.array([[0.1, -3.0, 0.5], [2.0, -0.2, 0.0]], np.float32)}
    np.testing.assert_array_equal(magnitude(w, 0.5)["k"], [[0, 1, 1], [1, 0, 0]])
    g = magnitude({"a": w["k"], "b": np.full((2, 3), 5.0, np.float32)}, 0.5, scope="global")
    np.testing.assert_array_equal(g["a"], np.zeros((2, 3)))  # global: "b" wins every place
    np.testing.assert_array_equal(g["b"], np.ones((2, 3)))


def test_nm_mask_keeps_n_of_every_m():
    w = {"k": np.random.default_rng(2).normal(size=(8, 5)).astype(np.float32)}
    m = np.asarray(jax.jit(prune.nm_mask, static_argnums=(1, 2))(w, 2, 4)["k"]).reshape(2, 4, 5)
    np.testing.assert_array_equal(m.sum(axis=1), 2 * np.ones((2, 5)))
    big = np.abs(np.asarray(w["k"])).reshape(2, 4, 5)
    kept_min = np.where(m == 1, big, np.inf).min(axis=1)
    dropped_max = np.where(m == 0, big, -np.inf).max(axis=1)
    assert np.all(kept_min >= dropped_max)


def test_cubic_schedule_values():
    s = prune.cubic_schedule(0.9, 100, begin_step=10)
    np.testing.assert_allclose([s(0), s(10), s(60), s(110), s(500)],
                               [0.0, 0.0, 0.9 * (1 - 0.5**3), 0.9, 0.9], rtol=1e-6)


@pytest.mark.parametrize("opt", ["adam", "adamw"])
def test_masks_survive_optimizer_steps(opt, params0):
    mask = magnitude(params0, 0.8)
    tx = prune.keep_masked(methods.optimizer(opt, 1e-2), mask)
    params = params0  # not masked yet: the first update zeroes the pruned entries
    state = tx.init(params)
    x = np.random.default_rng(3).normal(size=(16, 20)).astype(np.float32)
    grad = jax.jit(jax.grad(lambda p: jnp.sum(NET.apply(p, x) ** 2)))
    update = jax.jit(tx.update)
    for _ in range(5):
        updates, state = update(grad(params), state, params)
        params = optax.apply_updates(params, updates)
    for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask), strict=True):
        assert np.all(np.asarray(p)[np.asarray(m) == 0] == 0)
    assert prune.sparsity(params) == pytest.approx(0.8, abs=1e-3)


def test_gradual_prune_reaches_final_sparsity_and_never_unprunes(params0):
    tx = optax.chain(optax.sgd(1e-2), prune.gradual_prune(0.75, 20, frequency=5))
    params, state = params0, tx.init(params0)
    update = jax.jit(tx.update)
    previous = np.zeros(1)
    sparsities = []
    for i in range(30):
        grads = jax.tree.map(lambda p, i=i: jnp.full_like(p, 0.01 * (-1) ** i), params)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        zeros = np.concatenate([np.asarray(m).ravel() == 0 for m in jax.tree.leaves(state[1].mask)])
        assert np.all(zeros[previous.nonzero()[0]]) if previous.any() else True
        previous = zeros
        sparsities.append(prune.sparsity(params))
    assert sparsities == sorted(sparsities)
    sizes = [x.size for x in jax.tree.leaves(params0) if x.ndim == 2]
    assert _zeros(params) == [round(0.75 * n) for n in sizes]


def test_bcsr_inference_matches_dense_and_lowers_to_native_kernel(params0):
    params = apply_mask(params0, magnitude(params0, 0.9))
    model = prune.sparse_mlp(params)
    assert model.nonzeros == sum(round(0.1 * x.size) for x in jax.tree.leaves(params0)
                                 if x.ndim == 2)
    x = np.random.default_rng(4).normal(size=(9, 20)).astype(np.float32)
    sparse_fn = jax.jit(lambda x: prune.sparse_apply(model, x))
    np.testing.assert_allclose(sparse_fn(x), jax.jit(NET.apply)(params, x), rtol=1e-5, atol=1e-5)
    hlo = sparse_fn.lower(x).compile().as_text()
    if jax.default_backend() == "cpu":
        assert "cpu_csr_sparse_dense_ffi" in hlo
    # one layer, both layouts: row-major x @ w and feature-major (x @ w).T
    w = params["params"]["dense_0"]["kernel"]
    wt = prune.to_bcsr(w)
    both = jax.jit(lambda x, wt: (prune.sparse_matmul(x, wt), prune.sparse_matmul_t(wt, x.T)))
    row, col = both(x, wt)
    ref = x @ np.asarray(w)
    np.testing.assert_allclose(row, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(col, ref.T, rtol=1e-5, atol=1e-5)


def test_zo_on_pruned_weights_perturbs_only_survivors_and_variance_drops():
    zo = pytest.importorskip("fold_jax.zo")
    d, s = 400, 0.9
    w = {"k": np.random.default_rng(5).normal(size=(20, 20)).astype(np.float32)}
    mask = magnitude(w, s)
    w = {"k": w["k"] * np.asarray(mask["k"])}
    fun = lambda p: 0.5 * jnp.sum(p["k"] ** 2)  # noqa: E731 - gradient = w (zero off-mask)
    keys = jax.random.split(jax.random.key(6), 400)
    errs = {}
    for name, m in (("masked", mask), ("full", None)):
        vg = zo.value_and_grad(fun, num_directions=2, sigma=1e-2, mask=m)
        g = jax.jit(jax.vmap(lambda k, vg=vg: vg(w, k)[1]["k"]))(keys)
        if m is not None:
            assert np.all(np.asarray(g)[:, np.asarray(mask["k"]) == 0] == 0)
        errs[name] = float(np.mean(np.sum((np.asarray(g) - w["k"]) ** 2, axis=(1, 2))))
    # one antithetic gaussian pair: E|g_hat - g|^2 = (d + 1)|g|^2 ; d_eff = 40 vs d = 400
    ratio = errs["masked"] / errs["full"]
    expected = (round((1 - s) * d) + 1) / (d + 1)
    assert 0.7 * expected < ratio < 1.4 * expected


def test_gradually_pruned_mlp_learns_digits():
    task = tasks.get("digits")
    net = nets.mlp((64, 128, 10), "relu")
    tx = optax.chain(optax.adam(3e-3), prune.gradual_prune(0.9, 200, frequency=20))
    r = train.fit(methods.gradient(task.loss_fn(net.apply), tx), net.init(jax.random.key(0)),
                  task, apply=net.apply, steps=300, eval_every=300)
    assert prune.sparsity(r.state.params) == pytest.approx(0.9, abs=1e-3)
    assert r.history["test_accuracy"].iloc[-1] >= 0.94


def test_bad_input_names_the_argument(params0):
    for bad in (-0.1, 1.0, 1.5, "0.5", True):
        with pytest.raises(ValueError, match="sparsity"):
            prune.magnitude_mask(params0, bad)
    with pytest.raises(ValueError, match="scope"):
        prune.magnitude_mask(params0, 0.5, scope="network")
    with pytest.raises(ValueError, match="scope"):
        prune.random_mask(jax.random.key(0), params0, 0.5, scope="row")
    with pytest.raises(ValueError, match="schedule"):
        prune.gradual_prune(0.9, 100, schedule="linear")
    with pytest.raises(ValueError, match="final_sparsity"):
        prune.gradual_prune(1.0, 100)
    with pytest.raises(ValueError, match="total_steps"):
        prune.cubic_schedule(0.5, 0)
    with pytest.raises(ValueError, match="frequency"):
        prune.gradual_prune(0.5, 10, frequency=0)
    with pytest.raises(ValueError, match="kernel"):
        prune.to_bcsr(jnp.ones(3))
    with pytest.raises(ValueError, match="x has shape"):
        prune.sparse_matmul(jnp.ones((2, 4)), prune.to_bcsr(jnp.ones((3, 5))))
    with pytest.raises(ValueError, match="x_t has shape"):
        prune.sparse_matmul_t(prune.to_bcsr(jnp.ones((3, 5))), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="m="):
        prune.nm_mask({"k": jnp.ones((6, 2))}, 2, 4)


# ------------------------------------------- any flax model: masks and BCSR by path
#
# A user's model as a user writes it: linen Dense / LayerNorm nested in a submodule, so
# kernels sit at ("params", "Block_0", "Dense_1", "kernel"); biases and LayerNorm
# parameters are made non-trivial (a missing bias or a pruned LayerNorm would show).

from user_model import (  # noqa: E402  (shared with the other variant tests)
    BATCH,
    EPS,
    FEATURES,
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


def _at(tree, path):
    return np.asarray(at(tree, path), np.float64)


def test_magnitude_mask_by_path_on_a_user_model_leaves_layernorm_and_biases():
    mask = magnitude(USER_PARAMS, 0.9)
    flat = {prune.key_path(kp): np.asarray(m)
            for kp, m in jax.tree_util.tree_flatten_with_path(mask)[0]}
    assert prune.kernel_paths(USER_PARAMS) == KERNELS
    for path, m in flat.items():
        if path in KERNELS:
            assert (m == 0).sum() == round(0.9 * m.size)  # exact, per kernel
        else:  # LayerNorm scale / bias and Dense biases
            assert m.ndim == 1 and np.all(m == 1), path
    head_only = magnitude(USER_PARAMS, 0.5, select=lambda p, w: p == KERNELS[2])
    assert prune.sparsity(apply_mask(USER_PARAMS, head_only)) == pytest.approx(
        0.5 * WIDTH * OUTPUTS / (2 * FEATURES * WIDTH + WIDTH * OUTPUTS), abs=1e-9)


def test_user_model_bcsr_inference_matches_the_masked_dense_model():
    mask = magnitude(USER_PARAMS, 0.9)
    masked = apply_mask(USER_PARAMS, mask)
    infer = prune.sparse_inference(USER.apply, USER_PARAMS, mask)
    sparse_params = infer.args[0]
    for path in KERNELS:  # each kernel stored as BCSR of its 10% survivors
        kt = _at_leaf(sparse_params, path)
        assert kt.shape == _at(USER_PARAMS, path).shape[::-1]
        assert kt.nse == round(0.1 * kt.shape[0] * kt.shape[1])
    got = jax.jit(infer)(X)
    ref = jax.jit(USER.apply)(masked, X)
    exact, bound = chain_bound(X, user_steps(masked))
    assert_within(got, ref, exact, bound)
    # a jitted function can take the inference as an argument (it is a pytree)
    np.testing.assert_array_equal(jax.jit(lambda f, x: f(x))(infer, X), got)
    if jax.default_backend() == "cpu":  # every Dense layer is the native CSR kernel
        hlo = jax.jit(infer).lower(X).compile().as_text()
        assert hlo.count('custom_call_target="cpu_csr_sparse_dense_ffi"') == len(KERNELS)
        assert " dot(" not in hlo
        assert " dot(" in jax.jit(USER.apply).lower(masked, X).compile().as_text()


def _at_leaf(tree, path):
    for key in path:
        tree = tree[key]
    return tree


class NnxBlock(nnx.Module):
    def __init__(self, rngs):
        self.dense0 = nnx.Linear(FEATURES, WIDTH, rngs=rngs)
        self.norm = nnx.LayerNorm(WIDTH, rngs=rngs)
        self.dense1 = nnx.Linear(WIDTH, WIDTH, rngs=rngs)

    def __call__(self, x):
        return nnx.relu(self.dense1(nnx.relu(self.norm(self.dense0(x)))))


class NnxModel(nnx.Module):
    def __init__(self, rngs):
        self.block = NnxBlock(rngs)
        self.dense0 = nnx.Linear(WIDTH, OUTPUTS, rngs=rngs)

    def __call__(self, x):
        return self.dense0(self.block(x))


def test_nnx_model_bcsr_inference_matches_the_masked_dense_model():
    graphdef, state = nnx.split(NnxModel(nnx.Rngs(3)))
    state = jitter_vectors(state, 4)
    apply = lambda state, x: nnx.merge(graphdef, state)(x)  # noqa: E731
    assert prune.kernel_paths(state) == [("block", "dense0", "kernel"),
                                         ("block", "dense1", "kernel"), ("dense0", "kernel")]
    mask = magnitude(state, 0.9)
    masked = apply_mask(state, mask)
    got = jax.jit(prune.sparse_inference(apply, state, mask))(X)
    ref = jax.jit(apply)(masked, X)
    steps = user_steps(jax.tree.map(np.asarray, nnx.to_pure_dict(masked)), prefix=(),
                        names=("block", "dense0", "norm", "dense1"))
    exact, bound = chain_bound(X, steps)
    assert_within(got, ref, exact, bound)


def test_fold_jax_mlp_through_sparse_inference_matches_sparse_apply(params0):
    params = apply_mask(params0, magnitude(params0, 0.9))
    x = np.random.default_rng(4).normal(size=(BATCH, 20)).astype(np.float32)
    got = jax.jit(prune.sparse_inference(NET.apply, params))(x)
    ref = jax.jit(lambda x: prune.sparse_apply(prune.sparse_mlp(params), x))(x)
    w = [_at(params, ("params", f"dense_{i}", "kernel")) for i in range(3)]
    b = [_at(params, ("params", f"dense_{i}", "bias")) for i in range(3)]
    steps = [("dense", w[0], b[0]), ("relu",), ("dense", w[1], b[1]), ("relu",),
             ("dense", w[2], b[2])]
    exact, bound = chain_bound(x, steps)
    assert_within(got, ref, exact, bound)


def test_unknown_layers_with_a_bcsr_kernel_run_dense_and_warn():
    class Scaled(nn.Module):  # a user layer with its own "kernel": no BCSR product
        @nn.compact
        def __call__(self, x):
            return 2.0 * (x @ self.param("kernel", nn.initializers.lecun_normal(), (8, 3)))

    model = Scaled()
    params = jax.jit(model.init)(jax.random.key(0), np.ones((1, 8), np.float32))
    x = np.random.default_rng(1).normal(size=(16, 8)).astype(np.float32)
    with pytest.warns(prune.KernelFallbackWarning, match="Scaled"):  # warned while tracing
        got = jax.jit(prune.sparse_inference(model.apply, params))(x)
    w = _at(params, ("params", "kernel"))  # one product of 8 terms, then x2 (exact)
    tol = 2 * (8 + 2) * EPS * 2 * (np.abs(np.asarray(x)) @ np.abs(w))
    assert np.all(np.abs(np.asarray(got) - np.asarray(jax.jit(model.apply)(params, x))) <= tol)


def test_sparse_inference_names_bad_inputs():
    mask = magnitude(USER_PARAMS, 0.5)
    with pytest.raises(ValueError, match="mask must have the structure of params"):
        prune.sparse_inference(USER.apply, USER_PARAMS, {"params": mask["params"]["Block_0"]})
    bad = jax.tree_util.tree_map_with_path(
        lambda kp, m: m[:1] if prune.key_path(kp) == KERNELS[0] else m, mask)
    with pytest.raises(ValueError, match="Block_0/Dense_0/kernel has shape"):
        prune.sparse_inference(USER.apply, USER_PARAMS, bad)
    norm_only = {"params": {"LayerNorm_0": {"scale": jnp.ones(4), "bias": jnp.zeros(4)}}}
    with pytest.raises(ValueError, match="no Dense kernels"):
        prune.sparse_inference(nn.LayerNorm().apply, norm_only)
    with pytest.raises(ValueError, match="no leaves to prune"):
        prune.magnitude_mask(norm_only, 0.5)
    with pytest.raises(TypeError, match="apply must be callable"):
        prune.sparse_inference("model", USER_PARAMS)
    with pytest.raises(TypeError, match="select must be callable"):
        prune.magnitude_mask(USER_PARAMS, 0.5, select="kernel")
    infer = prune.sparse_inference(USER.apply, USER_PARAMS)
    with pytest.raises(ValueError, match="Block_0/Dense_0: input has shape"):
        infer(jnp.ones((2, FEATURES + 1)))
