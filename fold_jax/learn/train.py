"""The one training loop: every method and variant trains through :func:`fit`.

``fit`` trains on a data :class:`~fold_jax.learn.tasks.Task` (any head kind, regression
included: ``apply(params, x)`` gives the outputs) or minimizes an
:class:`~fold_jax.learn.tasks.Objective` (a test function of the params with no data: the
method's step takes no data arguments and the history tracks the objective's
``value``) or maximizes the return of a control task (a
:class:`~fold_jax.learn.control.ControlTask`: each step gets a fresh key for its training
episodes, the history tracks the held-out ``return`` and ``env_steps``). Steps are
jitted and run in ``lax.scan`` chunks of ``eval_every`` steps; the chunk is compiled
ahead of time and, when the run has more than one chunk, run once to warm up (both
reported apart as compile time; the warm-up's result is discarded), and evaluation
between chunks is excluded from the training clock. Minibatches are drawn with
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

from fold_jax.checks import (
    check_bool,
    check_choice,
    check_finite,
    check_int,
    check_params,
    check_positive,
)
from fold_jax.estimators.methods import Method
from fold_jax.learn import programs
from fold_jax.learn.control import ControlTask
from fold_jax.learn.heads import higher_is_better
from fold_jax.learn.tasks import Objective, Task

__all__ = ["EVAL_SPLITS", "SKIPPED_WARN_FRACTION", "TrainResult", "fit", "kept_info"]

SKIPPED_WARN_FRACTION = 0.02  # fit warns when more than this share of its steps was skipped
_COUNTS = ("skipped", "accepted")  # per-step 0/1 counts of info that history sums per row


def kept_info(info: dict[str, Any]) -> dict[str, Array]:
    """The part of a step's ``info`` that :func:`fit` keeps for every step (the rest is
    dead code to XLA: a program timed apart from ``fit`` should output exactly this).

    Args:
        info: a Method step's info (``loss``, ``evals``, and maybe ``skipped`` /
            ``accepted``, among others).

    Returns:
        ``loss``, ``evals`` and whichever of ``skipped`` / ``accepted`` the step reports
        (int32).
    """
    return {"loss": info["loss"], "evals": info["evals"],
            **{k: jnp.asarray(info[k], jnp.int32) for k in _COUNTS if k in info}}


class TrainResult(NamedTuple):
    """What :func:`fit` returns: the final method state, the history (one row per
    evaluation), seconds spent compiling (off the training clock), whether the target
    was reached, the number of steps skipped over the whole run, and how many of the
    run's programs (training chunks and the evaluation) were lowered and compiled
    (``lowered``) or taken compiled from earlier fits (``reused``)."""

    state: Any
    history: pd.DataFrame
    compile_s: float
    reached: bool
    skipped: int = 0
    lowered: int = 0
    reused: int = 0


def _check(method, task, steps, budget_s, batch_size, eval_every, target_metric, apply,
           target=None, seed=0, progress=False):
    """The loop's arguments checked, numbers as Python values: ``(steps, budget_s,
    batch_size, eval_every, target, seed, target_metric)`` (target_metric resolved from
    None to the task's default)."""
    if not (hasattr(method, "init") and hasattr(method, "step")):
        raise TypeError(f"method must have init and step (a fold_jax Method), "
                        f"got {type(method).__name__}")
    if not isinstance(task, Task | Objective | ControlTask):
        raise TypeError(f"task must be a fold_jax.tasks.Task, Objective or "
                        f"fold_jax.control.ControlTask, got {type(task).__name__}")
    data = isinstance(task, Task)
    if data and apply is None:
        raise TypeError(f"apply is required for a Task ({task.name!r}): apply(params, x) -> "
                        f"outputs; only an Objective needs none")
    if data and not callable(apply):
        raise TypeError("apply must be callable: apply(params, x) -> logits")
    if not data and apply is not None:
        what = "Objective" if isinstance(task, Objective) else "ControlTask"
        raise ValueError(f"apply (a {type(apply).__name__}) was given with the {what} "
                         f"{task.name!r}, which has no data and evaluates params itself: "
                         f"leave apply=None")
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
    check_bool(progress, "progress")
    if steps is None and budget_s is None:
        raise ValueError("give steps=, budget_s= or both: the run needs a budget")
    batch_size = check_int(batch_size, "batch_size")
    if data and batch_size > task.n_train:
        raise ValueError(f"batch_size={batch_size} exceeds the {task.n_train} training "
                         f"examples of {task.name!r}; allowed: 1..{task.n_train}")
    eval_every = check_int(eval_every, "eval_every")
    control = isinstance(task, ControlTask)
    allowed = task.head.metric_names if data else ("return",) if control else ("value",)
    if target_metric is None:
        target_metric = allowed[0] if control else task.head.default_metric if data else "value"
    if target_metric not in allowed:
        what = (f"a {task.kind} task" if data else "a ControlTask" if control
                else "an Objective")
        raise ValueError(f"target_metric={target_metric!r}; allowed for {what}: "
                         f"{list(allowed)}")
    return steps, budget_s, batch_size, eval_every, target, seed, target_metric


def _check_objective_params(objective: Objective, params: PyTree) -> None:
    """ValueError naming params unless they are one finite floating array (dim,)."""
    if not isinstance(params, np.ndarray | jax.Array):
        raise ValueError(f"params must be one array of shape (dim,) = ({objective.dim},) for "
                         f"the Objective {objective.name!r} (its value is objective(params)), "
                         f"got {type(params).__name__}")
    if tuple(params.shape) != (objective.dim,):
        raise ValueError(f"params has shape {tuple(params.shape)}; the Objective "
                         f"{objective.name!r} needs ({objective.dim},)")


def _non_finite(a: Any) -> tuple[int, int]:
    """(non-finite entries, entries) of an array; integer and bool arrays have none.
    Counted in NumPy on the host: eager jnp ops would compile three XLA programs per
    array shape, on every fit with new shapes (seconds of a small run on a 2-core CPU)."""
    a = np.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.inexact):
        return 0, int(a.size)
    if a.dtype.itemsize < 4 and not jnp.issubdtype(a.dtype, jnp.complexfloating):
        a = a.astype(np.float32)  # bfloat16 / float16: exact in float32
    return int(np.count_nonzero(~np.isfinite(a))), int(a.size)


def _check_finite_inputs(task: Task | Objective, params: PyTree) -> None:
    """ValueError naming the first data array or params leaf holding NaN or inf."""
    arrays = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    for name in arrays if isinstance(task, Task) else ():
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
    task: Task | Objective,
    *,
    apply: Callable[[PyTree, Array], Array] | None = None,
    steps: int | None = None,
    budget_s: float | None = None,
    batch_size: int = 128,
    eval_every: int = 50,
    target: float | None = None,
    target_metric: str | None = None,
    threshold: float = 0.5,
    seed: int = 0,
    progress: bool = False,
    eval_split: str = "test",
    reuse_programs: bool = True,
) -> TrainResult:
    """Train ``params`` with ``method`` on ``task`` (a Task or an Objective).

    On a :class:`~fold_jax.learn.tasks.Task`, ``apply(params, x)`` gives the outputs (logits,
    or predicted values for regression) and each step is ``method.step(state, key, xb,
    yb)`` on a minibatch. On an :class:`~fold_jax.learn.tasks.Objective` there is no data:
    each step is ``method.step(state, key)`` (build the method on ``loss(params) =
    objective(params)``), ``params`` is one array of shape (dim,), and ``apply`` must be
    None (``batch_size`` and ``threshold`` are unused). On a
    :class:`~fold_jax.learn.control.ControlTask` each step is ``method.step(state, key,
    episode_key)`` (build the method on ``task.loss(params, episode_key)``, minus the
    mean return of the step's training episodes), ``episode_key`` drawn like a
    minibatch; ``apply`` must be None; the history has ``env_steps`` (``evals *
    task.env_steps_per_eval``), ``return`` and ``episode_length`` on the task's held-out
    episodes, and ``target_metric`` is "return" (rising to ``target``).

    Stops at ``steps``, after ``budget_s`` seconds of training time, or when the
    ``target_metric`` (on a Task's ``eval_split``; an Objective's value) reaches ``target``
    in its direction (:func:`fold_jax.learn.heads.higher_is_better`: accuracy, micro_f1 and
    r2 rise to it; loss, mse, rmse and value fall to it), whichever first. Counts
    (steps, batch_size, eval_every, seed) and numbers (budget_s, target) may be
    Python, NumPy or concrete JAX scalars.

    History rows (one per evaluation, step 0 included): step, evals, elapsed_s,
    batch_loss (mean over the chunk), then train_* and ``<eval_split>``_* (test_* by
    default) head metrics for a Task
    or ``value`` (the objective at the current params) for an Objective, ``skipped``
    (steps the method skipped since the previous row, ``info["skipped"]``: its estimate
    was not finite; 0 for methods that never skip) and, for methods that report
    ``info["accepted"]`` (direct search, bit-flip search), ``accepted`` (steps whose
    move was accepted since the previous row). Both are 0 on the step-0 row. Tuning
    passes ``eval_split="val"``, so the test split is never read while choosing
    hyperparameters (``val_*`` columns instead of ``test_*``).

    Args:
        method: a :class:`fold_jax.estimators.methods.Method`.
        params: the initial params (finite, floating point; for an Objective one array
            of shape (dim,)).
        task: the data (its arrays must be finite) or an Objective.
        apply: ``apply(params, x) -> outputs``; required for a Task (TypeError when
            missing), None for an Objective.
        steps: the most steps to run (None: only ``budget_s`` bounds the run).
        budget_s: the most seconds of training time (compilation and evaluation
            excluded).
        batch_size: minibatch size, drawn with replacement (the whole training split
            when equal to it).
        eval_every: steps between evaluations (one compiled ``lax.scan`` chunk).
        target: stop when ``target_metric`` reaches it.
        target_metric: one of the head's metrics (``task.head.metric_names``: "loss",
            "accuracy", "micro_f1" for multilabel; regression "loss", "mse", "rmse",
            "r2") or "value" for an Objective; None: "accuracy" (classification),
            "r2" (regression), "value" (Objective).
        threshold: decision threshold of binary and multilabel heads.
        seed: fixes minibatches and the method's keys.
        progress: show a tqdm progress bar.
        eval_split: the held-out split scored in the history and targeted: "test"
            (default) or "val" (tuning; the task must have a validation split). Unused
            for an Objective.
        reuse_programs: take compiled programs from earlier fits when they trace to
            the same program (:func:`fold_jax.learn.programs.compile`; results are
            bit-identical); False compiles every program afresh with ``jax.jit``.

    Returns:
        A :class:`TrainResult`; ``skipped`` is the run's total of skipped steps.

    Raises:
        TypeError: a method without init/step, a task that is neither Task nor
            Objective, a Task without ``apply``.
        ValueError: bad arguments (an ``apply`` beside an Objective, an unknown
            ``eval_split`` or "val" on a task without a validation split, Objective params
            not of shape (dim,)), or NaN/inf in the task's data or in ``params``
            (raised before anything compiles).

    Warns:
        RuntimeWarning: when more than ``SKIPPED_WARN_FRACTION`` (2%) of the run's steps
            were skipped.
    """
    steps, budget_s, batch_size, eval_every, target, seed, target_metric = _check(
        method, task, steps, budget_s, batch_size, eval_every, target_metric, apply, target,
        seed, progress)
    check_bool(reuse_programs, "reuse_programs")
    data = isinstance(task, Task)
    control = isinstance(task, ControlTask)
    check_params(params, "initialise them with net.init(key)" if data
                 else "initialise them with task.init(key)" if control
                 else "start from the objective's x0")
    arrays: tuple[Array, ...] = ()  # the step's data arguments (none for an Objective)
    n = 0
    if isinstance(task, Objective):
        _check_objective_params(task, params)
    elif data:
        arrays, n = (task.x_train, task.y_train), task.n_train
    _check_finite_inputs(task, params)
    reported: set[str] = set()  # which of _COUNTS the method's info holds
    held_out = _check_eval_split(eval_split, task) if data else None
    column = f"{eval_split}_{target_metric}" if data else target_metric
    higher = higher_is_better(target_metric)

    def chunk(state, keys, *xy):
        def one_step(state, key):
            batch_key, step_key = jax.random.split(key)
            if control:  # a control task's "minibatch": the key of the step's episodes
                batch = (batch_key,)
            elif not xy:
                batch = ()
            elif batch_size == n:
                batch = xy
            else:
                idx = jax.random.randint(batch_key, (batch_size,), 0, n)
                batch = tuple(a[idx] for a in xy)
            state, info = method.step(state, step_key, *batch)
            kept = kept_info(info)
            reported.update(k for k in _COUNTS if k in kept)  # static: recorded while tracing
            return state, kept

        return jax.lax.scan(one_step, state, keys)

    def evaluate(p):
        if control:
            return task.evaluate(p)
        if not data:
            return {"value": jnp.asarray(task(p), jnp.float32)}
        train = task.head.metrics(apply(p, task.x_train), task.y_train, threshold)
        held = task.head.metrics(apply(p, held_out[0]), held_out[1], threshold)
        return {**{f"train_{k}": v for k, v in train.items()},
                **{f"{eval_split}_{k}": v for k, v in held.items()}}

    built = {"lowered": 0, "reused": 0}

    def build(fun, *args):
        """The compiled program of fun(*args): from the cache or lowered now."""
        if not reuse_programs:
            built["lowered"] += 1
            return jax.jit(fun).lower(*args).compile()
        program = programs.compile(fun, *args)
        built["reused" if program.hit else "lowered"] += 1
        return program

    state = method.init(params)
    evaluate_program = build(evaluate, state.params)  # evaluation: off every clock
    base_key = jax.random.key(seed)
    compiled: dict[int, Any] = {}
    compile_s = 0.0
    rows: list[dict] = []
    counted: list[dict[str, int]] = []  # per row: skipped / accepted since the last row

    def record(step: int, evals: int, elapsed: float, batch_loss: float,
               counts: dict[str, int]) -> dict[str, float]:
        metrics = {k: float(v) for k, v in evaluate_program(state.params).items()}
        rows.append({"step": step, "evals": evals, "elapsed_s": elapsed,
                     **({"env_steps": evals * task.env_steps_per_eval} if control else {}),
                     "batch_loss": batch_loss, **metrics})
        counted.append(counts)
        return metrics

    step = evals = index = 0
    elapsed = 0.0
    reached = _hit(record(0, 0, 0.0, float("nan"), {}), target, column, higher)
    bar = _progress(steps, progress)
    while not reached:
        if (steps is not None and step >= steps) or (budget_s is not None and elapsed >= budget_s):
            break
        length = eval_every if steps is None else min(eval_every, steps - step)
        keys = jax.random.split(jax.random.fold_in(base_key, index), length)
        if length not in compiled:  # compile ahead of time, off the training clock
            t0 = time.perf_counter()
            compiled[length] = build(chunk, state, keys, *arrays)
            # one warm-up run, result discarded: a program's first execution pays one-off
            # costs (1-30 ms measured on a 2-core CPU, against 1-2 ms for the next chunks
            # of a small task) that would otherwise land on the first chunk's clock. A run
            # of one chunk skips it (it would double the work to save a few ms of seconds)
            if steps is None or length < steps:
                jax.block_until_ready(compiled[length](state, keys, *arrays))
            compile_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        state, out = compiled[length](state, keys, *arrays)
        jax.block_until_ready((state, out["loss"]))
        elapsed += time.perf_counter() - t0
        index += 1
        step += length
        evals += int(np.sum(np.asarray(out["evals"], dtype=np.int64)))
        counts = {k: int(np.sum(np.asarray(out[k], dtype=np.int64))) for k in _COUNTS
                  if k in out}
        metrics = record(step, evals, elapsed, float(np.mean(np.asarray(out["loss"]))), counts)
        reached = _hit(metrics, target, column, higher)
        if bar is not None:
            bar.update(length)
            bar.set_postfix({column: f"{metrics[column]:.4f}"})
    if bar is not None:
        bar.close()
    if not compiled:  # nothing ran (target met at step 0): ask the step what it reports
        batch = (jax.random.key(0),) if control else tuple(a[:batch_size] for a in arrays)
        _, info = jax.eval_shape(method.step, state, jax.random.key(0), *batch)
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
    return TrainResult(state, pd.DataFrame(rows), compile_s, reached, skipped,
                       built["lowered"], built["reused"])


EVAL_SPLITS = ("test", "val")


def _check_eval_split(eval_split: str, task: Task) -> tuple[Array, Array]:
    """The (x, y) arrays of ``eval_split`` of ``task``; ValueError naming eval_split
    unless it is "test" or "val" and the task has that split."""
    check_choice(eval_split, "eval_split", EVAL_SPLITS)
    if eval_split == "val" and task.x_val is None:
        raise ValueError(f"eval_split='val' but task {task.name!r} has no validation split "
                         f"(build it with tasks.from_arrays(..., val_fraction > 0))")
    return task.split(eval_split)


def _hit(metrics: dict[str, float], target: float | None, column: str, higher: bool) -> bool:
    """Whether ``metrics[column]`` reached ``target`` in its direction (NaN never does)."""
    if target is None:
        return False
    value = metrics[column]
    return value >= target if higher else value <= target


def _progress(steps: int | None, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps, unit="step", leave=False)
