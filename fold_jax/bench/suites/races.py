"""Time-to-target races (AlgoPerf style) after the same tuning for every method: how
long, how many steps and how many loss evaluations each recipe needs to reach a fixed
target, per task and variant, with medians over seeds.

The protocol (AlgoPerf's external tuning ruleset), per (task, recipe, variant), in one
job:

1. **Tune on the validation split.** ``trials`` hyperparameter settings drawn
   quasi-randomly from the recipe's space (:func:`fold_jax.learn.recipes.trials`: scrambled
   Halton, the same draws on every task; quick 4, or 8 on the small tasks
   (``task_trials``), full 20; every recipe on a task, Adam included, gets the same
   number). Trial ``i`` trains on ``trial_seeds`` seeds (1, or 3 on the small tasks:
   ``task_trial_seeds``), seed ``TUNING_SEED + i + j * n_trials`` for the j-th, each
   for at most ``max_steps`` steps, stopping at the target on the **validation** split
   (``fit(..., eval_split="val")``); the test split is not read. Each trial and seed
   is a ``tuning.csv`` row; the trial's ``score`` (on each of its rows) is the median
   over its seeds of the evaluations needed to reach the validation target (inf for a
   miss).
2. **Select**: the trial with the lowest score; among trials that all missed, the one
   with the best median validation metric (a non-finite one ranks last; ties: the
   lower trial index).
3. **Race on fresh seeds**: the selected setting reruns on ``seeds`` (quick 0-2, full
   0-4), now scored on the **test** split: one ``races.csv`` row per seed (with the
   ``hparams`` as JSON, the ``library``, the selected ``trial`` and ``n_trials``) and
   its curves.
4. **Cost an evaluation against a forward pass**: the selected setting's steps are timed
   against a forward pass of the race network in alternating rounds (:func:`step_cost`),
   and a race's ``forwards_to_target`` (``evals_to_target x eval_forwards``: its time in
   forward passes of one minibatch) compares jobs run minutes apart less at the mercy
   of the machine's drift than the timed ``time_to_target_s``. Not immune: under heavy
   load the ratio moved by up to about 20% (``step_iqr_s``, ``cost_rounds`` say how
   tight a job's timing was).

Every race trains through :func:`fold_jax.learn.train.fit` (timed steps, untimed evaluation
every ``eval_every`` steps of the task's :class:`Race`, ``EVAL_EVERY`` unless it says
otherwise; compile timed apart) for at most ``max_steps`` steps (a
deterministic budget: the same seed gives the same rows on any machine, timing columns
aside) and stops at the target. ``budget_s`` is only a generous wall-clock safety cap;
``capped`` records whether it cut the race short (then the row depends on machine
speed). A miss counts as infinity (steps/evals/time_to_target = inf).

Targets (``TARGETS``) are fixed per task, at or below a well-tuned gradient baseline on
the validation split (``python -m fold_jax.bench.suites.races --calibrate`` reprints it): Adam at
its best learning rate of {1e-3, 3e-3, 1e-2}, 2000 steps, batch 128, 3 seeds; the
calibration is the median best validation metric minus a 2-point margin (rounded down
to 0.01), so a well-tuned method reaches the target inside the budget while it still
demands a trained model. Targets are constants on purpose: changing them invalidates
every stored race.

Variants: the task's MLP ("dense"), binarized or pruned, and "conv": nets.cnn on the
task's image (digits' 8x8 pixels only, ``CONV_IMAGES``) in place of the MLP, run by the
rank-r recipes on the fused path (issue 33, item 5); the full grid races all four.

Recipes that cannot run a job are left out with a printed reason (a recipe's
``max_params``, e.g. CMA-ES above 4096 parameters; evosax peers on pruned nets, which
they cannot keep masked).

A job returns ``{"tuning": rows, "races": rows, "curves": rows}`` (see
:mod:`fold_jax.bench.common`); curves rows hold one value per (evaluation, split, metric).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np
import optax

from fold_jax import results
from fold_jax.bench import timing, tuning
from fold_jax.bench.common import Job, Selection, check_profile, shared_compiles
from fold_jax.bench.race_grid import (  # noqa: F401  (the grid, re-exported here)
    ALL_METHODS,
    CONV_CHANNELS,
    CONV_IMAGES,
    EVAL_EVERY,
    PROFILE,
    RUN_COST,
    SMALL_TASK,
    SMALL_TASK_PEER,
    TARGETS,
    VARIANTS,
    Race,
    check_selection,
    grid,
    n_trials,
    race_seeds,
    step_budget,
    trial_seeds,
)
from fold_jax.estimators import methods
from fold_jax.learn import heads, nets, recipes, tasks, train

FILE = "races"
KEY = results.key("races")
SELECTS = ("methods", "tasks")  # --methods / --tasks (fold_jax.bench.common.Selection)
KEYS = {"curves": results.key("curves"), "tuning": results.key("tuning")}

BATCH_SIZE = 128


# seconds of alternating rounds per job that time the selected setting's step against a
# forward pass (step_cost): the races' drift-free cost, beside their own clocks
STEP_COST_S = 1.0
STEP_COST_JOB_S = 3.0  # its share of a job's time (two compiles, calibration, rounds)
SPARSITY = 0.5  # pruned variant: fraction of weights removed (0.8 caps Adam at ~0.90 on digits)


# ----------------------------------------------------------------------- one race


def _model(task, race: Race, variant: str, seed: int):
    """(apply, params, tx_wrap, zo_mask) of the race network in ``variant``."""
    widths = (task.n_features, *race.widths[1:-1], task.n_outputs)
    key = jax.random.key(seed)
    if variant in ("dense", "conv"):
        net = _net(task.name, widths, variant)
        return net.apply, net.init(key), (lambda tx: tx), None
    from fold_jax.compress import variants

    v = variants.make(variant, widths, "relu", key=key,
                      sparsity=SPARSITY if variant == "pruned" else None)
    return v.net.apply, v.params, v.wrap_tx, v.zo_mask


def _net(task_name: str, widths: tuple[int, ...], variant: str) -> nets.Net:
    """The dense race network: the MLP of ``widths``, or (``variant="conv"``) nets.cnn on
    the task's image (``CONV_IMAGES``) with ``widths[-1]`` outputs."""
    if variant == "conv":
        return nets.cnn(CONV_IMAGES[task_name], CONV_CHANNELS, widths[-1], "relu")
    return nets.mlp(widths, "relu")


def _to_target(history, column: str, target: float, metric: str) -> dict[str, float]:
    values = history[column].to_numpy()
    hit = values >= target if heads.higher_is_better(metric) else values <= target
    if not hit.any():
        return {"steps_to_target": math.inf, "evals_to_target": math.inf,
                "time_to_target_s": math.inf}
    first = history.iloc[int(np.argmax(hit))]
    return {"steps_to_target": float(first["step"]), "evals_to_target": float(first["evals"]),
            "time_to_target_s": float(first["elapsed_s"])}


def _curves(history, key: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    counts = ("step", "evals", "elapsed_s", "skipped", "accepted")  # not metrics
    columns = [c for c in history.columns if c not in counts]
    for record in history.to_dict("records"):
        for column in columns:
            split, _, metric = column.partition("_")
            if not math.isfinite(record[column]):
                continue
            rows.append({**key, "step": int(record["step"]), "evals": int(record["evals"]),
                         "elapsed_s": float(record["elapsed_s"]), "split": split,
                         "metric": metric, "value": float(record[column])})
    return rows


def _built(task_name: str, method: str, variant: str, hparams: Mapping[str, Any] | None,
           seed: int):
    """(task, apply, params, loss, Method) of recipe ``method`` with ``hparams`` on the
    race network of ``task_name`` in ``variant``, initialized from ``seed``."""
    task = tasks.get(task_name)
    apply, params, tx_wrap, mask = _model(task, TARGETS[task_name], variant, seed)
    loss = task.loss_fn(apply)
    return task, apply, params, loss, recipes.build(method, loss, hparams, tx_wrap=tx_wrap,
                                                    mask=mask)


def _train(task_name: str, method: str, variant: str, hparams: Mapping[str, Any] | None,
           seed: int, budget_s: float, max_steps: int, split: str):
    """One training run of recipe ``method`` with ``hparams`` stopping at the target on
    ``split``: ``(row, history, options)``; the row holds the columns shared by tuning
    and race rows."""
    spec = TARGETS[task_name]
    recipe = recipes.get(method)
    task, apply, params, _, m = _built(task_name, method, variant, hparams, seed)
    result = train.fit(m, params, task, apply=apply, steps=max_steps, budget_s=budget_s,
                       batch_size=min(BATCH_SIZE, task.n_train), eval_every=spec.eval_every,
                       target=spec.target, target_metric=spec.target_metric, seed=seed,
                       eval_split=split)
    h = result.history
    column = f"{split}_{spec.target_metric}"
    steps_run = int(h["step"].iloc[-1])
    options = {**recipe.fixed, **recipe.defaults, **(hparams or {})}
    higher = heads.higher_is_better(spec.target_metric)
    row = {"library": recipe.library, "recipe": recipe.name,
           "hparams": recipes.hparams_json(options), "target_metric": spec.target_metric,
           "target": spec.target, "reached": bool(result.reached),
           **_to_target(h, column, spec.target, spec.target_metric),
           "compile_s": result.compile_s, "steps_run": steps_run,
           "evals_run": int(h["evals"].iloc[-1]), "elapsed_s": float(h["elapsed_s"].iloc[-1]),
           "skipped_steps": int(result.skipped),
           f"best_{split}_metric": float(h[column].max() if higher else h[column].min()),
           f"final_{split}_metric": float(h[column].iloc[-1]),
           "capped": bool(not result.reached and steps_run < max_steps),
           "n_params": nets.count_params(params)}
    return row, h, options


def trial(task_name: str, method: str, variant: str, index: int, hparams: Mapping[str, Any],
          budget_s: float, max_steps: int, n_trials: int, n_seeds: int = 1
          ) -> list[dict[str, Any]]:
    """Tuning trial ``index`` on ``n_seeds`` seeds (``TUNING_SEED + index + j *
    n_trials``), scored on the validation split only: one ``tuning.csv`` row per seed,
    each with the trial's ``score`` (the median over its seeds of the evaluations to
    the validation target, inf for a miss); ``selected`` is set after :func:`select`."""
    rows = []
    for j in range(n_seeds):
        seed = tuning.trial_seed(index, j, n_trials)
        row, _, _ = _train(task_name, method, variant, hparams, seed, budget_s, max_steps,
                           "val")
        rows.append({"task": task_name, "method": method, "variant": variant,
                     "trial": index, "max_steps": max_steps, "n_trials": n_trials,
                     "trial_seeds": n_seeds, "split": "val", "seed": seed, **row,
                     "selected": False})
    score = float(np.median([r["evals_to_target"] for r in rows]))
    return [r | {"score": score} for r in rows]


def select(rows: list[dict[str, Any]]) -> int:
    """The selected ``trial`` among tuning ``rows`` (one or more per trial): lowest
    ``score``; when every trial missed, the best median ``best_val_metric`` over the
    trial's rows in its direction (a non-finite one ranks last); ties go to the lower
    trial."""
    if not rows:
        raise ValueError("select() needs at least one trial row")
    by_trial: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_trial.setdefault(int(r["trial"]), []).append(r)
    return min(by_trial, key=lambda t: (trial_rank(by_trial[t]), t))


def trial_rank(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """How one trial's rows rank (lower is better): its ``score`` (median evaluations
    to the validation target, inf for a miss), then its median ``best_val_metric`` in
    the metric's direction (a non-finite one ranks last).

    Args:
        rows: the trial's tuning rows (one per seed).

    Returns:
        ``(score, metric key)``.
    """
    higher = heads.higher_is_better(rows[0]["target_metric"])
    best = [r["best_val_metric"] for r in rows]
    best = [b if math.isfinite(b) else (-math.inf if higher else math.inf) for b in best]
    metric = float(np.median(best))
    return (rows[0]["score"], -metric if higher else metric)


def race(task_name: str, method: str, variant: str, seed: int, budget_s: float,
         max_steps: int | None = None, hparams: Mapping[str, Any] | None = None,
         trial_index: int = -1, n_trials: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Run one race of recipe ``method`` with ``hparams`` (None: the recipe's defaults,
    ``trial_index`` -1) for at most ``max_steps`` steps (default: the quick profile's
    budget on the task),
    scored on the test split, with ``budget_s`` as wall-clock safety cap;
    ``{"races": [row], "curves": rows}``."""
    if max_steps is None:
        max_steps = step_budget("quick", task_name)
    row, h, options = _train(task_name, method, variant, hparams, seed, budget_s, max_steps,
                             "test")
    key = {"task": task_name, "method": method, "variant": variant, "seed": seed,
           "max_steps": max_steps, "budget_s": budget_s}
    row = {**key, **row, "trial": trial_index, "n_trials": n_trials,
           "final_test_metric": row.pop("final_test_metric"),
           "final_test_loss": float(h["test_loss"].iloc[-1]),
           "evals_per_step": float(h["evals"].iloc[-1] / max(h["step"].iloc[-1], 1)),
           "sparsity": SPARSITY if variant == "pruned" else 0.0, "batch_size": BATCH_SIZE,
           "eval_every": TARGETS[task_name].eval_every,
           "accepted_steps": int(h["accepted"].sum()) if "accepted" in h else float("nan"),
           "acceptance": options.get("acceptance", "")}
    return {"races": [row], "curves": _curves(h, key)}


def step_cost(task_name: str, method: str, variant: str,
              hparams: Mapping[str, Any] | None) -> dict[str, float]:
    """The training steps of recipe ``method`` with ``hparams`` timed against a forward
    pass of the race network, in alternating rounds (:func:`fold_jax.bench.timing.interleaved`,
    about ``STEP_COST_S`` seconds), so slow drifts of a shared machine hit both alike.

    Both programs scan the same ``EVAL_EVERY`` minibatches of ``BATCH_SIZE`` training
    examples: one training step each from the initial state, outputting what
    :func:`fold_jax.learn.train.fit` keeps (:func:`fold_jax.learn.train.kept_info`, so work
    done only for the reported loss, such as an evosax peer's evaluation of its mean, is paid as
    in the races), or one loss evaluation at the initial params each (params fixed
    through the loop: XLA may hoist work that depends only on them, such as a binarized
    net's sign, out of it; the same for every method of a problem). Per-evaluation, not
    per-step: a direct-search step costs 12 or 2 evaluations as it nominates or
    confirms, so the window's time is divided by its evaluations.

    Returns:
        ``step_median_s`` / ``step_iqr_s`` (seconds per step in the window),
        ``forward_median_s`` / ``forward_iqr_s`` (per forward pass), ``cost_rounds``,
        and ``eval_forwards``: one loss evaluation's cost in forward passes (the window's
        median time / its evaluations / the forward pass's median time).
    """
    task, _, params, loss, m = _built(task_name, method, variant, hparams, 0)
    batch = min(BATCH_SIZE, task.n_train)
    idx = np.random.default_rng(0).integers(0, task.n_train, (EVAL_EVERY, batch))
    xs, ys = task.x_train[idx], task.y_train[idx]
    keys = jax.random.split(jax.random.key(0), EVAL_EVERY)
    state = m.init(params)

    def steps(state, keys, xs, ys):
        def one(s, a):
            s, info = m.step(s, *a)
            return s, train.kept_info(info)

        return jax.lax.scan(one, state, (keys, xs, ys))

    def forwards(params, xs, ys):
        return jax.lax.map(lambda b: loss(params, *b), (xs, ys))

    compiled, _ = timing.aot(steps, state, keys, xs, ys)
    evals = int(np.sum(np.asarray(compiled(state, keys, xs, ys)[1]["evals"], np.int64)))
    t_step, t_fwd = timing.interleaved(
        [(compiled, (state, keys, xs, ys)), (forwards, (params, xs, ys))],
        max_time_s=STEP_COST_S)
    return {"step_median_s": t_step.median_s / EVAL_EVERY,
            "step_iqr_s": t_step.iqr_s / EVAL_EVERY,
            "forward_median_s": t_fwd.median_s / EVAL_EVERY,
            "forward_iqr_s": t_fwd.iqr_s / EVAL_EVERY, "cost_rounds": t_step.rounds,
            "eval_forwards": t_step.median_s / max(evals, 1) / (t_fwd.median_s / EVAL_EVERY)}


def tune_and_race(task_name: str, method: str, variant: str, profile: str
                  ) -> dict[str, list[dict[str, Any]]]:
    """The whole protocol for one (task, recipe, variant) under ``profile`` (module
    docstring): ``{"tuning": trial rows, "races": one row per seed, "curves": rows}``.
    Inside :func:`fold_jax.bench.common.shared_compiles`, so the race seeds load the programs
    their selected trial compiled (their ``compile_s`` is the load time)."""
    p = PROFILE[check_profile(profile)]
    n, k = n_trials(profile, task_name), trial_seeds(profile, task_name)
    steps = step_budget(profile, task_name)
    with shared_compiles():  # the seeds load the selected trial's programs
        tuned = tuning.tune(
            method, n, lambda i, hp, seeds: trial(task_name, method, variant, i, hp,
                                                  p["budget_s"], steps, n, len(seeds)),
            trial_rank, lambda i, hp, seed: race(task_name, method, variant, seed,
                                                 p["budget_s"], steps, hp, i, n),
            race_seeds(profile, task_name), k)
    rows = [r | {"selected": r["trial"] == tuned.selected} for g in tuned.trials for r in g]
    out: dict[str, list[dict[str, Any]]] = {
        "tuning": rows, "races": [r for one in tuned.finals for r in one["races"]],
        "curves": [r for one in tuned.finals for r in one["curves"]]}
    cost = step_cost(task_name, method, variant, tuned.settings[tuned.selected])
    for row in out["races"]:  # the setting's cost, the same for every seed
        row |= cost | {"forwards_to_target": row["evals_to_target"] * cost["eval_forwards"]}
    return out


def _why_not(method: str, task_name: str, variant: str) -> str:
    """Why recipe ``method`` cannot run on (task, variant), or "" when it can."""
    recipe = recipes.get(method)
    if variant == "pruned" and not recipe.handles_mask:
        return "cannot keep a pruned net's mask"
    if variant == "conv" and task_name not in CONV_IMAGES:
        return f"its features are not an image (conv variant: {sorted(CONV_IMAGES)})"
    if recipe.max_params is not None:
        spec = TARGETS[task_name]
        task = tasks.get(task_name)
        widths = (task.n_features, *spec.widths[1:-1], task.n_outputs)
        net = _net(task_name, widths, "conv" if variant == "conv" else "dense")
        d = nets.count_params(jax.eval_shape(net.init, jax.random.key(0)))  # shapes only
        if d > recipe.max_params:
            return f"d = {d} > {recipe.max_params}: {recipe.why_limited}"
    return ""


def jobs(profile: str, selection: Selection | None = None) -> Iterator[Job]:
    """One job per (task, recipe, variant) of :func:`grid`: tune, select, race on the
    seeds. Combinations a recipe cannot run are printed with the reason and left out."""
    p = PROFILE[check_profile(profile)]
    for task_name, method, variant in grid(profile, selection):
        seeds = race_seeds(profile, task_name)
        runs = n_trials(profile, task_name) * trial_seeds(profile, task_name) + len(seeds)
        why = _why_not(method, task_name, variant)
        if why:
            print(f"races: {method} not run on {task_name}/{variant}: {why}")
            continue
        small = SMALL_TASK_PEER if recipes.get(method).library != "fold_jax" else SMALL_TASK
        steps = step_budget(profile, task_name)
        # RUN_COST is at 500 steps; runs that reach the target stop early, misses take
        # the whole budget: a longer budget weighs half its ratio more (an estimate)
        longer = 1.0 if steps <= 500 else (1.0 + steps / 500) / 2
        cost = (runs * RUN_COST.get(method, 4.0) * longer
                * (1.0 if task_name == "digits" else small) + STEP_COST_JOB_S)
        key = {"task": task_name, "method": method, "variant": variant,
               "seed": seeds[-1], "max_steps": steps, "budget_s": p["budget_s"]}
        yield Job(key, lambda a=(task_name, method, variant, profile): tune_and_race(*a),
                  f"{task_name}/{method}/{variant}", cost)


def calibrate(steps: int = 2000, seeds=(0, 1, 2), margin: float = 0.02) -> dict[str, float]:
    """Re-derive ``TARGETS`` from Adam on the validation split (module docstring);
    prints a table."""
    out = {}
    for name, spec in TARGETS.items():
        task = tasks.get(name)
        best = []
        for lr in (1e-3, 3e-3, 1e-2):
            finals = []
            for seed in seeds:
                apply, params, _, _ = _model(task, spec, "dense", seed)
                m = methods.gradient(task.loss_fn(apply), optax.adam(lr))
                r = train.fit(m, params, task, apply=apply, steps=steps, eval_every=100,
                              batch_size=min(BATCH_SIZE, task.n_train), seed=seed,
                              eval_split="val")
                finals.append(float(r.history[f"val_{spec.target_metric}"].max()))
            best.append((float(np.median(finals)), lr))
        value, lr = max(best)
        out[name] = math.floor((value - margin) * 100) / 100
        print(f"{name}: adam lr={lr:g} median best val {spec.target_metric}={value:.4f}"
              f" -> target {out[name]:.2f}")
    return out


if __name__ == "__main__":
    import sys

    if "--calibrate" in sys.argv:
        calibrate()
