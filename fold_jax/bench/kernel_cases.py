"""What the kernel micro-benchmarks build (:mod:`fold_jax.bench.suites.kernels`): one
:class:`Case` per kernel, the compiled function and its arguments with the reference it is
timed against (inference on num_directions x batch examples, or the dense matmul) and an
optional baseline. The setups (the digits MLP, its inference copies, an OpenAI-ES
generation that materializes its population) and the case builders live here; the
configurations, the timing and the jobs stay in the suite.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fold_jax.learn import recipes

__all__ = ["SHAPES", "SIGMA", "Case", "bcsr_case", "chunk_memory_case", "core_case",
           "flax_case", "forward_gradient_case", "fullrank_vs_es_case", "fused_case",
           "openai_es_reference", "scaling_case", "search_case", "search_evals", "xnor_case"]

SIGMA = 1e-2  # the perturbation scale of every zeroth-order kernel
SHAPES = [(256, 1024, 1024), (256, 4096, 4096)]  # the matmuls' M x K x N


class Case(NamedTuple):
    """What :func:`measure` times: ``fn(*args)`` against ``reference``.

    ``reference``: ``("inference" | "dense", fn, args)``; ``baseline``: ``(name, fn,
    args)`` timed in the same rounds; ``evals``: examples evaluated per call (None:
    num_directions x batch_size); ``extra``: measured columns of the row (e.g.
    weight_bytes); ``actual``: configuration values known only once built, checked
    against the kernel's key.
    """

    fn: Callable
    args: tuple
    reference: tuple[str, Callable, tuple] | None = None
    baseline: tuple[str, Callable, tuple] | None = None
    evals: float | None = None
    extra: dict[str, Any] | None = None
    actual: dict[str, Any] | None = None


# ----------------------------------------------------------------------------- setups


@functools.cache


def _digits():
    from fold_jax.learn import tasks

    return tasks.get("digits")


def _setup(width: int = 128, batch_size: int = 256):
    from fold_jax.learn import nets

    task = _digits()
    net = nets.mlp((task.n_features, width, width, task.n_outputs), "relu")
    params = net.init(jax.random.key(0))
    idx = jnp.arange(batch_size) % task.n_train
    return task, net, params, task.x_train[idx], task.y_train[idx]


def _inference(net, params, x, copies: int) -> tuple[str, Callable, tuple]:
    return "inference", net.apply, (params, jnp.tile(x, (copies, 1)))


def _n(params) -> int:
    from fold_jax.learn import nets

    return nets.count_params(params)


def openai_es_reference(loss: Callable, num_directions: int, sigma: float) -> Callable:
    """One OpenAI-ES generation that materializes its population (ask / vmapped eval /
    tell), antithetic, same loss and evaluation count as zo.value_and_grad.

    Args:
        loss: ``loss(params, *args) -> scalar``.
        num_directions: evaluations (an even number).
        sigma: the perturbation scale.

    Returns:
        ``vg(params, key, *args) -> (mean value, gradient estimate)``.
    """
    from jax.flatten_util import ravel_pytree

    pairs = num_directions // 2

    def vg(params, key, *args):
        x, unravel = ravel_pytree(params)
        eps = jax.random.normal(key, (pairs, x.shape[0]), x.dtype)  # ask
        population = jnp.concatenate([x + sigma * eps, x - sigma * eps])
        values = jax.vmap(lambda z: loss(unravel(z), *args))(population)  # evaluate
        coef = (values[:pairs] - values[pairs:]) / (2 * sigma * pairs)  # tell
        return jnp.mean(values), unravel(coef @ eps)

    return vg


def core_case(bench: str, width: int, batch_size: int) -> Case:
    """The forward pass or an Adam (backprop) step of the digits MLP 64-w-w-10, against
    inference on the same batch.

    Args:
        bench: "forward" or "gradient_step".
        width: hidden width w.
        batch_size: examples per call.

    Returns:
        The :class:`Case`.
    """
    task, net, params, x, y = _setup(width, batch_size)
    ref = ("inference", net.apply, (params, x))
    if bench == "forward":
        return Case(net.apply, (params, x), ref, actual={"n_params": _n(params)})
    method = recipes.build("adam", task.loss_fn(net.apply), {"learning_rate": 1e-3})
    return Case(method.step, (method.init(params), jax.random.key(1), x, y), ref,
                actual={"n_params": _n(params)})


def fused_case(fused: bool | str, chunk: int | str | None) -> Case:
    """The rank-4 estimator (K = 128 directions, batch 256) on fold_jax's layers,
    against inference on 128 x 256 examples.

    Args:
        fused: ``zo.value_and_grad``'s ``fused`` (True or "auto").
        chunk: its ``chunk_size`` (None: one chunk; "auto").

    Returns:
        The :class:`Case` (``actual``: the evaluations per chunk it runs).
    """
    from fold_jax.estimators import zo

    task, net, params, x, y = _setup()
    vg = zo.value_and_grad(task.loss_fn(net.apply), num_directions=128, sigma=SIGMA, rank=4,
                           chunk_size=chunk, fused=fused)
    return Case(vg, (params, jax.random.key(0), x, y), _inference(net, params, x, 128),
                actual={"chunk_size": vg.options.per_chunk * vg.options.signs})


def flax_case() -> Case:
    """A user's flax.linen MLP on the fused path (rank 4, K = 128, 16 a chunk), against
    inference, with the same estimator on fold_jax.learn.nets' MLP as the baseline.

    Returns:
        The :class:`Case` (RuntimeError when the linen MLP misses the fused path).
    """
    import flax.linen as nn
    import optax

    from fold_jax.estimators import zo

    class LinenMLP(nn.Module):
        """A user's own flax.linen MLP 64-128-128-10 from standard nn.Dense layers."""

        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Dense(128)(x))
            x = nn.relu(nn.Dense(128)(x))
            return nn.Dense(10)(x)

    task, net, params, x, y = _setup()
    model = LinenMLP()
    linen_params = model.init(jax.random.key(0), x[:1])["params"]

    def linen_loss(p, x, y):
        logits = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    options = dict(num_directions=128, sigma=SIGMA, rank=4, chunk_size=16)
    vg = zo.value_and_grad(linen_loss, **options)
    if vg.describe(linen_params, x, y)["path"] != "fused":
        raise RuntimeError("the linen MLP does not reach the fused path")
    ours = zo.value_and_grad(task.loss_fn(net.apply), **options)
    key = jax.random.key(0)
    return Case(vg, (linen_params, key, x, y), _inference(net, params, x, 128),
                ("zo_gaussian_fused_fold_jax_nets", ours, (params, key, x, y)),
                actual={"n_params": _n(linen_params)})


def fullrank_vs_es_case(impl: str, k: int) -> Case:
    """The full-rank estimator (one chunk or 32 a chunk) or an OpenAI-ES
    generation that materializes its population, K directions each; the estimator has the
    ES generation as its baseline.

    Args:
        impl: "zo_gaussian", "zo_gaussian_chunk32" or "openai_es_materialized".
        k: directions.

    Returns:
        The :class:`Case`.
    """
    from fold_jax.estimators import zo

    task, net, params, x, y = _setup()
    loss = task.loss_fn(net.apply)
    args = (params, jax.random.key(0), x, y)
    es = openai_es_reference(loss, k, SIGMA)
    ref = _inference(net, params, x, k)
    if impl == "openai_es_materialized":
        return Case(es, args, ref)
    chunk = 32 if impl.endswith("chunk32") else None
    vg = zo.value_and_grad(loss, num_directions=k, sigma=SIGMA, chunk_size=chunk)
    return Case(vg, args, ref, ("openai_es_materialized", es, args))


def chunk_memory_case(impl: str, chunk: int) -> Case:
    """A K = 128 estimator run ``chunk`` directions at a time (full rank or
    rank 4), or inference on ``chunk`` x batch examples: what the memory comparison compiles.

    Args:
        impl: "zo_gaussian", "zo_gaussian_r4" or "inference".
        chunk: directions per chunk.

    Returns:
        The :class:`Case`.
    """
    from fold_jax.estimators import zo

    task, net, params, x, y = _setup()
    ref = _inference(net, params, x, chunk)
    if impl == "inference":
        return Case(ref[1], ref[2], ref)
    vg = zo.value_and_grad(task.loss_fn(net.apply), num_directions=128, sigma=SIGMA,
                           chunk_size=chunk, rank=4 if impl.endswith("r4") else None)
    return Case(vg, (params, jax.random.key(0), x, y), ref)


def scaling_case(k: int, width: int, rank: int | None, chunk: int | str | None) -> Case:
    """The estimator at K directions on the MLP of hidden width ``width`` (batch 64),
    against inference on K x 64 examples.

    Args:
        k: directions.
        width: hidden width.
        rank: perturbation rank (None: full rank).
        chunk: ``chunk_size``.

    Returns:
        The :class:`Case` (``actual``: its parameters and evaluations per chunk).
    """
    from fold_jax.estimators import zo

    task, net, params, x, y = _setup(width=width, batch_size=64)
    vg = zo.value_and_grad(task.loss_fn(net.apply), num_directions=k, sigma=SIGMA, rank=rank,
                           chunk_size=chunk)
    return Case(vg, (params, jax.random.key(0), x, y), _inference(net, params, x, k),
                actual={"n_params": _n(params),
                        "chunk_size": vg.options.per_chunk * vg.options.signs})


def _search_method(name: str, loss: Callable):
    """The search recipe ``name`` with its registry defaults (as the races run it)."""
    return recipes.build(name, loss)


@functools.cache


def search_evals(name: str) -> int:
    """Loss evaluations one step of search method ``name`` makes on the bench's setup
    (its num_directions; one compiled step, cached).

    Args:
        name: gld, rso or one_plus_one.

    Returns:
        The evaluations per step.
    """
    task, net, params, x, y = _setup()
    method = _search_method(name, task.loss_fn(net.apply))
    return int(jax.jit(method.step)(method.init(params), jax.random.key(0), x, y)[1]["evals"])


def search_case(name: str) -> Case:
    """One step of the search recipe ``name`` (registry defaults, as the races run
    it), against inference on as many evaluations as the step makes.

    Args:
        name: gld, rso or one_plus_one.

    Returns:
        The :class:`Case`.
    """
    task, net, params, x, y = _setup()
    method = _search_method(name, task.loss_fn(net.apply))
    evals = search_evals(name)
    return Case(method.step, (method.init(params), jax.random.key(1), x, y),
                _inference(net, params, x, evals))


def forward_gradient_case(k: int) -> Case:
    """One forward-gradient (JVP) step with Adam, k directions, against
    inference on k x batch examples.

    Args:
        k: directions.

    Returns:
        The :class:`Case`.
    """
    import optax

    from fold_jax.estimators import methods

    task, net, params, x, y = _setup()
    method = methods.forward_gradient(task.loss_fn(net.apply), optax.adam(1e-3),
                                      num_directions=k)
    return Case(method.step, (method.init(params), jax.random.key(1), x, y),
                _inference(net, params, x, k))


def _operands(m: int, k: int, n: int):
    kx, kw = jax.random.split(jax.random.key(0))
    return (jax.random.normal(kx, (m, k), jnp.float32),
            jax.random.normal(kw, (k, n), jnp.float32))


def _matmul(x, w):
    return x @ w


def xnor_case(shape: tuple[int, int, int], word_bits: int) -> Case:
    """The packed 1-bit XNOR-popcount matmul of an M x K by K x N product, against the
    float32 dense matmul of the same shape.

    Args:
        shape: (M, K, N).
        word_bits: bits per packed word (32 or 64).

    Returns:
        The :class:`Case` (``extra``: the packed weight's bytes).
    """
    from fold_jax.compress import binary

    m, k, n = shape
    x, w = _operands(m, k, n)
    a = binary.pack(x, word_bits=word_bits)
    b = binary.pack(w, axis=0, word_bits=word_bits)
    return Case(lambda a, b: binary.xnor_matmul(a, b, k), (a, b), ("dense", _matmul, (x, w)),
                extra={"weight_bytes": int(b.nbytes)})


def bcsr_case(sparsity: float, layout: str) -> Case:
    """The BCSR sparse matmul of the first of ``SHAPES`` at a random mask, against
    the dense matmul of the masked weight.

    Args:
        sparsity: fraction of zero weights.
        layout: "feature_major" (W^T X^T) or "row_major" (X W).

    Returns:
        The :class:`Case` (``actual``: the nonzero weights).
    """
    from fold_jax.compress import prune

    m, k, n = SHAPES[0]
    x, w = _operands(m, k, n)
    w = prune.apply_mask({"w": w}, prune.random_mask(jax.random.key(1), {"w": w}, sparsity))["w"]
    wt = prune.to_bcsr(w)
    fn, args = ((prune.sparse_matmul_t, (wt, x.T)) if layout == "feature_major"
                else (prune.sparse_matmul, (x, wt)))
    return Case(fn, args, ("dense", _matmul, (x, w)),
                actual={"n_params": int(np.count_nonzero(np.asarray(w)))})
