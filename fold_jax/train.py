"""The one training loop: every method and variant trains through :func:`fit`.

Steps are jitted and run in ``lax.scan`` chunks of ``eval_every`` steps; the chunk
is compiled ahead of time (compile time reported apart), and evaluation between
chunks is excluded from the training clock. Minibatches are drawn with
replacement from the training split, keyed by the seed, so a seed fixes the run.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from jaxtyping import Array, PyTree

from fold_jax.checks import check_finite, check_int, check_params, check_positive
from fold_jax.methods import Method
from fold_jax.tasks import Task

__all__ = ["SKIPPED_WARN_FRACTION", "TrainResult", "fit"]

SKIPPED_WARN_FRACTION = 0.02  # fit warns when more than this share of its steps was skipped
_COUNTS = ("skipped", "accepted")  # per-step 0/1 counts of info that history sums per row


class TrainResult(NamedTuple):
    """What :func:`fit` returns: the final method state, the history (one row per
    evaluation), seconds spent compiling (off the training clock), whether the target
    was reached, and the number of steps skipped over the whole run."""

    state: Any
    history: pd.DataFrame
    compile_s: float
    reached: bool
    skipped: int = 0


def _check(method, task, steps, budget_s, batch_size, eval_every, target_metric, apply,
           target=None, seed=0, progress=False):
    """The loop's arguments checked, numbers as Python values: ``(steps, budget_s,
    batch_size, eval_every, target, seed)``."""
    if not (hasattr(method, "init") and hasattr(method, "step")):
        raise TypeError(f"method must have init and step (a fold_jax Method), "
                        f"got {type(method).__name__}")
    if not isinstance(task, Task):
        raise TypeError(f"task must be a fold_jax.tasks.Task, got {type(task).__name__}")
    if not callable(apply):
        raise TypeError("apply must be callable: apply(params, x) -> logits")
    steps = check_int(steps, "steps", allow_none=True)
    if budget_s is not None:
        try:
            budget_s = check_positive(budget_s, "budget_s")
        except ValueError:
            raise ValueError(f"budget_s={budget_s!r} must be a positive finite number of "
                             f"seconds") from None
    try:
        seed = check_int(seed, "seed", minimum=-(2**63))
    except ValueError:
        raise TypeError(f"seed={seed!r} must be an int (the run's PRNG seed)") from None
    if target is not None:
        try:
            target = check_finite(target, "target")
        except ValueError:
            raise ValueError(f"target={target!r} must be a finite number or None") from None
    if not isinstance(progress, bool):
        raise TypeError(f"progress={progress!r} must be True or False")
    if steps is None and budget_s is None:
        raise ValueError("give steps=, budget_s= or both: the run needs a budget")
    batch_size = check_int(batch_size, "batch_size")
    if batch_size > task.n_train:
        raise ValueError(f"batch_size={batch_size} exceeds the {task.n_train} training "
                         f"examples of {task.name!r}; allowed: 1..{task.n_train}")
    eval_every = check_int(eval_every, "eval_every")
    allowed = ("loss", "accuracy", "micro_f1") if task.kind == "multilabel" else ("loss",
                                                                                  "accuracy")
    if target_metric not in allowed:
        raise ValueError(f"target_metric={target_metric!r}; allowed for a {task.kind} task: "
                         f"{list(allowed)}")
    return steps, budget_s, batch_size, eval_every, target, seed


def _non_finite(a: Any) -> tuple[int, int]:
    """(non-finite entries, entries) of an array; integer and bool arrays have none."""
    a = jnp.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.inexact):
        return 0, int(a.size)
    return int(jnp.count_nonzero(~jnp.isfinite(a))), int(a.size)


def _check_finite_inputs(task: Task, params: PyTree) -> None:
    """ValueError naming the first data array or params leaf holding NaN or inf."""
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        array = getattr(task, name, None)
        if array is None:
            continue
        bad, size = _non_finite(array)
        if bad:
            raise ValueError(f"task.{name} of {task.name!r} has {bad} non-finite entries "
                             f"(NaN or inf) out of {size}: fit needs finite data (clean or "
                             f"impute them before building the Task)")
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        bad, size = _non_finite(leaf)
        if bad:
            raise ValueError(f"params{jax.tree_util.keystr(path)} has {bad} non-finite "
                             f"entries (NaN or inf) out of {size}: fit needs finite initial "
                             f"params")


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
    Counts (steps, batch_size, eval_every, seed) and numbers (budget_s, target) may be
    Python, NumPy or concrete JAX scalars.

    History rows (one per evaluation, step 0 included): step, evals, elapsed_s,
    batch_loss (mean over the chunk), train_* and test_* head metrics, ``skipped``
    (steps the method skipped since the previous row, ``info["skipped"]``: its estimate
    was not finite; 0 for methods that never skip) and, for methods that report
    ``info["accepted"]`` (direct search, bit-flip search), ``accepted`` (steps whose
    move was accepted since the previous row). Both are 0 on the step-0 row.

    Args:
        method: a :class:`fold_jax.methods.Method`.
        params: the initial params (finite, floating point).
        task: the data; its arrays must be finite.
        apply: ``apply(params, x) -> logits``.
        steps: the most steps to run (None: only ``budget_s`` bounds the run).
        budget_s: the most seconds of training time (compilation and evaluation
            excluded).
        batch_size: minibatch size, drawn with replacement (the whole training split
            when equal to it).
        eval_every: steps between evaluations (one compiled ``lax.scan`` chunk).
        target: stop when the test ``target_metric`` reaches it.
        target_metric: "loss", "accuracy" (or "micro_f1" for multilabel tasks).
        threshold: decision threshold of binary and multilabel heads.
        seed: fixes minibatches and the method's keys.
        progress: show a tqdm progress bar.

    Returns:
        A :class:`TrainResult`; ``skipped`` is the run's total of skipped steps.

    Raises:
        ValueError: bad arguments, or NaN/inf in the task's data or in ``params``
            (raised before anything compiles).

    Warns:
        RuntimeWarning: when more than ``SKIPPED_WARN_FRACTION`` (2%) of the run's steps
            were skipped.
    """
    steps, budget_s, batch_size, eval_every, target, seed = _check(
        method, task, steps, budget_s, batch_size, eval_every, target_metric, apply, target,
        seed, progress)
    check_params(params, "initialise them with net.init(key)")
    _check_finite_inputs(task, params)
    x, y = task.x_train, task.y_train
    n = task.n_train
    head = task.head
    reported: set[str] = set()  # which of _COUNTS the method's info holds

    def chunk(state, keys, xs, ys):
        def one_step(state, key):
            batch_key, step_key = jax.random.split(key)
            if batch_size == n:
                xb, yb = xs, ys
            else:
                idx = jax.random.randint(batch_key, (batch_size,), 0, n)
                xb, yb = xs[idx], ys[idx]
            state, info = method.step(state, step_key, xb, yb)
            counts = {k: jnp.asarray(info[k], jnp.int32) for k in _COUNTS if k in info}
            reported.update(counts)  # static: recorded while tracing
            return state, {"loss": info["loss"], "evals": info["evals"], **counts}

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
    counted: list[dict[str, int]] = []  # per row: skipped / accepted since the last row

    def record(step: int, evals: int, elapsed: float, batch_loss: float,
               counts: dict[str, int]) -> dict[str, float]:
        metrics = {k: float(v) for k, v in evaluate(state.params).items()}
        rows.append({"step": step, "evals": evals, "elapsed_s": elapsed,
                     "batch_loss": batch_loss, **metrics})
        counted.append(counts)
        return metrics

    step = evals = index = 0
    elapsed = 0.0
    reached = _hit(record(0, 0, 0.0, float("nan"), {}), target, target_metric)
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
        state, out = compiled[length](state, keys, x, y)
        jax.block_until_ready((state, out["loss"]))
        elapsed += time.perf_counter() - t0
        index += 1
        step += length
        evals += int(np.sum(np.asarray(out["evals"], dtype=np.int64)))
        counts = {k: int(np.sum(np.asarray(out[k], dtype=np.int64))) for k in _COUNTS
                  if k in out}
        metrics = record(step, evals, elapsed, float(np.mean(np.asarray(out["loss"]))), counts)
        reached = _hit(metrics, target, target_metric)
        if bar is not None:
            bar.update(length)
            bar.set_postfix(test=f"{metrics['test_' + target_metric]:.4f}")
    if bar is not None:
        bar.close()
    if not compiled:  # nothing ran (target met at step 0): ask the step what it reports
        _, info = jax.eval_shape(method.step, state, jax.random.key(0), x[:batch_size],
                                 y[:batch_size])
        reported.update(k for k in _COUNTS if k in info)
    columns = ["skipped", *(k for k in _COUNTS if k != "skipped" and k in reported)]
    for row, counts in zip(rows, counted, strict=True):
        row.update({k: counts.get(k, 0) for k in columns})
    skipped = sum(counts.get("skipped", 0) for counts in counted)
    if step and skipped > SKIPPED_WARN_FRACTION * step:
        warnings.warn(
            f"{skipped} of {step} steps ({100 * skipped / step:.1f}%) were skipped: the "
            f"method's loss or update estimate was not finite (NaN/inf), so those steps did "
            f"not train and the run did less work than its step count says (check the loss "
            f"for overflow, log(0) or 0/0, or lower the learning rate / sigma; "
            f"history['skipped'] says when)",
            RuntimeWarning, stacklevel=2)
    return TrainResult(state, pd.DataFrame(rows), compile_s, reached, skipped)



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
