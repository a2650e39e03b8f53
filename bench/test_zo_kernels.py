"""Zeroth-order kernels on the digits MLP: fused low-rank and full-rank estimators,
an OpenAI-ES generation that materializes its population (reference), chunked
memory, scaling in num_directions and n_params, direct-search steps, forward gradients.

Rows with ``inference`` time plain ``net.apply`` on ``num_directions x batch``
examples in the same test (frac_of_inference = inference time / step time).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest
from jax.flatten_util import ravel_pytree

from fold_jax import methods, nets, search, tasks, zo

SIGMA = 1e-2
PROFILE = {
    "quick": {"chunks": [None, 16], "memory_chunks": [8, 32], "scale_k": [8, 32, 128, 512],
              "scale_w": [16, 128, 1024], "forward_k": [1, 8], "es_k": [32, 128]},
    "full": {"chunks": [None, 8, 16, 32], "memory_chunks": [4, 8, 16, 32, 64],
             "scale_k": [8, 32, 128, 512], "scale_w": [16, 64, 128, 512, 1024],
             "forward_k": [1, 8, 32], "es_k": [32, 128, 512]},
}
CASES = {
    "chunk": "chunks", "memory_chunk": "memory_chunks", "scale_k": "scale_k",
    "scale_w": "scale_w", "forward_k": "forward_k", "es_k": "es_k",
}


def pytest_generate_tests(metafunc):
    profile = metafunc.config.getoption("--profile")
    for arg, entry in CASES.items():
        if arg in metafunc.fixturenames:
            metafunc.parametrize(arg, PROFILE[profile][entry])


@pytest.fixture(scope="module")
def digits():
    return tasks.get("digits")


def _setup(task, width=128, batch_size=256):
    net = nets.mlp((task.n_features, width, width, task.n_outputs), "relu")
    params = net.init(jax.random.key(0))
    idx = jnp.arange(batch_size) % task.n_train
    return net, params, task.x_train[idx], task.y_train[idx]


def _inference(net, params, x, copies):
    return net.apply, (params, jnp.tile(x, (copies, 1)))


def openai_es_reference(loss, num_directions: int, sigma: float):
    """One OpenAI-ES generation that materializes its population (ask / vmapped eval
    / tell), antithetic, same loss and evaluation count as zo.value_and_grad."""
    pairs = num_directions // 2

    def vg(params, key, *args):
        x, unravel = ravel_pytree(params)
        eps = jax.random.normal(key, (pairs, x.shape[0]), x.dtype)  # ask
        population = jnp.concatenate([x + sigma * eps, x - sigma * eps])
        values = jax.vmap(lambda z: loss(unravel(z), *args))(population)  # evaluate
        coef = (values[:pairs] - values[pairs:]) / (2 * sigma * pairs)  # tell
        return jnp.mean(values), unravel(coef @ eps)

    return vg


@pytest.mark.parametrize("fused", [True, "auto"])
def test_fused_lowrank(kernel_row, digits, chunk, fused):
    """Headline rows: rank-4 estimator, 128 directions, batch 256, through fold_jax's
    layers: fused=True forces x@W + s(x@A)B^T in every layer, "auto" lets each layer
    take its association by shape (perturb.matmul)."""
    net, params, x, y = _setup(digits)
    vg = zo.value_and_grad(digits.loss_fn(net.apply), num_directions=128, sigma=SIGMA,
                           rank=4, chunk_size=chunk, fused=fused)
    method = "zo_gaussian_fused" if fused is True else "zo_gaussian_fused_auto"
    kernel_row(bench="zo_fused_lowrank", fn=vg, args=(params, jax.random.key(0), x, y),
               method=method, n_params=nets.count_params(params), batch_size=256,
               num_directions=128, rank=4, chunk_size=chunk or 0,
               inference=_inference(net, params, x, 128))


def test_fused_lowrank_default_options(kernel_row, digits):
    """The rank-4 estimator with every other option at its default (chunk_size="auto":
    16 evaluations per chunk on CPU): the target is >= 0.95 of inference."""
    net, params, x, y = _setup(digits)
    vg = zo.value_and_grad(digits.loss_fn(net.apply), num_directions=128, sigma=SIGMA, rank=4)
    kernel_row(bench="zo_fused_lowrank", fn=vg, args=(params, jax.random.key(0), x, y),
               method="zo_gaussian_fused_default", n_params=nets.count_params(params),
               batch_size=256, num_directions=128, rank=4,
               chunk_size=vg.options.chunk_size or 0,
               inference=_inference(net, params, x, 128))


class _LinenMLP(nn.Module):
    """A user's own flax.linen MLP 64-128-128-10 from standard nn.Dense layers."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(128)(x))
        x = nn.relu(nn.Dense(128)(x))
        return nn.Dense(10)(x)


def test_flax_linen_mlp_on_the_fused_path(kernel_row, digits):
    """A standard nn.Dense MLP through fold_jax.flax_layers' interception vs the same net
    from fold_jax.nets, timed in alternating rounds: speedup_vs_baseline = fold_jax nets
    time / linen time (target >= 0.9). Rank 4, K = 128, batch 256, chunk 16."""
    net, params, x, y = _setup(digits)
    model = _LinenMLP()
    linen_params = model.init(jax.random.key(0), x[:1])["params"]

    def linen_loss(p, x, y):
        logits = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    options = dict(num_directions=128, sigma=SIGMA, rank=4, chunk_size=16)
    vg = zo.value_and_grad(linen_loss, **options)
    assert vg.describe(linen_params, x, y)["path"] == "fused"
    ours = zo.value_and_grad(digits.loss_fn(net.apply), **options)
    key = jax.random.key(0)
    kernel_row(bench="zo_fused_flax", fn=vg, args=(linen_params, key, x, y),
               method="zo_gaussian_fused_linen", n_params=nets.count_params(linen_params),
               batch_size=256, num_directions=128, rank=4, chunk_size=16,
               inference=_inference(net, params, x, 128),
               baseline=("zo_gaussian_fused_fold_jax_nets", ours, (params, key, x, y)))


@pytest.mark.parametrize("impl", ["zo_gaussian", "zo_gaussian_chunk32",
                                  "openai_es_materialized"])
def test_fullrank_vs_openai_es(kernel_row, digits, impl, es_k):
    """Full-rank gaussian estimator (noise regenerated from keys, all directions at once
    or 32 evaluations at a time) vs an ES generation holding its whole population; the
    zo rows time that generation in the same alternating rounds (speedup_vs_baseline)."""
    net, params, x, y = _setup(digits)
    loss = digits.loss_fn(net.apply)
    args = (params, jax.random.key(0), x, y)
    es = openai_es_reference(loss, es_k, SIGMA)
    chunk = 32 if impl.endswith("chunk32") else None
    if impl.startswith("zo_gaussian"):
        vg = zo.value_and_grad(loss, num_directions=es_k, sigma=SIGMA, chunk_size=chunk)
        baseline = ("openai_es_materialized", es, args)
    else:
        vg, baseline = es, None
    kernel_row(bench="zo_fullrank_vs_es", fn=vg, args=args, method=impl,
               n_params=nets.count_params(params), batch_size=256, num_directions=es_k,
               chunk_size=chunk or 0, inference=_inference(net, params, x, es_k),
               baseline=baseline)


@pytest.mark.parametrize("impl", ["zo_gaussian", "zo_gaussian_r4", "inference"])
def test_chunk_memory(kernel_row, digits, impl, memory_chunk):
    """Memory of a 128-direction estimator with chunk_size=c vs inference on c x batch
    (rows with method="inference" are that reference: compare mem_bytes)."""
    net, params, x, y = _setup(digits)
    loss = digits.loss_fn(net.apply)
    if impl == "inference":
        fn, args = _inference(net, params, x, memory_chunk)
    else:
        vg = zo.value_and_grad(loss, num_directions=128, sigma=SIGMA, chunk_size=memory_chunk,
                               rank=4 if impl.endswith("r4") else None)
        fn, args = vg, (params, jax.random.key(0), x, y)
    kernel_row(bench="zo_chunk_memory", fn=fn, args=args, method=impl,
               n_params=nets.count_params(params), batch_size=256, num_directions=128,
               chunk_size=memory_chunk, inference=_inference(net, params, x, memory_chunk))


@pytest.mark.parametrize("rank", [None, 4])
def test_scaling_directions(kernel_row, digits, rank, scale_k):
    net, params, x, y = _setup(digits, batch_size=64)
    vg = zo.value_and_grad(digits.loss_fn(net.apply), num_directions=scale_k, sigma=SIGMA,
                           rank=rank)
    kernel_row(bench="zo_scaling_directions", fn=vg, args=(params, jax.random.key(0), x, y),
               method="zo_gaussian" + ("_r4" if rank else ""),
               n_params=nets.count_params(params), batch_size=64, num_directions=scale_k,
               rank=rank, inference=_inference(net, params, x, scale_k))


@pytest.mark.parametrize("rank", [None, 4])
def test_scaling_params(kernel_row, digits, rank, scale_w):
    net, params, x, y = _setup(digits, width=scale_w, batch_size=64)
    vg = zo.value_and_grad(digits.loss_fn(net.apply), num_directions=32, sigma=SIGMA,
                           rank=rank, chunk_size=8)
    kernel_row(bench="zo_scaling_params", fn=vg, args=(params, jax.random.key(0), x, y),
               method="zo_gaussian" + ("_r4" if rank else ""),
               n_params=nets.count_params(params), batch_size=64, num_directions=32,
               rank=rank, width=scale_w, inference=_inference(net, params, x, 32))


@pytest.mark.parametrize("name", ["gld", "rso", "one_plus_one"])
def test_search_step(kernel_row, digits, name):
    net, params, x, y = _setup(digits)
    loss = digits.loss_fn(net.apply)
    method = {"gld": lambda: search.gld(loss, max_radius=1.0, min_radius=1e-3),
              "rso": lambda: search.rso(loss, num_candidates=16),
              "one_plus_one": lambda: search.one_plus_one(loss)}[name]()
    state = method.init(params)
    _, info = jax.eval_shape(method.step, state, jax.random.key(0), x, y)
    evals = int(jax.jit(method.step)(state, jax.random.key(0), x, y)[1]["evals"])
    del info
    kernel_row(bench="search_step", fn=method.step, args=(state, jax.random.key(1), x, y),
               method=name, n_params=nets.count_params(params), batch_size=256,
               num_directions=evals, inference=_inference(net, params, x, evals))


def test_forward_gradient(kernel_row, digits, forward_k):
    net, params, x, y = _setup(digits)
    method = methods.forward_gradient(digits.loss_fn(net.apply), optax.adam(1e-3),
                                      num_directions=forward_k)
    state = method.init(params)
    kernel_row(bench="forward_gradient_step", fn=method.step,
               args=(state, jax.random.key(1), x, y), method="forward_gradient",
               n_params=nets.count_params(params), batch_size=256, num_directions=forward_k,
               inference=_inference(net, params, x, forward_k))
