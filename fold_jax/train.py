"""The one training loop: every method and variant trains through :func:`fit`.

Steps are jitted and run in ``lax.scan`` chunks of ``eval_every`` steps; the chunk
is compiled ahead of time (compile time reported apart), and evaluation between
chunks is excluded from the training clock. Minibatches are drawn with
replacement from the training split, keyed by the seed, so a seed fixes the run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import pandas as pd
from jaxtyping import Array, PyTree

from fold_jax.checks import check_int, check_params
from fold_jax.methods import Method
from fold_jax.tasks import Task

__all__ = ["TrainResult", "fit"]


class TrainResult(NamedTuple):
    state: Any
    history: pd.DataFrame
    compile_s: float
    reached: bool


def _check(method, task, steps, budget_s, batch_size, eval_every, target_metric, apply,
           target=None, seed=0, progress=False):
    if not (hasattr(method, "init") and hasattr(method, "step")):
        raise TypeError(f"method must have init and step (a fold_jax Method), "
                        f"got {type(method).__name__}")
    if not isinstance(task, Task):
        raise TypeError(f"task must be a fold_jax.tasks.Task, got {type(task).__name__}")
    if not callable(apply):
        raise TypeError("apply must be callable: apply(params, x) -> logits")
    check_int(steps, "steps", allow_none=True, allow_numpy=True)
    if budget_s is not None and (
        isinstance(budget_s, bool) or not isinstance(budget_s, int | float) or not budget_s > 0
        or not math.isfinite(budget_s)
    ):
        raise ValueError(f"budget_s={budget_s!r} must be a positive finite number of seconds")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed={seed!r} must be an int (the run's PRNG seed)")
    if target is not None and (isinstance(target, bool) or not isinstance(target, int | float)
                               or not math.isfinite(target)):
        raise ValueError(f"target={target!r} must be a finite number or None")
    if not isinstance(progress, bool):
        raise TypeError(f"progress={progress!r} must be True or False")
    if steps is None and budget_s is None:
        raise ValueError("give steps=, budget_s= or both: the run needs a budget")
    check_int(batch_size, "batch_size", allow_numpy=True)
    if batch_size > task.n_train:
        raise ValueError(f"batch_size={batch_size} exceeds the {task.n_train} training "
                         f"examples of {task.name!r}; allowed: 1..{task.n_train}")
    check_int(eval_every, "eval_every", allow_numpy=True)
    allowed = ("loss", "accuracy", "micro_f1") if task.kind == "multilabel" else ("loss",
                                                                                  "accuracy")
    if target_metric not in allowed:
        raise ValueError(f"target_metric={target_metric!r}; allowed for a {task.kind} task: "
                         f"{list(allowed)}")


def fit(
    method: Method,
    params: PyTree,
    task: Task,
    *,
    apply: Callable[[PyTree, Array], Array],
    steps: int | None = None,
    budget_s: float | None = None,
    batch_size: int = 128,
    eval_every: int = 50,
    target: float | None = None,
    target_metric: str = "accuracy",
    threshold: float = 0.5,
    seed: int = 0,
    progress: bool = False,
) -> TrainResult:
    """Train ``params`` with ``method`` on ``task``; ``apply(params, x)`` gives logits.

    Stops at ``steps``, after ``budget_s`` seconds of training time, or when the
    test ``target_metric`` reaches ``target`` (loss: falls to it), whichever first.
    History rows (one per evaluation, step 0 included): step, evals, elapsed_s,
    batch_loss (mean over the chunk), train_* and test_* head metrics.
    """
    _check(method, task, steps, budget_s, batch_size, eval_every, target_metric, apply,
           target, seed, progress)
    check_params(params, "initialise them with net.init(key)")
    x, y = task.x_train, task.y_train
    n = task.n_train
    head = task.head

    def chunk(state, keys, xs, ys):
        def one_step(state, key):
            batch_key, step_key = jax.random.split(key)
            if batch_size == n:
                xb, yb = xs, ys
            else:
                idx = jax.random.randint(batch_key, (batch_size,), 0, n)
                xb, yb = xs[idx], ys[idx]
            state, info = method.step(state, step_key, xb, yb)
            return state, (info["loss"], info["evals"])

        return jax.lax.scan(one_step, state, keys)

    @jax.jit
    def evaluate(p):
        train = head.metrics(apply(p, task.x_train), task.y_train, threshold)
        test = head.metrics(apply(p, task.x_test), task.y_test, threshold)
        return {**{f"train_{k}": v for k, v in train.items()},
                **{f"test_{k}": v for k, v in test.items()}}

    state = method.init(params)
    base_key = jax.random.key(seed)
    compiled: dict[int, Any] = {}
    compile_s = 0.0
    rows: list[dict] = []

    def record(step: int, evals: int, elapsed: float, batch_loss: float) -> dict[str, float]:
        metrics = {k: float(v) for k, v in evaluate(state.params).items()}
        rows.append({"step": step, "evals": evals, "elapsed_s": elapsed,
                     "batch_loss": batch_loss, **metrics})
        return metrics

    step = evals = index = 0
    elapsed = 0.0
    reached = _hit(record(0, 0, 0.0, float("nan")), target, target_metric)
    bar = _progress(steps, progress)
    while not reached:
        if (steps is not None and step >= steps) or (budget_s is not None and elapsed >= budget_s):
            break
        length = eval_every if steps is None else min(eval_every, steps - step)
        keys = jax.random.split(jax.random.fold_in(base_key, index), length)
        if length not in compiled:  # compile ahead of time, off the training clock
            t0 = time.perf_counter()
            compiled[length] = jax.jit(chunk).lower(state, keys, x, y).compile()
            compile_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        state, (losses, step_evals) = compiled[length](state, keys, x, y)
        jax.block_until_ready((state, losses))
        elapsed += time.perf_counter() - t0
        index += 1
        step += length
        evals += int(np.sum(np.asarray(step_evals, dtype=np.int64)))
        metrics = record(step, evals, elapsed, float(np.mean(np.asarray(losses))))
        reached = _hit(metrics, target, target_metric)
        if bar is not None:
            bar.update(length)
            bar.set_postfix(test=f"{metrics['test_' + target_metric]:.4f}")
    if bar is not None:
        bar.close()
    return TrainResult(state, pd.DataFrame(rows), compile_s, reached)


def _hit(metrics: dict[str, float], target: float | None, target_metric: str) -> bool:
    if target is None:
        return False
    value = metrics[f"test_{target_metric}"]
    return value <= target if target_metric == "loss" else value >= target


def _progress(steps: int | None, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps, unit="step", leave=False)
