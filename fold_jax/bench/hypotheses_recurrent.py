"""The recurrent workloads of the hypotheses suite (:mod:`fold_jax.bench.hypotheses_work`):
the adding problem (Hochreiter & Schmidhuber 1997), trained by full or truncated BPTT, forward
gradient, zeroth-order or the (1+1)-ES (accuracy), and each method's compiled memory and step
time per sequence length T (cost).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fold_jax.bench import timing
from fold_jax.bench.hypotheses_protocol import fit_rows, row, settings, zo
from fold_jax.estimators import methods, search
from fold_jax.learn import heads, nets, tasks


def adding_task(T: int, n: int = 1200, seed: int = 0) -> tasks.Task:
    """The adding problem: x (n, T, 2) with a value channel U(0, 1) and a marker channel
    with one marker in each half of the sequence; y = the sum of the two marked values.
    Predicting the mean (1) gives R^2 = 0; solving it needs memory over the whole
    sequence.

    Args:
        T: sequence length (>= 2).
        n: sequences (split 70/10/20 train/val/test).
        seed: the data seed.

    Returns:
        A regression Task with x of shape (N, T, 2).
    """
    if not isinstance(T, int) or T < 2:
        raise ValueError(f"T={T!r} must be an int >= 2")
    rng = np.random.default_rng(seed)
    values = rng.uniform(size=(n, T)).astype(np.float32)
    first = rng.integers(0, T // 2, n)
    second = rng.integers(T // 2, T, n)
    marks = np.zeros((n, T), np.float32)
    marks[np.arange(n), first] = 1.0
    marks[np.arange(n), second] = 1.0
    x = np.stack([values, marks], -1)
    y = (values * marks).sum(1).astype(np.float32)
    n_test, n_val = n // 5, n // 10
    parts = np.split(np.arange(n), [n - n_test - n_val, n - n_test])
    arr = [(jnp.asarray(x[i]), jnp.asarray(y[i])) for i in parts]
    return tasks.Task(f"adding_T{T}", "regression", *arr[0], *arr[2],
                      x_val=arr[1][0], y_val=arr[1][1])


RNN_HIDDEN = 32


def recurrent_method(method: str, T: int, truncate: int, cell: str = "gru",
                     hp: Mapping[str, Any] | None = None
                     ) -> tuple[methods.Method, nets.RecurrentNet, dict]:
    """The recurrent workload's method, net and settings.

    Args:
        method: bptt, tbptt, forward_gradient, zo or one_plus_one.
        T: sequence length.
        truncate: k of truncated BPTT.
        cell: gru, lstm or simple.
        hp: tuned values (None: the defaults below).

    Returns:
        ``(method, net, hparams)``; the net's apply is the full (untruncated) forward.
    """
    net = nets.rnn(2, RNN_HIDDEN, 1, cell)
    trained = nets.rnn(2, RNN_HIDDEN, 1, cell, truncate=truncate) if method == "tbptt" else net
    head = heads.Head("regression")

    def loss(p, x, y):
        return head.loss(trained.apply(p, x), y)

    base: dict[str, Any] = dict(cell=cell, hidden=RNN_HIDDEN, T=T)
    if method in ("bptt", "tbptt"):
        h = settings(method, dict(optimizer="adam", lr=3e-3,
                                  truncate=truncate if method == "tbptt" else None), hp)
        m = methods.gradient(loss, "adam", h["lr"])
    elif method == "forward_gradient":
        h = settings(method, dict(optimizer="adam", lr=3e-3, directions=4), hp)
        m = methods.forward_gradient(loss, "adam", h["lr"], num_directions=4)
    elif method == "zo":
        h = settings(method, dict(optimizer="adam", lr=3e-3, directions=16, sigma=1e-3), hp)
        m = zo(loss, lr=h["lr"], directions=16, sigma=h["sigma"])
    elif method == "one_plus_one":
        h = settings(method, dict(sigma=0.01), hp)
        m = search.one_plus_one(loss, sigma=h["sigma"])
        h["acceptance"] = "reevaluate"
    else:
        raise ValueError(f"method={method!r} is not a recurrent-workload method")
    hp = {**base, **h}
    return m, net, hp


def recurrent_accuracy_run(method: str, T: int, truncate: int, seed: int, steps: int,
                           eval_every: int, cell: str = "gru",
                           hp: Mapping[str, Any] | None = None, eval_split: str = "test"
                           ) -> list[dict]:
    """One training run on the adding problem of length T (test R^2).

    Args:
        method: as :func:`recurrent_method`.
        T: sequence length.
        truncate: k of truncated BPTT.
        seed: init and batch seed (the data are fixed).
        steps: step budget.
        eval_every: steps between curve points.
        cell: the recurrent cell.
        hp: tuned values (None: the defaults of :func:`recurrent_method`).
        eval_split: "test" or "val" (a tuning trial).

    Returns:
        The rows (metric test_r2).
    """
    m, net, hp = recurrent_method(method, T, truncate, cell, hp)
    task = adding_task(T)
    ids = dict(claim="recurrent", workload="adding_accuracy", method=method,
               setting=f"{cell}/T{T}", seed=seed)
    return fit_rows(ids, m, net.init(jax.random.key(seed)), task, net.apply, steps=steps,
                    batch_size=64, eval_every=eval_every, hparams=hp, metric="r2",
                    eval_split=eval_split)


def recurrent_cost_rows(method: str, T: int, truncate: int, seeds: tuple[int, ...],
                        cell: str = "gru", batch: int = 64) -> list[dict]:
    """Compiled memory and median step time of one training step at length T.

    The step is ``method.step(state, key, x, y)`` on a batch of ``batch`` sequences,
    compiled ahead of time (:func:`fold_jax.bench.timing.aot`); memory is
    ``memory_analysis()`` argument + output + temp - alias bytes (and the temp bytes
    alone); time is the median over rounds (:func:`fold_jax.bench.timing.measure`) from each
    seed's initial params.

    Args:
        method: as :func:`recurrent_method`.
        T: sequence length.
        truncate: k of truncated BPTT.
        seeds: seeds whose params are timed.
        cell: the recurrent cell.
        batch: sequences per step.

    Returns:
        Rows per seed: temp_bytes, compile_s and step_s (the last), each with mem_bytes
        and step_s.
    """
    m, net, hp = recurrent_method(method, T, truncate, cell)
    task = adding_task(T, n=max(2 * batch, 200))
    x, y = task.x_train[:batch], task.y_train[:batch]
    state = m.init(net.init(jax.random.key(seeds[0])))
    key = jax.random.key(0)
    compiled, compile_s = timing.aot(m.step, state, key, x, y)
    mem = timing.mem_bytes(compiled)
    try:
        temp = float(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:
        temp = math.nan
    out = []
    for seed in seeds:
        s = m.init(net.init(jax.random.key(seed)))
        t = timing.measure(compiled, s, key, x, y, min_rounds=3, max_rounds=20,
                           max_time_s=0.15, warmup=1)
        ids = dict(claim="recurrent", workload="adding_memory", method=method,
                   setting=f"{cell}/T{T}", seed=seed)
        extra = dict(T=T, batch_size=batch, hparams=json.dumps(hp, sort_keys=True),
                     trial=-1, n_trials=0,
                     n_params=nets.count_params(s.params), compile_s=compile_s)
        common = dict(step=0, mem_bytes=mem, step_s=t.median_s, **extra)
        out += [row(**ids, metric="temp_bytes", value=temp, **common),
                row(**ids, metric="mem_bytes", value=mem, **common),
                row(**ids, metric="step_s", value=t.median_s, **common)]
    return out
