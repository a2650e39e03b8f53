"""Control races: environment steps, seconds and loss evaluations to each gymnax task's
return threshold, for fold_jax's ES, evosax's strategies and rejax's PPO after the same
tuning (issue 33, items 3 and 6).

The protocol, fixed here before any number was read, per (task, recipe) in one job
(the tuning protocol of every suite, :func:`fold_jax.bench.tuning.tune`):

1. **Tune on validation episodes.** ``trials`` settings drawn from the recipe's space
   (:func:`fold_jax.learn.recipes.trials`; the ES recipes of both libraries share one sigma /
   Adam space, :func:`fold_jax.learn.suite_recipes.control_recipes`), each trained on one
   seed (``TUNING_SEED + i``) until its policy's mean return on the **validation**
   episodes (the task built with ``eval_seed=VAL_EVAL_SEED``) reaches the threshold.
   A trial's score is its environment steps to that threshold (inf for a miss).
2. **Select** the lowest score; among trials that all missed, the best validation
   return (ties: the lower trial).
3. **Race** the selected setting on ``seeds``, scored on the **held-out** evaluation
   episodes (``eval_seed=TEST_EVAL_SEED``, which tuning never saw): one ``control.csv``
   row per seed and its curve (``control_curves.csv``: return against env steps and
   seconds at every evaluation).

Environment steps (:mod:`fold_jax.learn.control`): an ES loss evaluation steps
``num_episodes`` episodes to the full horizon (``task.env_steps_per_eval``), so both ES
libraries are charged ``evals x env_steps_per_eval`` (evosax's strategies pay for the
evaluation of their mean too: 33 evaluations a step); PPO counts its transitions. On a
task whose episodes never end early (Pendulum) the two counts are the same thing; where
they end early (a failing CartPole or a solved Acrobot) the ES count exceeds the
transitions it used, so the comparison with PPO is conservative for ES.

Budgets: every method on a task gets the same environment-step budget
(``BUDGETS``, quick: ``QUICK_BUDGETS``): an ES runs ``budget // (evaluations a step x
env_steps_per_eval)`` whole steps, PPO ``budget`` env steps (whole iterations of 4,096).
ES methods are evaluated every ``ES_EVAL_EVERY`` steps (cartpole, acrobot: one step =
64,000 env steps; pendulum three steps = 76,800), PPO every ``PPO_EVAL_EVERY`` = 65,536
env steps (16 iterations): the same grid within 20%.

Memory tasks (issue 33, item 4): ``memory_chain`` and ``cartpole_po`` race a GRU policy
(:mod:`fold_jax.learn.policies`) whose state is carried through the whole episode; the ES
methods unroll every episode to its horizon, no backprop through time. rejax 0.1.3's
PPO has no recurrent policy (its actor-critic is a feedforward MLP), so PPO is not
raced there: the job writes one ``control.csv`` row per such (task, method) with
``not_run`` saying why (as for CMA-ES above its ``max_params``), nothing left out
silently.

Thresholds: the task's own (:mod:`fold_jax.learn.control`); Breakout-MinAtar has none
registered anywhere we could cite, so the suite sets ``SUITE_THRESHOLDS`` (a return of
10: a bar fixed here before any run, not a published one; a random policy scores about
1).

Generation speed (issue 33's seconds goal): ``speed`` jobs time one generation (one
training step: ask, every member's episodes, tell) of fold_jax's ``control/es`` and
``control/es_lowrank`` against evosax's ``control/evosax_open_es`` at the same
population (32; evosax's mean not evaluated) on CartPole with a wide MLP policy (d =
100,738) and, in full, the races' policy (d = 1,282), each with its compiled memory,
in alternating rounds (:func:`fold_jax.bench.timing.interleaved`): ``control_speed.csv``
rows. A speed job writes no ``control.csv`` row, so a resumed run times it again.

Profiles (what each covers, honestly):

- **quick** (mostly compilation: 4.4 minutes of CPU time, user, in run
  20261207T170922Z-4ce95b, which took 16.4 minutes of wall time on a 2-core VM at load
  average ~15 from other jobs; unloaded about 2.5-4.5 minutes, not measured): CartPole,
  Acrobot and Pendulum, each with ``control/es`` (fold_jax's antithetic ES with centered
  ranks), ``control/evosax_open_es`` and ``control/ppo``; 1 tuning trial (the space's
  first quasi-random draw, so hardly tuned), 2 race seeds and a budget of 196,608 env
  steps (fold_jax's ES 3 steps on CartPole and Acrobot, 7 on Pendulum; evosax's 2, 2 and 7,
  its mean's evaluation included; PPO 3 chunks of 65,536):
  too short to reach the thresholds but for luck. It says whether the machinery runs on
  every task and where the methods stand after a few generations; it is not the
  reference. Plus one speed job at d = 100,738 with 100-step episodes (2 a loss
  evaluation).
- **full**: CartPole, Acrobot, Pendulum, Breakout-MinAtar (conv policy) and the memory
  tasks memory_chain and cartpole_po (GRU policy); every control recipe (CMA-ES where
  d <= 4096, PPO where its feedforward policy fits the task); 8 tuning trials, 5 race
  seeds; speed jobs at d = 100,738 and d = 1,282 on full-length episodes.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from fold_jax import results
from fold_jax.bench import timing, tuning
from fold_jax.bench.common import Job, check_profile, shared_compiles
from fold_jax.checks import check_choice
from fold_jax.learn import nets, ppo, recipes, tasks, train

__all__ = ["SpeedConfig", "evals_per_step", "jobs", "not_run", "race", "run", "speed", "trial",
           "trial_rank", "tune_and_race", "why_not"]

FILE = "control"
KEY = results.key("control")
KEYS = {"control_curves": results.key("control_curves"),
        "control_tuning": results.key("control_tuning"),
        "control_speed": results.key("control_speed")}
DEFAULT_PROFILES = ("quick", "full")

VAL_EVAL_SEED = 1  # the validation episodes tuning scores on
TEST_EVAL_SEED = 0  # the held-out episodes races score on (the tasks' default)
PPO = "control/ppo"
PPO_EVAL_EVERY = 65_536  # env steps between PPO's evaluations (16 iterations of 4,096)
ES_EVAL_EVERY = {"cartpole": 1, "acrobot": 1, "pendulum": 3, "memory_chain": 5}
BUDGETS = {"cartpole": 2_560_000, "acrobot": 6_400_000, "pendulum": 15_360_000,
           # 100 ES steps of 32 x 4 episodes x 1,000 steps
           "breakout_minatar": 12_800_000,
           # 400 ES steps of 32 x 4 episodes x 6 steps
           "memory_chain": 307_200, "cartpole_po": 6_400_000}
QUICK_BUDGETS = {t: 196_608 for t in ("cartpole", "acrobot", "pendulum")}
SUITE_THRESHOLDS = {"breakout_minatar": 10.0}  # module docstring: our bar, not published
# seconds a run took in the quick profile on a shared 2-core CPU (compile included): the
# progress bar's estimate, [ES, PPO]
RUN_COST = (8.0, 20.0)
BUDGET_S = 1800.0  # wall-clock safety cap of one run (capped runs are counted in rows)

PROFILE: dict[str, dict[str, Any]] = {
    "quick": {"tasks": ("cartpole", "acrobot", "pendulum"), "trials": 1, "seeds": (0, 1),
              "methods": ("control/es", "control/evosax_open_es", PPO),
              "budgets": QUICK_BUDGETS},
    "full": {"tasks": ("cartpole", "acrobot", "pendulum", "breakout_minatar",
                       "memory_chain", "cartpole_po"), "trials": 8,
             "seeds": (0, 1, 2, 3, 4), "methods": recipes.names(suite="control"),
             "budgets": BUDGETS},
}


@functools.cache
def _task(task_name: str, eval_seed: int):
    threshold = SUITE_THRESHOLDS.get(task_name)
    return tasks.get(task_name, eval_seed=eval_seed,
                     **({} if threshold is None else {"threshold": threshold}))


def evals_per_step(method: str) -> int:
    """Loss evaluations one step of ES recipe ``method`` spends.

    Args:
        method: a control ES recipe's name.

    Returns:
        Its population (``num_directions`` or ``population_size``), plus one for
        evosax's evaluation of its mean (``fold_jax.estimators.peers.evosax_method``'s
        ``eval_mean=True``).
    """
    r = recipes.get(method)
    if "num_directions" in r.fixed:
        return int(r.fixed["num_directions"])
    return int(r.fixed["population_size"]) + (1 if r.library == "evosax" else 0)


def _to_target(curve, threshold: float) -> dict[str, float]:
    """First evaluation at or above ``threshold`` in ``curve`` (env_steps, elapsed_s,
    return[, evals]): its env steps, seconds and evaluations; inf for a miss."""
    hit = curve[curve["return"] >= threshold]
    if hit.empty:
        return {"env_steps_to_target": math.inf, "time_to_target_s": math.inf,
                "evals_to_target": math.inf if "evals" in curve else math.nan}
    first = hit.iloc[0]
    return {"env_steps_to_target": float(first["env_steps"]),
            "time_to_target_s": float(first["elapsed_s"]),
            "evals_to_target": float(first["evals"]) if "evals" in curve else math.nan}


def run(task_name: str, method: str, hparams: Mapping[str, Any] | None, seed: int,
        budget: int, eval_seed: int) -> tuple[dict[str, Any], Any]:
    """One training run of recipe ``method`` on ``task_name`` until the threshold on the
    episodes of ``eval_seed``, within ``budget`` env steps.

    Args:
        task_name: a control task (``BUDGETS``'s keys, or any ``tasks.get`` name).
        method: a control recipe's name.
        hparams: settings from its space (None: its defaults).
        seed: the initialisation's and training episodes' seed.
        budget: environment steps at most (an ES: whole steps up to it).
        eval_seed: the evaluation episodes' seed (``VAL_EVAL_SEED`` or
            ``TEST_EVAL_SEED``).

    Returns:
        ``(row, curve)``: the columns shared by tuning and race rows, and a frame with
        ``env_steps``, ``elapsed_s``, ``return``, ``episode_length`` (and ``evals`` for
        an ES) at every evaluation, step 0 included.
    """
    recipe = recipes.get(method)
    task = _task(task_name, eval_seed)
    hp = dict(hparams or {})
    if method == PPO:
        result = ppo.train(task, env_steps=budget, eval_every=PPO_EVAL_EVERY,
                           target=task.threshold, seed=seed, **hp)
        curve, compile_s, reached, skipped = result.curve, result.compile_s, result.reached, 0
        n_params, eval_env, capped = math.nan, PPO_EVAL_EVERY, False  # PPO has no cap
    else:
        per_step = evals_per_step(method) * task.env_steps_per_eval
        steps = budget // per_step
        if steps < 1:
            raise ValueError(f"budget={budget} env steps is less than one step of {method} on "
                             f"{task_name} ({per_step} env steps)")
        params = task.init(jax.random.key(seed))
        m = recipes.build(method, task.loss, hp)
        every = ES_EVAL_EVERY.get(task_name, 1)
        r = train.fit(m, params, task, steps=steps, eval_every=every, target=task.threshold,
                      seed=seed, budget_s=BUDGET_S)
        curve = r.history[["env_steps", "evals", "elapsed_s", "return", "episode_length"]]
        compile_s, reached, skipped = r.compile_s, r.reached, int(r.skipped)
        n_params, eval_env = nets.count_params(params), every * per_step
        capped = not reached and int(r.history["step"].iloc[-1]) < steps
    options = {**recipe.fixed, **recipe.defaults, **hp}
    row = {"library": recipe.library, "recipe": recipe.name,
           "hparams": recipes.hparams_json(options), "threshold": float(task.threshold),
           "reached": bool(reached), **_to_target(curve, task.threshold),
           "final_return": float(curve["return"].iloc[-1]),
           "best_return": float(curve["return"].max()),
           "env_steps_run": float(curve["env_steps"].iloc[-1]),
           "elapsed_s": float(curve["elapsed_s"].iloc[-1]), "compile_s": float(compile_s),
           "eval_env_steps": float(eval_env), "n_params": n_params,
           "skipped_steps": skipped, "capped": bool(capped), "eval_seed": eval_seed}
    return row, curve


def trial(task_name: str, method: str, index: int, hparams: Mapping[str, Any],
          seeds: list[int], budget: int, n_trials: int) -> list[dict[str, Any]]:
    """Tuning trial ``index`` on ``seeds``, scored on the validation episodes.

    Args:
        task_name: the control task.
        method: the recipe.
        index: the trial's index.
        hparams: its setting.
        seeds: its seeds.
        budget: environment steps per run.
        n_trials: trials in all.

    Returns:
        One ``control_tuning.csv`` row per seed, each with the trial's ``score``
        (median env steps to the threshold over its seeds, inf for a miss).
    """
    rows = []
    for seed in seeds:
        row, _ = run(task_name, method, hparams, seed, budget, VAL_EVAL_SEED)
        rows.append({"task": task_name, "method": method, "trial": index, "seed": seed,
                     "budget_env_steps": budget, "n_trials": n_trials, **row,
                     "selected": False})
    score = float(np.median([r["env_steps_to_target"] for r in rows]))
    return [r | {"score": score} for r in rows]


def trial_rank(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """How a trial ranks (lower is better).

    Args:
        rows: the trial's tuning rows.

    Returns:
        ``(score, -median best validation return)`` (a non-finite return ranks last).
    """
    best = [r["best_return"] if math.isfinite(r["best_return"]) else -math.inf for r in rows]
    return (rows[0]["score"], -float(np.median(best)))


def race(task_name: str, method: str, hparams: Mapping[str, Any], seed: int, budget: int,
         trial_index: int, n_trials: int, profile: str) -> dict[str, list[dict[str, Any]]]:
    """One race of the selected setting on the held-out episodes.

    Args:
        task_name: the control task.
        method: the recipe.
        hparams: the selected setting.
        seed: the race seed.
        budget: environment steps at most.
        trial_index: the selected trial.
        n_trials: trials drawn.
        profile: the profile (recorded in the row).

    Returns:
        ``{"control": [row], "control_curves": rows}``.
    """
    row, curve = run(task_name, method, hparams, seed, budget, TEST_EVAL_SEED)
    key = {"task": task_name, "method": method, "seed": seed, "budget_env_steps": budget}
    curves = [{**key, "library": row["library"], "env_steps": float(c["env_steps"]),
               "elapsed_s": float(c["elapsed_s"]), "return": float(c["return"]),
               "episode_length": float(c["episode_length"])}
              for c in curve.to_dict("records")]
    return {"control": [{**key, **row, "trial": trial_index, "n_trials": n_trials,
                         "profile": profile}], "control_curves": curves}


def tune_and_race(task_name: str, method: str, profile: str, trials: int | None = None,
                  seeds: tuple[int, ...] | None = None, budget: int | None = None
                  ) -> dict[str, list[dict[str, Any]]]:
    """The whole protocol for one (task, recipe) under ``profile`` (module docstring).

    Args:
        task_name: the control task.
        method: the recipe.
        profile: "quick" or "full".
        trials, seeds, budget: override the profile's (None: its own), for tests.

    Returns:
        ``{"control_tuning": rows, "control": rows, "control_curves": rows}``.
    """
    p = PROFILE[check_profile(profile)]
    n = p["trials"] if trials is None else trials
    seeds = p["seeds"] if seeds is None else seeds
    budget = p["budgets"][task_name] if budget is None else budget
    with shared_compiles():  # race seeds load the selected trial's programs
        tuned = tuning.tune(
            method, n, lambda i, hp, s: trial(task_name, method, i, hp, s, budget, n),
            trial_rank, lambda i, hp, seed: race(task_name, method, hp, seed, budget, i, n,
                                                 profile), seeds)
    rows = [r | {"selected": r["trial"] == tuned.selected} for g in tuned.trials for r in g]
    return {"control_tuning": rows,
            "control": [r for f in tuned.finals for r in f["control"]],
            "control_curves": [r for f in tuned.finals for r in f["control_curves"]]}


def why_not(method: str, task_name: str) -> str:
    """Why ``method`` cannot run on ``task_name``.

    Args:
        method: the recipe.
        task_name: the control task.

    Returns:
        The reason (its ``max_params`` below the policy's d; PPO on a task whose policy
        is recurrent), "" when it can run.
    """
    r = recipes.get(method)
    task = _task(task_name, TEST_EVAL_SEED)
    if method == PPO and task.policy.recurrent:
        return ("rejax 0.1.3's PPO has no recurrent policy (a feedforward actor-critic "
                "MLP), and this memory task needs one")
    if r.max_params is not None and task.n_params > r.max_params:
        return f"d = {task.n_params} > {r.max_params}: {r.why_limited}"
    return ""


def not_run(task_name: str, method: str, budget: int, seed: int, reason: str,
            profile: str) -> dict[str, list[dict[str, Any]]]:
    """The ``control.csv`` row saying that ``method`` was not raced on ``task_name``.

    Args:
        task_name: the control task.
        method: the recipe.
        budget: the task's env-step budget (the row's key).
        seed: the profile's last race seed (the row's key).
        reason: :func:`why_not`'s text.
        profile: the profile.

    Returns:
        ``{"control": [row]}``: not reached, its costs and returns NaN, ``not_run`` the
        reason.
    """
    recipe = recipes.get(method)
    task = _task(task_name, TEST_EVAL_SEED)
    nan = math.nan
    return {"control": [{"task": task_name, "method": method, "seed": seed,
                         "budget_env_steps": budget, "library": recipe.library,
                         "recipe": recipe.name, "threshold": float(task.threshold),
                         "reached": False, "env_steps_to_target": nan,
                         "time_to_target_s": nan, "evals_to_target": nan,
                         "final_return": nan, "n_params": float(task.n_params),
                         "not_run": reason, "profile": profile}]}


def jobs(profile: str) -> Iterator[Job]:
    """One job per (task, recipe) of ``profile`` (a recipe that cannot run on a task:
    a job writing its :func:`not_run` row, the reason printed too), then one speed job
    per ``SPEED`` configuration.

    Args:
        profile: "quick" or "full".

    Yields:
        The jobs.
    """
    p = PROFILE[check_profile(profile)]
    for task_name in p["tasks"]:
        check_choice(task_name, "control task", list(BUDGETS))
        budget = p["budgets"][task_name]
        for method in p["methods"]:
            key = {"task": task_name, "method": method, "seed": p["seeds"][-1],
                   "budget_env_steps": budget}
            why = why_not(method, task_name)
            if why:
                print(f"control: {method} not run on {task_name}: {why}")
                yield Job(key, lambda a=(task_name, method, budget, p["seeds"][-1], why,
                                         profile): not_run(*a),
                          f"{task_name}/{method} (not run)", 0.1)
                continue
            runs = p["trials"] + len(p["seeds"])
            scale = budget / QUICK_BUDGETS["cartpole"]  # misses run the whole budget
            yield Job(key, lambda a=(task_name, method, profile): tune_and_race(*a),
                      f"{task_name}/{method}", RUN_COST[method == PPO] * runs * scale)
    for config in SPEED[profile]:
        label = f"speed/{'x'.join(map(str, config.hidden))}/T={config.episode_length}"
        key = {"task": "cartpole", "method": label, "seed": -1, "budget_env_steps": -1}
        yield Job(key, lambda c=config: {"control_speed": speed(c, profile)}, label,
                  SPEED_COST)


# --------------------------------------------------------------------------- speed


class SpeedConfig(NamedTuple):
    """One configuration of the generation-speed rows: CartPole with an MLP policy of
    ``hidden`` widths, episodes of ``episode_length`` steps, ``num_episodes`` a
    loss evaluation (:func:`speed`)."""

    hidden: tuple[int, ...]
    episode_length: int
    num_episodes: int


SPEED_BASELINE = "control/evosax_open_es"
SPEED_METHODS = ("control/es", "control/es_lowrank", SPEED_BASELINE)
# (256, 384) widths: d = 100,738 (the speed goal's d >= 1e5); (32, 32): d = 1,282 (the
# races' policy, where both libraries spend their time in the same rollouts). quick
# shortens the episodes (a generation then takes about 0.1 s on a 2-core CPU)
SPEED = {"quick": (SpeedConfig((256, 384), 100, 2),),
         "full": (SpeedConfig((256, 384), 500, 4), SpeedConfig((32, 32), 500, 4))}
SPEED_S = {"quick": 3.0, "full": 10.0}  # seconds of alternating rounds per configuration
SPEED_COST = 25.0  # seconds a configuration took in the quick profile (three compiles)


def _generation(method: str, task) -> Any:
    """One training step of recipe ``method`` (its defaults; evosax's mean not
    evaluated, so both libraries spend the same population) as fit runs it:
    ``gen(state, key, episode_key) -> (state, kept info)``."""
    problem = {"eval_mean": False} if recipes.get(method).library == "evosax" else None
    m = recipes.build(method, task.loss, None, problem=problem)

    def gen(state, key, episode_key):
        state, info = m.step(state, key, episode_key)
        return state, train.kept_info(info)

    return m, gen


def speed(config: SpeedConfig, profile: str, methods: tuple[str, ...] = SPEED_METHODS,
          seconds: float | None = None) -> list[dict[str, Any]]:
    """Seconds and compiled memory of one generation of each of ``methods`` on CartPole
    with ``config``'s policy, timed in alternating rounds
    (:func:`fold_jax.bench.timing.interleaved`) so a shared machine's drift hits all alike.

    Args:
        config: the policy and episodes.
        profile: "quick" or "full" (the rounds' time budget, ``SPEED_S``).
        methods: recipes to time; the last is the baseline the ratios divide by.
        seconds: the alternating rounds' time budget (None: the profile's ``SPEED_S``).

    Returns:
        One ``control_speed.csv`` row per method.
    """
    task = tasks.get("cartpole", hidden=config.hidden, episode_length=config.episode_length,
                     num_episodes=config.num_episodes)
    params = task.init(jax.random.key(0))
    keys = (jax.random.key(1), jax.random.key(2))
    calls = []
    for method in methods:
        m, gen = _generation(method, task)
        calls.append((gen, (m.init(params), *keys)))
    budget = SPEED_S[check_profile(profile)] if seconds is None else seconds
    timed = timing.interleaved(calls, max_time_s=budget, min_rounds=3)
    base = timed[-1]
    d = nets.count_params(params)
    rows = []
    for method, t in zip(methods, timed, strict=True):
        pop = evals_per_step(method) - (recipes.get(method).library == "evosax")
        rows.append({"task": "cartpole", "method": method,
                     "library": recipes.get(method).library, "n_params": d,
                     "hidden": json.dumps(list(config.hidden)), "population": pop,
                     "episode_length": config.episode_length,
                     "num_episodes": config.num_episodes,
                     "env_steps_per_gen": pop * task.env_steps_per_eval,
                     "compile_s": t.compile_s, "gen_median_s": t.median_s,
                     "gen_iqr_s": t.iqr_s, "rounds": t.rounds, "mem_bytes": t.mem_bytes,
                     "baseline": methods[-1], "baseline_median_s": base.median_s,
                     "baseline_mem_bytes": base.mem_bytes,
                     "seconds_ratio": t.median_s / base.median_s, "profile": profile})
    return rows
