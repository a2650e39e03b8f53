"""Time-to-target races (AlgoPerf style): how long, how many steps and how many loss
evaluations each method needs to reach a fixed test target, per task and variant.

Every race trains through :func:`fold_jax.train.fit` (timed steps, untimed evaluation
every ``EVAL_EVERY`` steps, compile timed apart) for at most ``max_steps`` steps (a
deterministic budget: the same seed gives the same rows on any machine, timing columns
aside) and stops at the target. ``budget_s`` is only a generous wall-clock safety cap;
``capped`` records whether it cut the race short (then the row depends on machine
speed). A miss counts as infinity (steps/evals/time_to_target = inf).

Targets (``TARGETS``) are fixed per task from the tuned gradient baseline: Adam
(learning rate best of {1e-3, 3e-3, 1e-2}) trained for 2000 steps, batch 128, on the
race network, 3 seeds (``python -m bench.suite_races --calibrate`` reprints them). The
target is the baseline's median best test metric minus a margin (2 points of accuracy /
micro-F1, rounded down to 0.01), so the baseline reaches it reliably well inside
the budget while it still demands a well-trained model; forward-only methods either
get there or miss. Targets are constants on purpose: changing them invalidates every
stored race, so do it only together with the results files.

A job returns ``{"races": [row], "curves": rows}`` (see :mod:`bench.common`); curves
rows hold one value per (evaluation, split, metric).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from bench.common import Job, check_profile
from fold_jax import heads, methods, nets, results, tasks, train

FILE = "races"
KEY = ["task", "method", "variant", "seed", "max_steps", "budget_s", *results.MACHINE_KEY]
KEYS = {"curves": ["task", "method", "variant", "seed", "max_steps", "budget_s", "step", "split",
                   "metric", *results.MACHINE_KEY]}

EVAL_EVERY = 25
BATCH_SIZE = 128


class Race(NamedTuple):
    widths: tuple[int, ...]  # hidden widths used; first/last are set from the task
    target_metric: str
    target: float
    adam_lr: float  # the tuned baseline's learning rate


# Calibrated with `python -m bench.suite_races --calibrate` (2026-11-21, CPU, jax 0.10.2):
# median best test metric of tuned Adam: digits 0.9750 (lr 1e-2), breast_cancer 0.9737
# (3e-3), digit_attributes micro-F1 0.9760 (1e-3), spirals 0.9950 (1e-2).
TARGETS: dict[str, Race] = {
    # digits races the MLP (64-128-128-10), so its zeroth-order rows answer
    # "time- and evaluations-to-95% beside Adam's" on that network
    "digits": Race((64, 128, 128, 10), "accuracy", 0.95, 1e-2),
    "breast_cancer": Race((30, 16, 1), "accuracy", 0.95, 3e-3),
    "digit_attributes": Race((64, 32, 4), "micro_f1", 0.95, 1e-3),
    "spirals": Race((2, 32, 32, 1), "accuracy", 0.97, 1e-2),
}

ALL_METHODS = ("adam", "sgd", "zo_gaussian", "zo_rademacher", "zo_sphere", "zo_lowrank",
               "zo_lowrank_ranked", "forward_gradient", "gld", "rso", "one_plus_one")
BINARIZED_SIGMA = 0.05
VARIANTS = ("dense", "binarized", "pruned")
# Each profile: seeds, step budget (max_steps), wall-clock safety cap (budget_s) and a
# list of (tasks, methods, variants) grids. quick: every method on digits, a
# representative subset on the other tasks, and the variants on digits; 500 steps is
# about what the former 2 s budget gave the zeroth-order methods (~3.7 ms/step on a
# loaded 2-core CPU), and compile dominates each race's wall time.
PROFILE = {
    "quick": dict(seeds=[0], max_steps=500, budget_s=60.0, grids=[
        (["digits"], ALL_METHODS, ["dense"]),
        (["breast_cancer", "digit_attributes", "spirals"],
         ["adam", "zo_gaussian", "forward_gradient", "gld"], ["dense"]),
        (["digits"], ["adam", "zo_lowrank_ranked"], ["binarized", "pruned"]),
    ]),
    "full": dict(seeds=[0, 1, 2], max_steps=3000, budget_s=300.0, grids=[
        (list(TARGETS), ALL_METHODS, VARIANTS),
    ]),
}
SPARSITY = 0.5  # pruned variant: fraction of weights removed (0.8 caps Adam at ~0.90 on digits)


# ------------------------------------------------------------------------ methods


def _zo(noise: str, rank: int | None = None, num_directions: int = 32, lr: float = 1e-2,
        sigma: float = 1e-3, **extra):
    def make(loss, tx_wrap, mask, race=None, variant="dense"):
        # sign(w) of a binarized net only moves when latents cross 0: sigma 1e-3 almost
        # never flips one, 0.05 does (fold_jax.variants / suite_variants measure it)
        options = dict(num_directions=num_directions, noise=noise, rank=rank, **extra,
                       sigma=BINARIZED_SIGMA if variant == "binarized" else sigma)
        if mask is not None:
            options["mask"] = mask
        return methods.zeroth_order(loss, tx_wrap(optax.adam(lr)), **options)

    return make


def _forward_gradient(num_directions: int = 8, lr: float = 1e-2):
    def make(loss, tx_wrap, mask, race=None, variant="dense"):
        return methods.forward_gradient(loss, tx_wrap(optax.adam(lr)), None, num_directions)

    return make


def _gradient(opt: str, lr: float | None):
    def make(loss, tx_wrap, mask, race=None, variant="dense"):
        rate = race.adam_lr if lr is None else lr
        return methods.gradient(loss, tx_wrap(methods.optimizer(opt, rate)))

    return make


def _search(name: str, acceptance: str = "reevaluate", **options):
    """A direct-search builder with its acceptance rule pinned (fold_jax.search): the
    race row records it (``acceptance``), so a change of the library default cannot
    silently change what a stored race measured. "reevaluate" moves only to a
    candidate that also beats the current point on the next 2 minibatches; "batch"
    (each step's best on its own minibatch) drifts upward on minibatches."""

    def make(loss, tx_wrap, mask, race=None, variant="dense"):
        from fold_jax import search

        return getattr(search, name)(loss, acceptance=acceptance, **options,
                                     **({} if mask is None else {"mask": mask}))

    make.acceptance = acceptance
    return make


# name -> (builder(loss, tx_wrap, zo_mask, race) -> Method, module it needs, handles pruning).
# Not tuned per task (the gradient baseline is): zeroth-order estimators use 32 directions
# (16 antithetic pairs), sigma 1e-3 (0.05 on binarized nets) and Adam at 1e-2, except
# zo_lowrank_ranked, the recipe tuned on digits; forward gradient 8 jvp directions and
# Adam at 1e-2; "sgd" is SGD with momentum 0.9 at 0.1; search methods their defaults with
# acceptance="reevaluate" pinned (the row's ``acceptance``; "" for methods without one).
# Pruned nets keep their mask through ``tx_wrap`` (optax) or ``mask=`` (search, ZO).
METHODS: dict[str, tuple[Callable, str, bool]] = {
    "adam": (_gradient("adam", None), "fold_jax.methods", True),
    "sgd": (_gradient("momentum", 0.1), "fold_jax.methods", True),
    "zo_gaussian": (_zo("gaussian"), "fold_jax.zo", True),
    "zo_rademacher": (_zo("rademacher"), "fold_jax.zo", True),
    "zo_sphere": (_zo("sphere"), "fold_jax.zo", True),
    "zo_lowrank": (_zo("gaussian", rank=1), "fold_jax.zo", True),
    # the tuned recipe (README): 128 evaluations, rank 4, centered ranks, Adam 3e-3
    "zo_lowrank_ranked": (_zo("gaussian", rank=4, num_directions=128, lr=3e-3, sigma=1e-2,
                              shaping="centered_ranks", chunk_size=16), "fold_jax.zo", True),
    "forward_gradient": (_forward_gradient(), "fold_jax.zo", True),
    "gld": (_search("gld", acceptance="reevaluate"), "fold_jax.search", True),
    "rso": (_search("rso", acceptance="reevaluate"), "fold_jax.search", True),
    "one_plus_one": (_search("one_plus_one", acceptance="reevaluate"), "fold_jax.search", True),
}


def _available(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------- one race


def _model(task, race: Race, variant: str, seed: int):
    """(apply, params, tx_wrap, zo_mask) of the race network in ``variant``."""
    widths = (task.n_features, *race.widths[1:-1], task.n_outputs)
    key = jax.random.key(seed)
    if variant == "dense":
        net = nets.mlp(widths, "relu")
        return net.apply, net.init(key), (lambda tx: tx), None
    from fold_jax import variants

    v = variants.make(variant, widths, "relu", key=key,
                      sparsity=SPARSITY if variant == "pruned" else None)
    return v.net.apply, v.params, v.wrap_tx, v.zo_mask


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


def race(task_name: str, method: str, variant: str, seed: int, budget_s: float,
         max_steps: int | None = None) -> dict[str, list[dict[str, Any]]]:
    """Run one race of at most ``max_steps`` steps (default: the quick profile's) with
    ``budget_s`` as wall-clock safety cap; ``{"races": [row], "curves": rows}``."""
    if max_steps is None:
        max_steps = PROFILE["quick"]["max_steps"]
    spec = TARGETS[task_name]
    task = tasks.get(task_name)
    apply, params, tx_wrap, mask = _model(task, spec, variant, seed)
    build, _, _ = METHODS[method]
    m = build(task.loss_fn(apply), tx_wrap, mask, spec, variant)
    result = train.fit(m, params, task, apply=apply, steps=max_steps, budget_s=budget_s,
                       batch_size=min(BATCH_SIZE, task.n_train), eval_every=EVAL_EVERY,
                       target=spec.target, target_metric=spec.target_metric, seed=seed)
    h = result.history
    column = f"test_{spec.target_metric}"
    key = {"task": task_name, "method": method, "variant": variant, "seed": seed,
           "max_steps": max_steps, "budget_s": budget_s}
    steps_run = int(h["step"].iloc[-1])
    row = {**key, "target_metric": spec.target_metric, "target": spec.target,
           "reached": bool(result.reached), **_to_target(h, column, spec.target,
                                                         spec.target_metric),
           "compile_s": result.compile_s, "final_test_metric": float(h[column].iloc[-1]),
           "n_params": nets.count_params(params), "steps_run": steps_run,
           "capped": bool(not result.reached and steps_run < max_steps),
           "evals_run": int(h["evals"].iloc[-1]), "elapsed_s": float(h["elapsed_s"].iloc[-1]),
           "final_test_loss": float(h["test_loss"].iloc[-1]),
           "evals_per_step": float(h["evals"].iloc[-1] / max(h["step"].iloc[-1], 1)),
           "sparsity": SPARSITY if variant == "pruned" else 0.0, "batch_size": BATCH_SIZE,
           "eval_every": EVAL_EVERY, "skipped_steps": int(result.skipped),
           "accepted_steps": int(h["accepted"].sum()) if "accepted" in h else float("nan"),
           "acceptance": getattr(build, "acceptance", "")}
    return {"races": [row], "curves": _curves(h, key)}


def jobs(profile: str) -> Iterator[Job]:
    """The races of ``profile`` (pruned x methods that cannot keep a mask are left out)."""
    p = PROFILE[check_profile(profile)]
    grid = [(t, m, v) for tasks_, methods_, variants_ in p["grids"] for t in tasks_
            for m in methods_ for v in variants_ if v != "pruned" or METHODS[m][2]]
    missing = sorted({METHODS[m][1] for _, m, _ in grid if not _available(METHODS[m][1])})
    if any(v != "dense" for *_, v in grid) and not _available("fold_jax.variants"):
        missing.append("fold_jax.variants")
    if missing:
        print(f"races: skipping jobs that need the missing modules {missing}")
    cost = 4.0  # compile + steps + evaluation, seconds (quick, 2-core CPU)
    for task_name, method, variant in grid:
        if METHODS[method][1] in missing or (variant != "dense"
                                             and "fold_jax.variants" in missing):
            continue
        for seed in p["seeds"]:
            key = {"task": task_name, "method": method, "variant": variant, "seed": seed,
                   "max_steps": p["max_steps"], "budget_s": p["budget_s"]}
            yield Job(key, lambda a=(task_name, method, variant, seed, p["budget_s"],
                                     p["max_steps"]): race(*a),
                      f"{task_name}/{method}/{variant}/s{seed}", cost)


def calibrate(steps: int = 2000, seeds=(0, 1, 2), margin: float = 0.02) -> dict[str, float]:
    """Re-derive ``TARGETS`` from tuned Adam (see module docstring); prints a table."""
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
                              batch_size=min(BATCH_SIZE, task.n_train), seed=seed)
                finals.append(float(r.history[f"test_{spec.target_metric}"].max()))
            best.append((float(np.median(finals)), lr))
        value, lr = max(best)
        out[name] = math.floor((value - margin) * 100) / 100
        print(f"{name}: tuned adam lr={lr:g} median best test {spec.target_metric}={value:.4f}"
              f" -> target {out[name]:.2f}")
    return out


if __name__ == "__main__":
    import sys

    if "--calibrate" in sys.argv:
        calibrate()
