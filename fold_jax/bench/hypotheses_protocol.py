"""The hypotheses workloads' shared pieces (:mod:`fold_jax.bench.hypotheses_work`): the
method families, the tuning protocol (:func:`tune` on the recipes ``"hypotheses/<method>"``),
the rows of ``hypotheses.csv`` (:func:`row`, :func:`fit_rows`) and the method builders every
workload uses (:func:`zo`, :class:`Scaled`, :func:`search_method`, :func:`keyed`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fold_jax.bench import tuning
from fold_jax.estimators import methods, search
from fold_jax.learn import nets, recipes, train

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
    :mod:`fold_jax.learn.recipes` (the same on every workload; the settings a run does not
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
    (:func:`fold_jax.learn.recipes.trials`), trial ``i`` trained on seed ``TUNING_SEED + i``
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
    """Train with :func:`fold_jax.learn.train.fit`; the final metrics and the curve as rows.

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
    """Isotropic zeroth-order: Adam on the antithetic Gaussian estimate.

    Args:
        loss: ``loss(params, x, y)``.
        lr: Adam's learning rate.
        directions: directions per step.
        sigma: perturbation scale.

    Returns:
        The Method.
    """
    return methods.zeroth_order(loss, "adam", lr, num_directions=directions, sigma=sigma)


def layer_scales(params) -> Any:
    """Per-leaf scale of an MLP's params: 1 / sqrt(fan_in) of the leaf's layer (the rms
    of its LeCun-normal kernel at init; a bias takes its layer's). Python floats, fixed by
    the architecture alone, so every seed compiles the same program.

    Args:
        params: an :func:`fold_jax.learn.nets.mlp` params tree.

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
    """A fold_jax.estimators.search method by name with ``options``.

    Args:
        name: a function of :mod:`fold_jax.estimators.search` (gld, rso, one_plus_one, ...).
        loss: ``loss(params, x, y)``.
        **options: its keyword arguments.

    Returns:
        The Method.
    """
    return getattr(search, name)(loss, **options)


class KeyedState(NamedTuple):
    """The wrapped method's state plus a step count (``params`` first, as fit needs)."""

    params: Any
    inner: Any
    count: Any


def keyed(build: Callable[[Callable], methods.Method], loss: Callable) -> methods.Method:
    """A Method whose loss also takes a sampling key and the step count:
    ``loss(params, x, y, key, count)``. Each step draws one key and passes the same key to
    every evaluation the step makes (common random numbers).

    Args:
        build: ``build(loss3)`` builds the inner method on ``loss3(params, x, y, key,
            count)``.
        loss: that loss.

    Returns:
        The Method (state :class:`KeyedState`).
    """
    inner = build(loss)

    def init(params):
        state = inner.init(params)
        return KeyedState(state.params, state, jnp.int32(0))

    def step(state, key, x, y):
        k_method, k_sample = jax.random.split(key)
        new, info = inner.step(state.inner, k_method, x, y, k_sample, state.count)
        return KeyedState(new.params, new, state.count + 1), info

    return methods.Method(init, step, inner.name)
