"""Workloads of the hypotheses suite (fold_jax/bench/suites/hypotheses.py): the essays' claims about
forward-only training, each put where gradients are said to fail.

Every training run goes through :func:`fold_jax.train.fit` with a fixed step budget
(stated in the rows: ``steps``, ``evals``). Every method is tuned by the suites' one
protocol (:func:`tune`, :mod:`fold_jax.bench.tuning`): ``n_trials`` settings drawn from
its recipe ``"hypotheses/<method>"`` (:func:`space`, :func:`fold_jax.recipes.trials`),
each trained on its own seed (``TUNING_SEED + i``)
and scored by its final metric on the **validation** split; the best reruns on every
seed, which alone read the test split. A run returns long rows: the final metrics
(``step`` = the budget), the learning curve (``metric`` = ``curve_<name>``, one row per
evaluation, ``step`` and ``evals`` where it was taken), and one ``trial_val_<name>`` row
per trial.

Workloads (``claim`` / ``workload``):

- depth / mlp_depth: digits, MLPs of ``depth`` hidden layers (width ``WIDTH``) with
  sigmoid / tanh / relu; Adam, isotropic zeroth-order (Adam on the estimate),
  zeroth-order with per-layer scaled perturbations (``zo_layer_scaled``), GLD, (1+1)-ES,
  RSO and the essay's fixed-radius search.
- recurrent / adding_accuracy: the adding problem (Hochreiter & Schmidhuber 1997) at
  T = 16 (quick) or 16, 64, 256 and 1024 (full): full BPTT, truncated BPTT (window
  ``suite_hypotheses.truncation``), forward gradient, zeroth-order, (1+1)-ES.
- recurrent / adding_memory: per T the compiled memory (``memory_analysis``) and the
  median step time of each method's training step (no training: compile + a few timed
  steps).
- nondiff_parts / threshold_net: a sign-activation MLP; backprop through a
  straight-through estimator vs forward-only methods on the true net.
- nondiff_parts / categorical: a digits classifier whose hidden code is one category
  sampled from a softmax; Gumbel-softmax (annealed), straight-through Gumbel, REINFORCE
  with a leave-one-out baseline, and forward-only methods on the sampled loss with
  common random numbers (every evaluation of a step sees the same samples).
- nondiff_objective / zero_one and multilabel_exact: forward-only methods on the
  reported metric (0-1 error; 1 - exact match) vs backprop on the cross-entropy.
- linear_regression / linreg: the essay's relative-loss search where it says it worked,
  beside GLD, the (1+1)-ES, zeroth-order and Adam.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fold_jax import binary, heads, methods, nets, probes, recipes, search, tasks, timing, train
from fold_jax.bench import tuning

WIDTH = 32  # hidden units of the MLP workloads
FORWARD_ONLY = ("zo", "zo_layer_scaled", "zo_crn", "forward_gradient", "gld", "rso",
                "one_plus_one", "relative_loss", "one_plus_one_crn", "one_plus_one_ce",
                "zo_metric", "one_plus_one_metric", "gld_metric", "relative_loss_metric")
BACKPROP = ("adam", "bptt", "tbptt", "ste_adam", "gumbel_annealed", "st_gumbel",
            "reinforce", "adam_ce")


def family(method: str) -> str:
    """"backprop" or "forward_only" for a method name of this suite.

    Args:
        method: the method's name.

    Returns:
        The family.

    Raises:
        ValueError: an unknown method.
    """
    if method in BACKPROP:
        return "backprop"
    if method in FORWARD_ONLY:
        return "forward_only"
    raise ValueError(f"method={method!r} is not a method of the hypotheses suite")


# ------------------------------------------------------------------------ tuning

def space(method: str) -> dict[str, recipes.Param]:
    """A method's search space: its recipe ``"hypotheses/<method>"`` in
    :mod:`fold_jax.recipes` (the same on every workload; the settings a run does not
    tune, such as directions, stay fixed and are stated in its ``hparams``).

    Args:
        method: the method's name in this suite.

    Returns:
        ``{hyperparameter: LogUniform | Choice}``.
    """
    return dict(recipes.get(f"hypotheses/{method}").space)


Run = Callable[[int, Mapping[str, Any] | None, str], list[dict]]
"""``run(seed, hparams, eval_split) -> rows``: one training run of a workload's method."""


def settings(method: str, defaults: Mapping[str, Any], hp: Mapping[str, Any] | None
             ) -> dict[str, Any]:
    """``defaults`` overridden by ``hp`` (None: the defaults alone).

    Args:
        method: the method (its :func:`space` bounds ``hp``'s keys).
        defaults: the workload's settings for it, every tunable one included.
        hp: a trial's values.

    Returns:
        The merged settings.

    Raises:
        ValueError: a key of ``hp`` outside the method's space.
    """
    allowed = space(method)
    unknown = sorted(set(hp or {}) - set(allowed))
    if unknown:
        raise ValueError(f"hparams {unknown} are not tunable for method {method!r}; "
                         f"allowed: {sorted(allowed)}")
    return {**defaults, **(hp or {})}


def select(values: list[float]) -> int:
    """Index of the highest final validation metric (accuracy and R^2 rise; NaN ranks
    last; ties go to the lower index).

    Args:
        values: one final validation metric per trial.

    Returns:
        The selected index.
    """
    if not values:
        raise ValueError("select() needs at least one trial")
    return min(range(len(values)), key=lambda i: (_rank(values[i]), i))


def _rank(value: float) -> float:
    """A final validation metric as a tuning rank (lower is better; NaN last)."""
    return -value if math.isfinite(value) else math.inf


def tune(run: Run, method: str, seeds: tuple[int, ...], n_trials: int) -> list[dict]:
    """The tuning protocol for one method on one setting (:func:`fold_jax.bench.tuning.
    tune`, as every suite).

    ``n_trials`` settings from the recipe ``"hypotheses/<method>"``
    (:func:`fold_jax.recipes.trials`), trial ``i`` trained on seed ``TUNING_SEED + i``
    and scored by its final metric on the validation split; the selected trial
    (the highest, NaN last, ties to the lower index: :func:`select`) reruns on
    ``seeds``, scored on the test split. Trial rows (each run's last row is its score)
    carry ``trial``, ``n_trials`` and ``selected``; final rows the selected ``trial``
    and ``n_trials``.

    Args:
        run: the workload's run (:data:`Run`).
        method: the method's name.
        seeds: the final seeds.
        n_trials: trials to draw (>= 1).

    Returns:
        The trial rows, then every seed's rows (the last seed's last).
    """
    tuned = tuning.tune(f"hypotheses/{method}", n_trials,
                        lambda i, hp, trial_seeds: run(trial_seeds[0], hp, "val"),
                        lambda rows: _rank(rows[-1]["value"]),
                        lambda i, hp, seed: run(seed, hp, "test"), seeds)
    best = tuned.selected
    marked = [{**r, "trial": i, "n_trials": n_trials, "selected": i == best}
              for i, rows in enumerate(tuned.trials) for r in rows]
    finals = [{**r, "trial": best, "n_trials": n_trials} for rows in tuned.finals for r in rows]
    return marked + finals


# -------------------------------------------------------------------------- rows


def row(claim: str, workload: str, method: str, setting: str, seed: int, metric: str,
        value: Any, *, step: int, evals: float = math.nan, mem_bytes: float = math.nan,
        step_s: float = math.nan, **extra: Any) -> dict[str, Any]:
    """One hypotheses.csv row.

    Args:
        claim: the essay's claim (depth, recurrent, nondiff_parts, nondiff_objective,
            linear_regression).
        workload: the workload testing it.
        method: the method's name.
        setting: the configuration within the workload (e.g. "sigmoid/d16", "T512").
        seed: the seed.
        metric: what ``value`` measures.
        value: the measurement.
        step: training steps done when it was measured (the budget for final metrics).
        evals: loss evaluations spent by then.
        mem_bytes: compiled memory of the training step (argument + output + temp -
            alias bytes).
        step_s: median seconds of one training step.
        **extra: further columns (steps, elapsed_s, compile_s, n_params, hparams, ...).

    Returns:
        The row.
    """
    return {"claim": claim, "workload": workload, "method": method,
            "family": family(method), "library": "fold_jax", "setting": setting,
            "seed": int(seed), "metric": metric, "value": float(value), "step": int(step),
            "evals": float(evals), "mem_bytes": float(mem_bytes), "step_s": float(step_s),
            **extra}


def fit_rows(ids: dict[str, Any], method: methods.Method, params, task, apply, *,
             steps: int, batch_size: int, eval_every: int, hparams: dict,
             metric: str = "accuracy", eval_split: str = "test") -> list[dict]:
    """Train with :func:`fold_jax.train.fit`; the final metrics and the curve as rows.

    Args:
        ids: claim, workload, method, setting, seed.
        method: the fold_jax Method.
        params: the initial params.
        task: the Task.
        apply: ``apply(params, x)``.
        steps: the step budget.
        batch_size: examples per step.
        eval_every: steps between evaluations (curve points).
        hparams: the settings (written as JSON).
        metric: the head metric judged (accuracy, r2, ...).
        eval_split: "test" (a final run) or "val" (a tuning trial: the test split is
            not read).

    Returns:
        On "test": curve_test_<metric> per evaluation, then train_loss, skipped_steps
        and test_<metric> at the end (the last row: test_<metric>). On "val":
        trial_skipped_steps and trial_val_<metric> (the last).
    """
    r = train.fit(method, params, task, apply=apply, steps=steps, batch_size=batch_size,
                  eval_every=eval_every, seed=ids["seed"], target_metric=metric,
                  eval_split=eval_split)
    h = r.history
    last = h.iloc[-1]
    elapsed = float(last["elapsed_s"])
    step_s = elapsed / max(int(last["step"]), 1)
    common = dict(steps=steps, batch_size=batch_size, n_params=nets.count_params(params),
                  hparams=json.dumps(hparams, sort_keys=True), compile_s=r.compile_s,
                  elapsed_s=elapsed)
    final = dict(step=int(last["step"]), evals=float(last["evals"]), step_s=step_s, **common)
    if eval_split == "val":
        return [row(**ids, metric="trial_skipped_steps", value=int(h["skipped"].sum()),
                    **final),
                row(**ids, metric=f"trial_val_{metric}", value=last[f"val_{metric}"],
                    **final)]
    out = [row(**ids, metric=f"curve_test_{metric}", value=v, step=int(s), evals=e,
               **{**common, "elapsed_s": float(t)})
           for s, e, t, v in zip(h["step"], h["evals"], h["elapsed_s"], h[f"test_{metric}"],
                                 strict=True)]
    out += [row(**ids, metric="train_loss", value=last["train_loss"], **final),
            row(**ids, metric="skipped_steps", value=int(h["skipped"].sum()), **final),
            row(**ids, metric=f"test_{metric}", value=last[f"test_{metric}"], **final)]
    return out


# ------------------------------------------------------------------------ methods


def zo(loss: Callable, *, lr: float = 1e-2, directions: int = 16, sigma: float = 1e-3,
       ) -> methods.Method:
    """Isotropic zeroth-order: Adam on the antithetic Gaussian estimate."""
    return methods.zeroth_order(loss, "adam", lr, num_directions=directions, sigma=sigma)


def layer_scales(params) -> Any:
    """Per-leaf scale of an MLP's params: 1 / sqrt(fan_in) of the leaf's layer (the rms
    of its LeCun-normal kernel at init; a bias takes its layer's). Python floats, fixed by
    the architecture alone, so every seed compiles the same program.

    Args:
        params: an :func:`fold_jax.nets.mlp` params tree.

    Returns:
        A tree like params of Python floats.
    """
    out = {}
    for name, layer in nets.dense_layers(params):
        s = 1.0 / math.sqrt(layer["kernel"].shape[0])
        out[name] = {k: s for k in layer}
    return {"params": out}


class Scaled(NamedTuple):
    """A reparameterization theta = params / scales (per layer)."""

    scales: Any

    def down(self, params):
        return jax.tree.map(lambda p, s: p / s, params, self.scales)

    def up(self, theta):
        return jax.tree.map(lambda t, s: t * s, theta, self.scales)

    def tx(self, lr: float) -> optax.GradientTransformation:
        """Adam whose step in theta is lr / scale, i.e. lr in parameter units: only the
        perturbation is scaled per layer, not the step."""
        return optax.chain(optax.adam(lr), optax.stateless(
            lambda updates, params=None: jax.tree.map(lambda u, s: u / s, updates,
                                                      self.scales)))


def search_method(name: str, loss: Callable, **options) -> methods.Method:
    """A fold_jax.search method by name with ``options``."""
    return getattr(search, name)(loss, **options)


class KeyedState(NamedTuple):
    """The wrapped method's state plus a step count (``params`` first, as fit needs)."""

    params: Any
    inner: Any
    count: Any


def keyed(build: Callable[[Callable], methods.Method], loss: Callable) -> methods.Method:
    """A Method whose loss also takes a sampling key and the step count:
    ``loss(params, x, y, key, count)``. Each step draws one key and passes the same key to
    every evaluation the step makes (common random numbers); ``build(loss3)`` builds the
    inner method on ``loss3(params, x, y, key, count)``."""
    inner = build(loss)

    def init(params):
        state = inner.init(params)
        return KeyedState(state.params, state, jnp.int32(0))

    def step(state, key, x, y):
        k_method, k_sample = jax.random.split(key)
        new, info = inner.step(state.inner, k_method, x, y, k_sample, state.count)
        return KeyedState(new.params, new, state.count + 1), info

    return methods.Method(init, step, inner.name)


# ------------------------------------------------------------------------- depth


def depth_run(method: str, activation: str, depth: int, seed: int, steps: int,
              eval_every: int, hp: Mapping[str, Any] | None = None,
              eval_split: str = "test") -> list[dict]:
    """One run of the depth workload (digits, ``depth`` hidden layers of WIDTH).

    Args:
        method: adam, zo, zo_layer_scaled, gld, one_plus_one, rso or relative_loss.
        activation: sigmoid, tanh or relu.
        depth: hidden layers.
        seed: init and batch seed.
        steps: step budget.
        eval_every: steps between curve points.
        hp: tuned values (None: the defaults below).
        eval_split: "test" or "val" (a tuning trial).

    Returns:
        The rows.
    """
    task = tasks.get("digits")
    net = probes.deep_mlp(task.n_features, task.n_outputs, depth=depth, width=WIDTH,
                          activation=activation)
    params = net.init(jax.random.key(seed))
    loss = task.loss_fn(net.apply)
    apply = net.apply
    if method == "adam":
        h = settings(method, dict(optimizer="adam", lr=1e-3), hp)
        m = methods.gradient(loss, "adam", h["lr"])
    elif method == "zo":
        h = settings(method, dict(optimizer="adam", lr=1e-2, directions=16, sigma=1e-3), hp)
        m = zo(loss, lr=h["lr"], sigma=h["sigma"])
    elif method == "zo_layer_scaled":
        h = settings(method, dict(
            optimizer="adam", lr=1e-2, directions=16, sigma=1e-2,
            scaling="sigma x 1/sqrt(fan_in) per layer; Adam step in parameter units"), hp)
        sc = Scaled(layer_scales(params))
        m = methods.zeroth_order(lambda t, x, y: loss(sc.up(t), x, y), sc.tx(h["lr"]),
                                 num_directions=16, sigma=h["sigma"])
        params, apply = sc.down(params), (lambda t, x: net.apply(sc.up(t), x))
    elif method in ("gld", "one_plus_one", "rso", "relative_loss"):
        opts = {"gld": dict(max_radius=1.0, min_radius=1e-3),
                "one_plus_one": dict(sigma=0.01), "rso": dict(sigma=0.1),
                "relative_loss": dict(radius=0.1)}[method]
        opts = settings(method, opts, hp)
        h = dict(acceptance="reevaluate", **opts)
        m = search_method(method, loss, **opts)
    else:
        raise ValueError(f"method={method!r} is not a depth-workload method")
    ids = dict(claim="depth", workload="mlp_depth", method=method,
               setting=f"{activation}/d{depth}", seed=seed)
    return fit_rows(ids, m, params, task, apply, steps=steps, batch_size=64,
                    eval_every=eval_every, eval_split=eval_split,
                    hparams={**h, "depth": depth, "activation": activation})


# --------------------------------------------------------------------- recurrent


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
    compiled ahead of time (:func:`fold_jax.timing.aot`); memory is
    ``memory_analysis()`` argument + output + temp - alias bytes (and the temp bytes
    alone); time is the median over rounds (:func:`fold_jax.timing.measure`) from each
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


# ------------------------------------------------------------ non-differentiable parts


def _dense_apply(params, x, act: Callable) -> jax.Array:
    layers = nets.dense_layers(params)
    for i, (_, layer) in enumerate(layers):
        x = x @ layer["kernel"] + layer["bias"]
        if i + 1 < len(layers):
            x = act(x)
    return x


def threshold_run(method: str, seed: int, steps: int, eval_every: int,
                  hidden: int = 2, hp: Mapping[str, Any] | None = None,
                  eval_split: str = "test") -> list[dict]:
    """The hard-threshold net: digits, ``hidden`` layers of WIDTH sign units.

    Args:
        method: ste_adam (backprop through sign with a straight-through gradient), zo,
            gld, one_plus_one or relative_loss (forward-only on the true sign net).
        seed: init and batch seed.
        steps: step budget.
        eval_every: steps between curve points.
        hidden: hidden layers.
        hp: tuned values (None: the defaults below).
        eval_split: "test" or "val" (a tuning trial).

    Returns:
        The rows.
    """
    task = tasks.get("digits")
    shape = nets.mlp((task.n_features, *(WIDTH,) * hidden, task.n_outputs))
    params = shape.init(jax.random.key(seed))

    def apply(p, x):  # the true net: sign units
        return _dense_apply(p, x, binary.sign)

    def ste_apply(p, x):  # the same forward; straight-through gradient
        return _dense_apply(p, x, binary.sign_ste)

    true_loss = task.loss_fn(apply)
    if method == "ste_adam":
        h = settings(method, dict(optimizer="adam", lr=1e-3, gradient="straight-through"), hp)
        m = methods.gradient(task.loss_fn(ste_apply), "adam", h["lr"])
    elif method == "zo":
        h = settings(method, dict(optimizer="adam", lr=1e-2, directions=16, sigma=0.05), hp)
        m = zo(true_loss, lr=h["lr"], sigma=h["sigma"])
    elif method in ("gld", "one_plus_one", "relative_loss"):
        opts = {"gld": dict(max_radius=1.0, min_radius=1e-3),
                "one_plus_one": dict(sigma=0.05), "relative_loss": dict(radius=0.5)}[method]
        opts = settings(method, opts, hp)
        h = dict(acceptance="reevaluate", **opts)
        m = search_method(method, true_loss, **opts)
    else:
        raise ValueError(f"method={method!r} is not a threshold-net method")
    ids = dict(claim="nondiff_parts", workload="threshold_net", method=method,
               setting=f"sign/h{hidden}/w{WIDTH}", seed=seed)
    return fit_rows(ids, m, params, task, apply, steps=steps, batch_size=64,
                    eval_every=eval_every, hparams=h, eval_split=eval_split)


CATEGORIES = 16


def categorical_run(method: str, seed: int, steps: int, eval_every: int,
                    hp: Mapping[str, Any] | None = None, eval_split: str = "test"
                    ) -> list[dict]:
    """The categorical bottleneck: digits -> MLP encoder -> logits over CATEGORIES ->
    one category sampled -> linear decoder -> class logits. The test metric uses the
    most probable category (the net's deterministic mode).

    Args:
        method: gumbel_annealed (Gumbel-softmax, temperature 1 -> 0.1 geometrically
            over the budget), st_gumbel (straight-through Gumbel: hard sample forward,
            relaxed gradient, temperature 1), reinforce (score function with a
            leave-one-out baseline, decoder by its own gradient), zo_crn or
            one_plus_one_crn (forward-only on the sampled loss, common random numbers).
        seed: init and batch seed.
        steps: step budget.
        eval_every: steps between curve points.
        hp: tuned values (None: the defaults below).
        eval_split: "test" or "val" (a tuning trial).

    Returns:
        The rows.
    """
    task = tasks.get("digits")
    enc = nets.mlp((task.n_features, WIDTH, CATEGORIES), "relu")
    dec = nets.mlp((CATEGORIES, task.n_outputs))
    k1, k2 = jax.random.split(jax.random.key(seed))
    params = {"enc": enc.init(k1), "dec": dec.init(k2)}
    xent = optax.softmax_cross_entropy_with_integer_labels

    def apply(p, x):  # the mode: the most probable category
        z = jax.nn.one_hot(jnp.argmax(enc.apply(p["enc"], x), -1), CATEGORIES)
        return dec.apply(p["dec"], z)

    def hard_sample(logits, key):
        return jax.nn.one_hot(jax.random.categorical(key, logits), CATEGORIES)

    def sampled_loss(p, x, y, key, count):  # the true stochastic net
        del count
        z = hard_sample(enc.apply(p["enc"], x), key)
        return xent(dec.apply(p["dec"], z), y).mean()

    def relaxed(p, x, key, tau, straight):
        logits = enc.apply(p["enc"], x)
        g = jax.random.gumbel(key, logits.shape)
        soft = jax.nn.softmax((logits + g) / tau)
        if straight:
            hard = jax.nn.one_hot(jnp.argmax(logits + g, -1), CATEGORIES)
            soft = hard + soft - jax.lax.stop_gradient(soft)
        return soft

    tau0, tau1 = 1.0, 0.1

    def gumbel_loss(p, x, y, key, count):
        tau = tau0 * (tau1 / tau0) ** jnp.minimum(count / steps, 1.0)
        return xent(dec.apply(p["dec"], relaxed(p, x, key, tau, False)), y).mean()

    def st_loss(p, x, y, key, count):
        del count
        return xent(dec.apply(p["dec"], relaxed(p, x, key, 1.0, True)), y).mean()

    def reinforce_loss(p, x, y, key, count):
        del count
        logits = enc.apply(p["enc"], x)
        z = jax.lax.stop_gradient(hard_sample(logits, key))
        per = xent(dec.apply(p["dec"], z), y)
        n = per.shape[0]
        baseline = (jnp.sum(per) - per) / (n - 1)  # leave-one-out
        logp = jnp.sum(z * jax.nn.log_softmax(logits), -1)
        advantage = jax.lax.stop_gradient(per - baseline)
        return per.mean() + jnp.mean(advantage * logp)

    if method in ("gumbel_annealed", "st_gumbel", "reinforce"):
        loss = {"gumbel_annealed": gumbel_loss, "st_gumbel": st_loss,
                "reinforce": reinforce_loss}[method]
        h = settings(method, dict(optimizer="adam", lr=3e-3), hp)
        if method == "gumbel_annealed":
            h.update(tau0=tau0, tau1=tau1, schedule="geometric over the budget")
        m = keyed(lambda f: methods.gradient(f, "adam", h["lr"]), loss)
    elif method == "zo_crn":
        h = settings(method, dict(optimizer="adam", lr=1e-2, directions=16, sigma=0.05,
                                  common_random_numbers=True), hp)
        m = keyed(lambda f: zo(f, lr=h["lr"], sigma=h["sigma"]), sampled_loss)
    elif method == "one_plus_one_crn":
        h = settings(method, dict(sigma=0.05, acceptance="reevaluate",
                                  common_random_numbers=True), hp)
        m = keyed(lambda f: search.one_plus_one(f, sigma=h["sigma"]), sampled_loss)
    else:
        raise ValueError(f"method={method!r} is not a categorical-bottleneck method")
    ids = dict(claim="nondiff_parts", workload="categorical", method=method,
               setting=f"K{CATEGORIES}", seed=seed)
    return fit_rows(ids, m, params, task, apply, steps=steps, batch_size=128,
                    eval_every=eval_every, hparams=h, eval_split=eval_split)


# ----------------------------------------------------------- non-differentiable objective


def objective_run(method: str, workload: str, seed: int, steps: int, eval_every: int,
                  hp: Mapping[str, Any] | None = None, eval_split: str = "test"
                  ) -> list[dict]:
    """Optimize the reported metric: forward-only on 0-1 error (digits) or on
    1 - exact match (digit_attributes) vs backprop on the cross-entropy; judged on the
    metric (test accuracy = 1 - 0-1 error, or exact match).

    Args:
        method: adam_ce, one_plus_one_ce (forward-only on the cross-entropy: separates
            the objective from the method), zo_metric, one_plus_one_metric or
            gld_metric.
        workload: zero_one or multilabel_exact.
        seed: init and batch seed.
        steps: step budget.
        eval_every: steps between curve points.
        hp: tuned values (None: the defaults below).
        eval_split: "test" or "val" (a tuning trial).

    Returns:
        The rows.
    """
    task = tasks.get({"zero_one": "digits", "multilabel_exact": "digit_attributes"}[workload])
    net = nets.mlp((task.n_features, WIDTH, task.n_outputs), "relu")
    params = net.init(jax.random.key(seed))
    ce = task.loss_fn(net.apply)
    head = task.head

    def metric_loss(p, x, y):  # 1 - accuracy (0-1 error; 1 - exact match)
        return 1.0 - head.metrics(net.apply(p, x), y)["accuracy"]

    if method == "adam_ce":
        h = settings(method, dict(optimizer="adam", lr=1e-3, objective="cross-entropy"), hp)
        m = methods.gradient(ce, "adam", h["lr"])
    elif method in ("one_plus_one_ce", "one_plus_one_metric"):
        objective = "cross-entropy" if method == "one_plus_one_ce" else "metric"
        h = settings(method, dict(sigma=0.01, acceptance="reevaluate", objective=objective),
                     hp)
        m = search.one_plus_one(ce if method == "one_plus_one_ce" else metric_loss,
                                sigma=h["sigma"])
    elif method == "zo_metric":
        h = settings(method, dict(optimizer="adam", lr=1e-2, directions=16, sigma=0.05,
                                  objective="metric"), hp)
        m = zo(metric_loss, lr=h["lr"], sigma=h["sigma"])
    elif method == "gld_metric":
        h = settings(method, dict(max_radius=1.0, min_radius=1e-3, acceptance="reevaluate",
                                  objective="metric"), hp)
        m = search.gld(metric_loss, max_radius=h["max_radius"], min_radius=1e-3)
    else:
        raise ValueError(f"method={method!r} is not a non-differentiable-objective method")
    ids = dict(claim="nondiff_objective", workload=workload, method=method,
               setting=task.name, seed=seed)
    return fit_rows(ids, m, params, task, net.apply, steps=steps, batch_size=256,
                    eval_every=eval_every, hparams=h, eval_split=eval_split)


# ------------------------------------------------------------------ linear regression


def linreg_task(dim: int = 20, n: int = 500) -> tasks.Task:
    """y = x w + 0.1 noise with w ~ N(0, I), x ~ N(0, I) (fixed data, seed 0)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dim))
    y = x @ rng.normal(size=dim) + 0.1 * rng.normal(size=n)
    return tasks.from_arrays(x, y, kind="regression", name=f"linreg_d{dim}")


def linreg_run(method: str, seed: int, steps: int, eval_every: int, dim: int = 20,
               hp: Mapping[str, Any] | None = None, eval_split: str = "test"
               ) -> list[dict]:
    """The essay's method where it says it worked: full-batch linear regression.

    Search methods decide on the whole training set (``acceptance="batch"`` on a full
    batch is exact: the loss is deterministic).

    Args:
        method: relative_loss, gld, one_plus_one, zo or adam.
        seed: init seed.
        steps: step budget.
        eval_every: steps between curve points.
        dim: features.
        hp: tuned values (None: the defaults below).
        eval_split: "test" or "val" (a tuning trial).

    Returns:
        The rows (metric test_r2).
    """
    task = linreg_task(dim)
    net = nets.mlp((dim, 1))
    params = net.init(jax.random.key(seed))
    loss = task.loss_fn(net.apply)
    if method == "adam":
        h = settings(method, dict(optimizer="adam", lr=3e-2), hp)
        m = methods.gradient(loss, "adam", h["lr"])
    elif method == "zo":
        h = settings(method, dict(optimizer="adam", lr=3e-2, directions=4, sigma=1e-3), hp)
        m = zo(loss, lr=h["lr"], directions=4, sigma=h["sigma"])
    elif method in ("relative_loss", "gld", "one_plus_one"):
        opts = {"relative_loss": dict(radius=0.05), "gld": dict(max_radius=4.0,
                                                                min_radius=1e-3),
                "one_plus_one": dict(sigma=0.3)}[method]
        opts = settings(method, opts, hp)
        h = dict(acceptance="batch", batch="full training set", **opts)
        m = search_method(method, loss, acceptance="batch", **opts)
    else:
        raise ValueError(f"method={method!r} is not a linear-regression method")
    ids = dict(claim="linear_regression", workload="linreg", method=method,
               setting=f"d{dim}", seed=seed)
    return fit_rows(ids, m, params, task, net.apply, steps=steps, batch_size=task.n_train,
                    eval_every=eval_every, hparams=h, metric="r2", eval_split=eval_split)
