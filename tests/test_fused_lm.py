"""Standard flax language models (and a conv net) on the fused low-rank path.

The models are written here as a user would write them, from flax layers only:
a transformer LM (nn.Embed, a learned positional table added by hand,
nn.MultiHeadDotProductAttention with a causal mask, LayerNorm, Dense MLP), its nnx
twin, a GRU LM, and fold_jax.learn.nets.cnn on digits. zo.value_and_grad(rank=r) must
fuse every leaf (describe: 0 materialized, no FallbackWarning), and each fused leaf
must compute what its materialized perturbation computes.
"""

from __future__ import annotations

import functools
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from fold_jax.estimators import flax_layers, methods, perturb, zo
from fold_jax.estimators.perturb import LowRank
from fold_jax.learn import nets, tasks, train

EPS32 = float(np.finfo(np.float32).eps)
RANK = 4
VOCAB, T, B = 48, 16, 4


@pytest.fixture(autouse=True)
def _float32_products():
    """Full float32 dots (TF32 on a GPU would need 1e-3 tolerances)."""
    with jax.default_matmul_precision("float32"):
        yield


# ----------------------------------------------------------------- the user's models


class Block(nn.Module):
    width: int
    heads: int

    @nn.compact
    def __call__(self, h):
        mask = nn.make_causal_mask(h[..., 0])
        h = h + nn.MultiHeadDotProductAttention(self.heads)(nn.LayerNorm()(h), mask=mask)
        y = nn.Dense(self.width)(nn.gelu(nn.Dense(4 * self.width)(nn.LayerNorm()(h))))
        return h + y


class TransformerLM(nn.Module):
    vocab: int = VOCAB
    width: int = 32
    depth: int = 1
    heads: int = 4
    max_len: int = T

    @nn.compact
    def __call__(self, tokens):
        h = nn.Embed(self.vocab, self.width)(tokens)
        pos = self.param("pos", nn.initializers.normal(0.02), (self.max_len, self.width))
        h = h + pos[: tokens.shape[-1]]
        for _ in range(self.depth):
            h = Block(self.width, self.heads)(h)
        return nn.Dense(self.vocab)(nn.LayerNorm()(h))


class GruLM(nn.Module):
    vocab: int = VOCAB
    hidden: int = 64

    @nn.compact
    def __call__(self, tokens):
        h = nn.RNN(nn.GRUCell(self.hidden))(nn.Embed(self.vocab, 32)(tokens))
        return nn.Dense(self.vocab)(h)


class NnxLM(nnx.Module):
    def __init__(self, vocab=VOCAB, width=32, heads=4, max_len=T, *, rngs):
        self.embed = nnx.Embed(vocab, width, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (max_len, width)))
        self.ln1, self.ln2, self.ln3 = (nnx.LayerNorm(width, rngs=rngs) for _ in range(3))
        self.attn = nnx.MultiHeadAttention(heads, width, decode=False, rngs=rngs)
        self.up = nnx.Linear(width, 4 * width, rngs=rngs)
        self.down = nnx.Linear(4 * width, width, rngs=rngs)

    def __call__(self, tokens):
        h = self.embed(tokens) + self.pos[...][: tokens.shape[-1]]
        mask = nnx.make_causal_mask(tokens)
        h = h + self.attn(self.ln1(h), mask=mask)
        h = h + self.down(nnx.gelu(self.up(self.ln2(h))))
        return self.embed.attend(self.ln3(h))  # tied output layer


@functools.cache
def _tokens(seed=0):
    """(x, y) next-token pairs, drawn in one program (not op by op), once per seed."""
    @jax.jit
    def draw():
        x = jax.random.randint(jax.random.key(seed), (B, T + 1), 0, VOCAB)
        return x[:, :-1], x[:, 1:]

    return draw()


def _linen(model):
    x, y = _tokens()
    params = jax.jit(model.init)(jax.random.key(1), x)  # one program, not op by op

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()

    return loss, params, model.apply, x, y


@functools.cache
def _nnx():
    # the module's structure from an abstract build, its weights from one program (an
    # eager build would compile each initializer's ops apart)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: NnxLM(rngs=nnx.Rngs(0))))
    state = jax.jit(lambda: nnx.split(NnxLM(rngs=nnx.Rngs(0)))[1])()
    x, y = _tokens()

    def apply(s, x):
        return nnx.merge(graphdef, s)(x)

    def loss(s, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(apply(s, x), y).mean()

    return loss, state, apply, x, y


@functools.cache
def _transformer():
    """The transformer LM's (loss, params, apply, x, y), built once for every test."""
    return _linen(TransformerLM())


SIGMA, ESTIMATE_KEY, ESTIMATE_K = 1e-2, 3, 8  # the transformer's estimate, shared below


def _estimator(loss, fused="auto"):
    return zo.value_and_grad(loss, num_directions=ESTIMATE_K, sigma=SIGMA, rank=RANK,
                             fused=fused, chunk_size=None)


@functools.cache
def _fused_estimate(name):
    """MODELS[name]'s fused rank-r estimate (key ESTIMATE_KEY), compiled and run once
    with FallbackWarning raised as an error (only real fallbacks warn): the leaf test
    and the fused-vs-materialized test share this one program."""
    loss, params, _, x, y = MODELS[name]()
    with warnings.catch_warnings():
        warnings.simplefilter("error", zo.FallbackWarning)
        return jax.device_get(jax.jit(_estimator(loss))(params, jax.random.key(ESTIMATE_KEY),
                                                         x, y))


@functools.cache
def _gru():
    return _linen(GruLM())


# each model's (loss, params, apply, x, y), built once for every test
MODELS = {"transformer": _transformer, "gru": _gru, "nnx_transformer": _nnx}


@pytest.fixture(scope="module", params=sorted(MODELS))
def lm(request):
    return request.param, MODELS[request.param]()


# ----------------------------------------------------------------------------- tests


def test_every_leaf_of_a_standard_lm_is_fused_summed_or_full_rank(lm):
    name, (loss, params, _, x, y) = lm
    info = _estimator(loss).describe(params, x, y)
    leaves = info["leaves"]
    assert info["materialized"] == 0 and info["path"] == "fused", {
        k: v["why"] for k, v in leaves.items() if v["path"] == "materialized"}
    for path, leaf in leaves.items():
        assert leaf["why"]
        if len(leaf["shape"]) == 1:  # biases, LayerNorm scales
            assert leaf["path"] == "full_rank", path
        elif "pos" in path:  # the hand-added table: no layer's, cheap to sum
            assert leaf["path"] == "summed" and "add" in leaf["why"], (path, leaf)
        else:  # embedding, q/k/v/out kernels and 2-D biases, MLP, GRU, head
            assert leaf["path"] == "fused", (path, leaf)
    kinds = {k.split("'")[-2] for k in leaves}
    assert {"embedding", "kernel"} <= kinds
    if name != "gru":
        assert sum(v["path"] == "summed" for v in leaves.values()) == 1
    value, grads = _fused_estimate(name)  # raises on a FallbackWarning
    assert np.isfinite(value)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def _lowrank_leaves(params):
    leaves, treedef = jax.tree.flatten(params)
    return [i for i, w in enumerate(leaves) if w.ndim >= 2], leaves, treedef


def test_each_fused_leaf_equals_its_materialized_perturbation():
    """Every fused leaf of the transformer LM (d = 1.9e4) alone perturbed, scale 0.05:
    the fused logits against the same model on W + s A B^T. Rounding: each of the
    net's n_layers products (fan-in <= 4 width = 128) adds <= eps (n + r + 2) of the
    magnitudes it sums (gamma_n; the factored form adds r terms and the rounding of
    W + s A B^T); LayerNorms rescale by 1/std of their input (>= 1/2 here: checked
    below), so the logits differ by <= 2^n_ln n_layers eps (128 + r + 2) max|logits|.
    The perturbation must move the logits by 100x that bound (else the test could not
    fail), except the key bias: it adds q . b to every key's logit alike, which the
    softmax removes (so its check is the error bound alone).

    Every fused leaf is a LowRank in both programs, its scale a traced argument: one
    fused and one materialized program, called once per leaf with that leaf's scale
    0.05 and the others' 0. A zero scale adds exact zeros (W + 0 A B^T == W, and
    x W + 0 (x A) B^T == x W in float32), so each call perturbs that leaf alone."""
    _, params, apply, x, _ = _transformer()
    assert sum(np.size(w) for w in jax.tree.leaves(params)) >= 1e4
    idx, leaves, treedef = _lowrank_leaves(params)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    # pos is summed, not fused: the estimator hands it to the loss as an array
    fused = [i for i in idx if paths[i] != "['params']['pos']"]
    @jax.jit  # every leaf's factors in one program, not one per leaf shape
    def draw_factors():
        factors = {}
        for i in fused:
            n_in, n_out = int(np.prod(leaves[i].shape[:-1])), leaves[i].shape[-1]
            ka, kb = jax.random.split(jax.random.key(i))
            factors[i] = (jax.random.normal(ka, (n_in, RANK)),
                          jax.random.normal(kb, (n_out, RANK)))
        return factors

    factors = draw_factors()

    def perturbed(scales):
        new = list(leaves)
        for j, i in enumerate(fused):
            new[i] = LowRank(leaves[i], *factors[i], scales[j], "auto")
        return jax.tree.unflatten(treedef, new)

    got_logits = jax.jit(lambda s: flax_layers.wrap(apply)(perturbed(s), x))
    want_logits = jax.jit(lambda s: apply(jax.tree.map(perturb.materialize, perturbed(s),
                                                       is_leaf=perturb.is_lowrank), x))
    base = np.asarray(want_logits(np.zeros(len(fused), np.float32)))  # the model on params
    n_layers, n_ln = 7, 3  # embed, q/k/v, out, 2 MLP, head; 3 LayerNorms
    bound = 2**n_ln * n_layers * EPS32 * (128 + RANK + 2)
    for j, i in enumerate(fused):
        scales = np.zeros(len(fused), np.float32)
        scales[j] = 0.05
        got, want = np.asarray(got_logits(scales)), np.asarray(want_logits(scales))
        scale = float(np.max(np.abs(want)))
        err = float(np.max(np.abs(got - want)))
        moved = float(np.max(np.abs(want - base)))
        assert err <= bound * scale, (i, leaves[i].shape, err, bound * scale)
        if "['key']['bias']" not in paths[i]:
            assert moved >= 100 * bound * scale, (paths[i], moved)


def test_fused_estimate_equals_the_materialized_one_at_d_1e4():
    """The whole estimator, fused vs fused=False, same key: each direction's losses
    differ by rounding only (<= 64 eps |f|), so value by that and each grad entry by
    5.5 * 64 eps |f| / sigma (the noise bound |u| < 5.5; see test_zo)."""
    loss, params, _, x, y = _transformer()
    sigma, key = SIGMA, jax.random.key(ESTIMATE_KEY)
    out = {"auto": _fused_estimate("transformer"),  # shared with the leaf test
           False: jax.jit(_estimator(loss, fused=False))(params, key, x, y)}
    f0 = float(jax.jit(loss)(params, x, y))  # one program, not op by op
    np.testing.assert_allclose(out["auto"][0], out[False][0], rtol=0, atol=64 * EPS32 * f0)
    atol = 5.5 * 64 * EPS32 * f0 / sigma
    for a, b in zip(jax.tree.leaves(out["auto"][1]), jax.tree.leaves(out[False][1]),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


def test_a_hand_written_product_is_still_a_fallback_and_warns():
    """A table multiplied by hand (x @ W, no layer) is materialized: it is not only
    added to an activation, so the per-direction weight is a real fallback."""
    params = {"w": np.ones((64, 64), np.float32), "pos": np.ones((8, 64), np.float32)}
    x = np.ones((16, 8, 64), np.float32)

    def loss(p, x):
        return jnp.mean((x + p["pos"]) @ p["w"])

    vg = zo.value_and_grad(loss, num_directions=4, rank=RANK)
    leaves = vg.describe(params, x)["leaves"]
    assert leaves["['pos']"]["path"] == "summed"
    assert leaves["['w']"]["path"] == "materialized"
    with pytest.warns(zo.FallbackWarning, match=r"1 of 2 .*\['w'\]"):  # warned when traced
        jax.jit(vg)(params, jax.random.key(0), x)


def test_cnn_on_digits_is_fused_and_trains():
    task = tasks.get("digits")
    net = nets.cnn((8, 8, 1), (8, 16), 10)
    params = jax.jit(net.init)(jax.random.key(0))  # one program, not op by op
    loss = task.loss_fn(net.apply)
    xb, yb = np.asarray(task.x_train)[:64], np.asarray(task.y_train)[:64]
    info = zo.value_and_grad(loss, num_directions=8, rank=RANK).describe(params, xb, yb)
    assert info["materialized"] == 0
    for path, leaf in info["leaves"].items():
        assert leaf["path"] == ("fused" if "kernel" in path else "full_rank"), (path, leaf)
    assert {p.split("'")[3] for p in info["leaves"]} == {"conv_0", "conv_1", "head"}
    m = methods.zeroth_order(loss, optax.adam(1e-2), num_directions=16, sigma=1e-2,
                             rank=RANK)
    with warnings.catch_warnings():
        warnings.simplefilter("error", zo.FallbackWarning)
        r = train.fit(m, params, task, apply=net.apply, steps=30, batch_size=64,
                      eval_every=30, eval_split="val")
    val_loss = jax.jit(loss)  # one program for both, not op by op
    before = float(val_loss(params, task.x_val, task.y_val))
    after = float(val_loss(r.state.params, task.x_val, task.y_val))
    # ln(10) = 2.30 at the start; 30 steps of 8 antithetic pairs must lower it (a
    # random walk of step 1e-2 moves it by far less than the 5% asked)
    assert after < 0.95 * before, (before, after)
