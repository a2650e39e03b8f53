"""Workloads of the hypotheses suite (fold_jax/bench/suites/hypotheses.py): the essays' claims about
forward-only training, each put where gradients are said to fail.

Every training run goes through :func:`fold_jax.learn.train.fit` with a fixed step budget
(stated in the rows: ``steps``, ``evals``). Every method is tuned by the suites' one
protocol (:func:`tune`, :mod:`fold_jax.bench.tuning`): ``n_trials`` settings drawn from
its recipe ``"hypotheses/<method>"`` (:func:`space`, :func:`fold_jax.learn.recipes.trials`),
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

The protocol, rows and method builders the workloads share are in
:mod:`fold_jax.bench.hypotheses_protocol`, the recurrent workloads in
:mod:`fold_jax.bench.hypotheses_recurrent`; every name stays importable from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fold_jax.analysis import probes
from fold_jax.bench.hypotheses_protocol import (
    BACKPROP,
    FORWARD_ONLY,
    KeyedState,
    Run,
    Scaled,
    family,
    fit_rows,
    keyed,
    layer_scales,
    row,
    search_method,
    select,
    settings,
    space,
    tune,
    zo,
)
from fold_jax.bench.hypotheses_recurrent import (
    RNN_HIDDEN,
    adding_task,
    recurrent_accuracy_run,
    recurrent_cost_rows,
    recurrent_method,
)
from fold_jax.compress import binary
from fold_jax.estimators import methods, search
from fold_jax.learn import nets, tasks

# the protocol and the recurrent workloads live in their own modules; their names stay
# importable from here, where the suite and research code have always found them
__all__ = ["BACKPROP", "CATEGORIES", "FORWARD_ONLY", "RNN_HIDDEN", "WIDTH", "KeyedState", "Run",
           "Scaled", "adding_task", "categorical_run", "depth_run", "family", "fit_rows",
           "keyed", "layer_scales", "linreg_run", "linreg_task", "objective_run",
           "recurrent_accuracy_run", "recurrent_cost_rows", "recurrent_method", "row",
           "search_method", "select", "settings", "space", "threshold_run", "tune", "zo"]

WIDTH = 32  # hidden units of the MLP workloads


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
    """y = x w + 0.1 noise with w ~ N(0, I), x ~ N(0, I) (fixed data, seed 0).

    Args:
        dim: features.
        n: examples.

    Returns:
        The regression Task.
    """
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
