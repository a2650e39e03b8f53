"""flax_layers: standard linen / nnx layers with LowRank kernels inside intercept().

Every layer is a user-written model, evaluated with a LowRank kernel under intercept()
and compared with the same model on ``materialize(kernel)`` (no interception).
Tolerances: float32, eps = 2^-23 ~ 1.2e-7. An output entry sums n = fan-in products;
the two evaluations differ by at most eps * (n + r + 2) * M (gamma_n on each side, the
r low-rank terms, the rounding of W + s a b^T), with M the same model applied to |x|
and the kernel of magnitudes |base| + |s| |a| |b|^T (bias |bias|). ``_bound`` is that.
"""

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from fold_jax.estimators import flax_layers, perturb
from fold_jax.estimators.perturb import LowRank

EPS32 = float(np.finfo(np.float32).eps)  # 1.19e-7
RANK = 4
K = 5  # directions under vmap


@pytest.fixture(autouse=True)
def _float32_products():
    """Full float32 dots and convs (TF32 on a GPU would need 1e-3 tolerances)."""
    with jax.default_matmul_precision("float32"):
        yield


# --------------------------------------------------------------------------- helpers


def _factors(key, shape, lead=()):
    """a (*lead, prod(shape[:-1]), r), b (*lead, shape[-1], r), scale (*lead,)."""
    ka, kb, ks = jax.random.split(key, 3)
    n_in, n_out = math.prod(shape[:-1]), shape[-1]
    return (jax.random.normal(ka, (*lead, n_in, RANK)),
            jax.random.normal(kb, (*lead, n_out, RANK)),
            jax.random.uniform(ks, lead, minval=0.05, maxval=0.2))


def _abs_kernel(w: LowRank):
    low = jnp.abs(w.scale) * (jnp.abs(w.a) @ jnp.abs(w.b).T)
    return jnp.abs(w.base) + low.reshape(w.shape)


def _assert_within(got, want, bound):
    assert got.shape == want.shape and got.dtype == want.dtype
    err = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
    worst = err.argmax()
    assert np.all(err <= bound), f"max error {err.flat[worst]:.3g}, bound {bound.flat[worst]:.3g}"


def _eqns(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for v in eqn.params.values():
            for sub in v if isinstance(v, tuple | list) else (v,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _eqns(inner)


def _rhs_shapes(fun, *args):
    """Right operand shapes of every dot_general / conv in fun's jaxpr."""
    jaxpr = jax.make_jaxpr(fun)(*args).jaxpr
    return {tuple(e.invars[1].aval.shape) for e in _eqns(jaxpr)
            if e.primitive.name in ("dot_general", "conv_general_dilated")}


# ------------------------------------------------------------------- the two APIs


class Linen:
    """A linen model: params {"params": {..., name: {"kernel", "bias"}}}."""

    def __init__(self, module: nn.Module, x, name: str = "layer"):
        self.module, self.name = module, name
        self.params = _random_biases(module.init(jax.random.key(0), x))

    @property
    def kernel(self):
        return self.params["params"][self.name]["kernel"]

    def with_kernel(self, kernel, params=None):
        params = self.params if params is None else params
        layer = {**params["params"][self.name], "kernel": kernel}
        return {"params": {**params["params"], self.name: layer}}

    def magnitudes(self):
        return jax.tree.map(jnp.abs, self.params)

    def apply(self, params, x):
        return self.module.apply(params, x)


class Nnx:
    """An nnx model split once; the loss merges it: ``nnx.merge(graphdef, state)(x)``."""

    def __init__(self, model: nnx.Module, name: str = "layer"):
        self.graphdef, state = nnx.split(model)
        self.params = _random_biases(state)
        paths = [jax.tree_util.keystr(p) for p, _ in
                 jax.tree_util.tree_flatten_with_path(self.params)[0]]
        self.index = paths.index(f"['{name}']['kernel'].value")

    @property
    def kernel(self):
        return jax.tree.leaves(self.params)[self.index]

    def with_kernel(self, kernel, params=None):
        """The estimator's recipe: flatten the State, replace a leaf, unflatten."""
        leaves, treedef = jax.tree.flatten(self.params if params is None else params)
        leaves[self.index] = kernel
        return jax.tree.unflatten(treedef, leaves)

    def magnitudes(self):
        return jax.tree.map(jnp.abs, self.params)

    def apply(self, state, x):
        return nnx.merge(self.graphdef, state)(x)


class LinenDense(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(128, name="layer")(nn.tanh(x))


class LinenDenseGeneral(nn.Module):  # contracts axes (1, -1): kernel (6, 7, 32)
    @nn.compact
    def __call__(self, x):
        return nn.DenseGeneral(32, axis=(1, -1), name="layer")(x)


class LinenConv(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Conv(16, (3, 3), strides=(2, 1), padding=((1, 0), (2, 1)), name="layer")(x)


class NnxConvNet(nnx.Module):  # a user's module around the layer
    def __init__(self):
        self.layer = nnx.Conv(8, 16, (3, 3), strides=2, padding="CIRCULAR", rngs=nnx.Rngs(0))

    def __call__(self, x):
        return nnx.relu(self.layer(x))


class NnxMlp(nnx.Module):
    def __init__(self):
        self.layer = nnx.Linear(64, 128, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return self.layer(x)


def _x(shape, seed=1):
    """Standard-normal float32 inputs drawn by NumPy: module constants that compile
    nothing at collection (every worker collects every file)."""
    return jax.device_put(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def _random_biases(params):
    """Biases initialise to zero; make them nonzero so a dropped or doubled bias shows."""
    def one(path, v):
        if "bias" not in jax.tree_util.keystr(path):
            return v
        return jax.random.normal(jax.random.key(len(v.shape) + v.size), v.shape, v.dtype)
    return jax.tree_util.tree_map_with_path(one, params)


X_DENSE, X_GENERAL, X_IMAGES = _x((32, 64)), _x((4, 6, 5, 7)), _x((4, 8, 8, 8))
CASES = {  # name: (model factory, x, fan-in n, rhs shape of the factored low-rank product)
    "linen_dense": (lambda: Linen(LinenDense(), X_DENSE), X_DENSE, 64, (64, RANK)),
    "linen_dense_general": (lambda: Linen(LinenDenseGeneral(), X_GENERAL), X_GENERAL, 42,
                            (6, 7, RANK)),
    "linen_conv": (lambda: Linen(LinenConv(), X_IMAGES), X_IMAGES, 72, (3, 3, 8, RANK)),
    "nnx_linear": (lambda: Nnx(NnxMlp()), X_DENSE, 64, (64, RANK)),
    "nnx_conv": (lambda: Nnx(NnxConvNet()), X_IMAGES, 72, (3, 3, 8, RANK)),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    make, x, fan_in, factor_rhs = CASES[request.param]
    return make(), x, fan_in, factor_rhs


def _bound(model, x, w: LowRank, fan_in: int):
    """eps (n + r + 2) M, M = the model on |x| with kernel magnitudes (header)."""
    magnitudes = model.with_kernel(_abs_kernel(w), model.magnitudes())
    m = np.asarray(model.apply(magnitudes, jax.tree.map(jnp.abs, x)))
    return EPS32 * (fan_in + RANK + 2) * np.abs(m)


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("how", ["factored", "dense"])
def test_lowrank_kernel_equals_the_materialized_kernel(case, how, recorder):
    model, x, fan_in, factor_rhs = case
    base = model.kernel
    a, b, s = _factors(jax.random.key(2), base.shape)
    w = recorder(base, a, b, s, how)
    loss = flax_layers.wrap(model.apply)
    got = jax.jit(loss)(model.with_kernel(w), x)
    assert recorder.picks == [how] and recorder.a_reads  # one pick, obeyed (below)
    want = model.apply(model.with_kernel(perturb.materialize(w)), x)
    _assert_within(got, want, _bound(model, x, w, fan_in))
    # the factored path multiplies x by the rank-r factor; the dense one never does
    rhs = _rhs_shapes(loss, model.with_kernel(w), x)
    assert (factor_rhs in rhs) == (how == "factored"), rhs


@pytest.mark.parametrize("how", ["factored", "dense"])
def test_under_vmap_over_a_stack_of_directions(case, how, recorder):
    model, x, fan_in, _ = case
    base = model.kernel
    a, b, s = _factors(jax.random.key(3), base.shape, lead=(K,))

    def perturbed(a, b, s):
        return flax_layers.wrap(model.apply)(model.with_kernel(recorder(base, a, b, s, how)), x)

    def materialized(a, b, s):
        return model.apply(model.with_kernel(perturb.materialize(LowRank(base, a, b, s))), x)

    got = jax.jit(jax.vmap(perturbed))(a, b, s)
    assert recorder.picks == [how]
    want = jax.vmap(materialized)(a, b, s)
    bound = np.stack([_bound(model, x, LowRank(base, a[i], b[i], s[i]), fan_in)
                      for i in range(K)])
    _assert_within(got, want, bound)


def test_auto_association_follows_the_shape_rule(case, recorder):
    """rank 4, matrix views 64 x 128, 42 x 32, 72 x 16: 4 r (in + out) = 3072 <= 8192 and
    1184 <= 1344 (factored); conv 1408 > 1152 with rows 256 (dense)."""
    model, x, *_ = case
    a, b, s = _factors(jax.random.key(4), model.kernel.shape)
    flax_layers.wrap(model.apply)(model.with_kernel(recorder(model.kernel, a, b, s)), x)
    conv = len(model.kernel.shape) == 4
    assert recorder.picks == ["dense" if conv else "factored"]


def test_array_kernels_run_exactly_as_without_the_context(case):
    model, x, *_ = case
    outside = model.apply(model.params, x)
    jaxpr_outside = str(jax.make_jaxpr(model.apply)(model.params, x))
    with flax_layers.intercept():
        inside = model.apply(model.params, x)
        jaxpr_inside = str(jax.make_jaxpr(model.apply)(model.params, x))
    np.testing.assert_array_equal(inside, outside)
    assert jaxpr_inside == jaxpr_outside


def test_the_nnx_patch_is_restored_after_the_context_even_after_an_exception():
    originals = nnx.Linear.__call__, nnx.Conv.__call__
    with flax_layers.intercept():
        assert nnx.Linear.__call__ is not originals[0]
        with flax_layers.intercept():  # nested: still patched after the inner one exits
            pass
        assert nnx.Conv.__call__ is not originals[1]
    assert (nnx.Linear.__call__, nnx.Conv.__call__) == originals
    with pytest.raises(RuntimeError, match="boom"), flax_layers.intercept():
        raise RuntimeError("boom")
    assert (nnx.Linear.__call__, nnx.Conv.__call__) == originals
    assert "__call__" in vars(nnx.Linear) and "__call__" in vars(nnx.Conv)


def test_without_the_context_a_lowrank_kernel_still_fails_loudly():
    model = Linen(LinenDense(), X_DENSE)
    a, b, s = _factors(jax.random.key(5), model.kernel.shape)
    with pytest.raises(TypeError):
        model.apply(model.with_kernel(LowRank(model.kernel, a, b, s)), X_DENSE)


# ------------------------------------------------- other layers, options, fallbacks


class Several(nn.Module):
    """Layers beyond the five above, each named; one input per layer kind. Only the
    layer ``only`` is built and run (its output under its name): a test compiles the
    layer it checks, not all six."""

    only: str

    @nn.compact
    def __call__(self, x):
        layers = {
            "general2": lambda: nn.DenseGeneral((4, 8), name="general2")(x["dense"]),  # 2 axes
            "grouped": lambda: nn.Conv(16, (3, 3), feature_group_count=4,
                                       name="grouped")(x["img"]),
            "masked": lambda: nn.Conv(16, (3, 3), mask=jnp.tril(jnp.ones((3, 3, 8, 16))),
                                      name="masked")(x["img"]),
            "local": lambda: nn.ConvLocal(6, (3, 3), name="local")(x["img"]),
            "transpose": lambda: nn.ConvTranspose(16, (3, 3), strides=(2, 2),
                                                  padding="CIRCULAR", name="transpose")(x["img"]),
            "bf16": lambda: nn.Dense(128, dtype=jnp.bfloat16, name="bf16")(x["dense"]),
        }
        return {self.only: layers[self.only]()}


FALLBACK = {"masked", "local"}  # materialized, no pick
FAN_IN = {"general2": 64, "grouped": 18, "masked": 72, "local": 72, "transpose": 72}


@pytest.mark.parametrize("name", ["general2", "grouped", "masked", "local", "transpose"])
def test_other_linen_layers_fused_or_materialized(name, recorder):
    x = {"dense": X_DENSE, "img": X_IMAGES}
    model = Linen(Several(name), x, name)
    a, b, s = _factors(jax.random.key(6), model.kernel.shape)
    w = recorder(model.kernel, a, b, s, "factored")
    got = jax.jit(flax_layers.wrap(model.apply))(model.with_kernel(w), x)[name]
    want = model.apply(model.with_kernel(perturb.materialize(w)), x)[name]
    _assert_within(got, want, _bound(_Select(model, name), x, w, FAN_IN[name]))
    assert recorder.picks == ([] if name in FALLBACK else ["factored"])


class _Select:
    """One output of a multi-output Linen model, for _bound."""

    def __init__(self, model, name):
        self.model, self.name = model, name

    def __getattr__(self, attr):
        return getattr(self.model, attr)

    def apply(self, params, x):
        return self.model.apply(params, x)[self.name]


def test_computation_dtype_is_flax_s(recorder):
    """Dense(dtype=bfloat16): bf16 out like flax. bf16 unit roundoff 2^-8; each term
    rounds x, the kernel parts and s (<= 4 roundings), the output once more: the two
    sides differ by <= 2 * 5 * 2^-8 * M."""
    x = {"dense": X_DENSE, "img": X_IMAGES}
    model = Linen(Several("bf16"), x, "bf16")
    a, b, s = _factors(jax.random.key(7), model.kernel.shape)
    w = recorder(model.kernel, a, b, s, "factored")
    got = flax_layers.wrap(model.apply)(model.with_kernel(w), x)["bf16"]
    want = model.apply(model.with_kernel(perturb.materialize(w)), x)["bf16"]
    assert got.dtype == want.dtype == jnp.bfloat16
    m = np.asarray(_Select(model, "bf16").apply(
        model.with_kernel(_abs_kernel(w), model.magnitudes()), jax.tree.map(jnp.abs, x)),
        np.float64)
    err = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
    assert np.all(err <= 10 * 2.0**-8 * m)
    assert recorder.picks == ["factored"]


def test_lifted_linen_transforms_keep_the_interception():
    """nn.scan over 3 layers with stacked kernels (a, b, scale stacked on axis 0 too)."""

    class Block(nn.Module):
        @nn.compact
        def __call__(self, h, _):
            return nn.relu(nn.Dense(16, name="layer")(h)), None

    class Deep(nn.Module):
        @nn.compact
        def __call__(self, h):
            scan = nn.scan(nn.remat(Block), variable_axes={"params": 0},
                           split_rngs={"params": True}, length=3)
            return scan(name="blocks")(h, None)[0]

    x = _x((8, 16))
    model = Deep()
    params = _random_biases(model.init(jax.random.key(0), x))
    layer = params["params"]["blocks"]["layer"]
    kernel = layer["kernel"]  # (3, 16, 16)
    a, b, s = _factors(jax.random.key(8), (16, 16), lead=(3,))

    def with_layer(kernel, bias):
        return {"params": {"blocks": {"layer": {"kernel": kernel, "bias": bias}}}}

    lowrank = with_layer(LowRank(kernel, a, b, s, "factored"), layer["bias"])
    got = flax_layers.wrap(model.apply)(lowrank, x)
    low = s[:, None, None] * jnp.einsum("lir,lor->lio", a, b)
    want = model.apply(with_layer(kernel + low, layer["bias"]), x)
    # Each layer adds <= eps (16 + r + 2) M_l (header); relu is 1-Lipschitz and the next
    # layers multiply that error by at most their |W|, so all 3 together stay below
    # 3 eps (16 + r + 2) M, M = the net on |x| with |W| + |s| |a| |b|^T and |bias|
    # (every entry nonnegative, so relu passes it unchanged and it dominates each term).
    magnitudes = with_layer(jnp.abs(kernel) + jnp.abs(low), jnp.abs(layer["bias"]))
    m = np.asarray(model.apply(magnitudes, jnp.abs(x)))
    err = np.abs(np.asarray(got) - np.asarray(want))
    assert np.all(err <= 3 * EPS32 * (16 + RANK + 2) * m)


# ------------------------------------- embeddings, multi-axis projections, 2-D biases


def _identity(z):
    return z


class LinenTied(nn.Module):
    """Embed, then its attend (a tied output layer)."""

    act: Callable = jnp.tanh

    @nn.compact
    def __call__(self, tokens):
        embed = nn.Embed(40, 24, name="embed")
        return embed.attend(self.act(embed(tokens)))


class NnxTied(nnx.Module):
    def __init__(self, act=jnp.tanh):
        self.embed, self.act = nnx.Embed(40, 24, rngs=nnx.Rngs(0)), act

    def __call__(self, tokens):
        return self.embed.attend(self.act(self.embed(tokens)))


class LinenHeads(nn.Module):  # q-style (16 -> (4, 8)) then out-style ((4, 8) -> 16)
    act: Callable = jnp.tanh

    @nn.compact
    def __call__(self, x):
        h = nn.DenseGeneral((4, 8), name="qkv")(x)
        return nn.DenseGeneral(16, axis=(-2, -1), name="out")(self.act(h))


class NnxHeads(nnx.Module):
    def __init__(self, act=jnp.tanh):
        self.qkv = nnx.LinearGeneral(16, (4, 8), rngs=nnx.Rngs(0))
        self.out = nnx.LinearGeneral((4, 8), 16, axis=(-2, -1), rngs=nnx.Rngs(1))
        self.act = act

    def __call__(self, x):
        return self.out(self.act(self.qkv(x)))


TOKENS = jax.device_put(np.random.default_rng(9).integers(0, 40, (3, 5)).astype(np.int32))
X_HEADS = _x((6, 16))
TIED_HEADS = {"linen_tied": (LinenTied, TOKENS), "nnx_tied": (NnxTied, TOKENS),
              "linen_heads": (LinenHeads, X_HEADS), "nnx_heads": (NnxHeads, X_HEADS)}


def _model(name, act):
    """(params, apply) of a TIED_HEADS model with activation act."""
    make, x = TIED_HEADS[name]
    if name.startswith("linen"):
        module = make(act=act)
        return module.init(jax.random.key(0), x), module.apply
    graphdef, state = nnx.split(make(act=act))
    return state, lambda s, x: nnx.merge(graphdef, s)(x)


@pytest.mark.parametrize("name", sorted(TIED_HEADS))
def test_embeddings_and_multi_axis_projections_equal_their_materialized_leaves(name):
    """Every 2-D+ leaf (tables, (16, 4, 8) / (4, 8, 16) kernels, the (4, 8) bias) LowRank at
    once, each layer obeying its pick, against the model on the materialized leaves.
    Each of the two products sums <= 32 terms and tanh is 1-Lipschitz, so the outputs
    differ by <= 2 eps (32 + r + 2) M per entry, M the model on |x| and the leaves'
    magnitudes with tanh replaced by the identity (|tanh z| <= |z|)."""
    x = TIED_HEADS[name][1]
    params, apply = _model(name, jnp.tanh)
    leaves, treedef = jax.tree.flatten(_random_biases(params))
    low = [LowRank(w, *_factors(jax.random.key(20 + i), w.shape)) if w.ndim >= 2 else w
           for i, w in enumerate(leaves)]
    assert sum(isinstance(w, LowRank) for w in low) == (1 if "tied" in name else 3)
    got = jax.jit(flax_layers.wrap(apply))(jax.tree.unflatten(treedef, low), x)
    want = apply(jax.tree.unflatten(treedef, [perturb.materialize(w) for w in low]), x)
    mags = [_abs_kernel(w) if isinstance(w, LowRank) else jnp.abs(w) for w in low]
    _, linear = _model(name, _identity)
    m = np.abs(np.asarray(linear(jax.tree.unflatten(treedef, mags),
                                 x if x.dtype.kind == "i" else jnp.abs(x))))
    _assert_within(got, want, 2 * EPS32 * (32 + RANK + 2) * m)
