"""The control suite's results files (issue 33): ``control`` (a race row per seed),
``control_curves``, ``control_tuning`` and ``control_speed`` (one generation timed
against evosax's), as :class:`~fold_jax.results.columns.Schema`; collected in
:data:`fold_jax.results.files.SCHEMA`."""

from __future__ import annotations

from fold_jax.results.columns import MACHINE_KEY, Schema, col, timing_columns

__all__ = ["SCHEMAS"]

_CONTROL_KEY = ("task", "method", "seed", "budget_env_steps", *MACHINE_KEY)
_CTRL_TUNE = "as control.csv"
_CONTROL = Schema(
    "control", _CONTROL_KEY,
    "one control race: one method on one gymnax task and seed, trained until its policy's "
    "mean return on the held-out evaluation episodes reaches the task's threshold "
    "(fold_jax/bench/suites/control.py)",
    (
        col("task", "str", "", "the control task (fold_jax.tasks name: cartpole, ...)", True),
        col("method", "str", "", "the method (recipe registry name, control/...)", True),
        col("seed", "int", "", "seed of the initialisation and the training episodes", True),
        col("budget_env_steps", "int", "env steps", "environment-step budget of the task "
           "(the same for every method; an ES runs whole steps up to it)", True),
        col("library", "str", "", "who implements the method: fold_jax, evosax or rejax",
           True),
        col("recipe", "str", "", "the recipe the method's settings come from"),
        col("hparams", "str", "JSON", "JSON object of every setting of the run"),
        col("trial", "int", "", "the selected tuning trial (control_tuning.csv)"),
        col("n_trials", "int", "count", "tuning trials the method was given"),
        col("threshold", "num", "return", "the return the race calls solved", True),
        col("reached", "bool", "", "whether the held-out return reached the threshold",
           True),
        col("env_steps_to_target", "num", "env steps", "environment steps until the first "
           "evaluation at the threshold (ES: loss evaluations x episodes x horizon, every "
           "episode stepped to the horizon; PPO: its transitions); inf when missed", True),
        col("evals_to_target", "num", "evaluations", "loss evaluations until then (ES; NaN "
           "for PPO, which has none); inf when missed"),
        col("time_to_target_s", "num", "s", "timed training seconds until then (compile "
           "and evaluation excluded); inf when missed", True),
        col("final_return", "num", "return", "mean return on the held-out evaluation "
           "episodes at the last evaluation", True),
        col("best_return", "num", "return", "best held-out mean return over the evaluations"),
        col("env_steps_run", "num", "env steps", "environment steps trained in all"),
        col("elapsed_s", "num", "s", "timed training seconds in all"),
        col("compile_s", "num", "s", "compile (and warm-up) seconds, off the clock"),
        col("eval_env_steps", "num", "env steps", "environment steps between evaluations "
           "(the resolution of env_steps_to_target)"),
        col("n_params", "num", "count", "parameters of the policy (PPO: its own actor-critic "
           "is not counted, NaN)"),
        col("skipped_steps", "int", "steps", "ES steps whose update was skipped (non-finite "
           "estimate); 0 for PPO"),
        col("capped", "bool", "", "whether the wall-clock safety cap (BUDGET_S) cut an ES run "
           "short of its budget (then the row depends on machine speed)"),
        col("eval_seed", "int", "", "seed of the held-out evaluation episodes (tuning used "
           "another: control_tuning.csv)"),
        col("profile", "str", "", "benchmark profile that made the row: quick or full"),
        col("not_run", "str", "", "why the method was not raced on the task (CMA-ES above "
           "its max_params, PPO on a memory task: rejax has no recurrent policy); then its "
           "costs and returns are NaN; empty for a race"),
    ),
)

_CONTROL_CURVES = Schema(
    "control_curves", (*_CONTROL_KEY[:4], "env_steps", *MACHINE_KEY),
    "one evaluation of a control race: held-out return against environment steps and "
    "seconds (key as control.csv plus env_steps)",
    (
        col("task", "str", "", _CTRL_TUNE, True),
        col("method", "str", "", _CTRL_TUNE, True),
        col("seed", "int", "", _CTRL_TUNE, True),
        col("budget_env_steps", "int", "env steps", _CTRL_TUNE, True),
        col("library", "str", "", _CTRL_TUNE, True),
        col("env_steps", "num", "env steps", "environment steps done at the evaluation", True),
        col("elapsed_s", "num", "s", "timed training seconds done at the evaluation", True),
        col("return", "num", "return", "mean return on the held-out evaluation episodes", True),
        col("episode_length", "num", "steps", "mean held-out episode length (steps until "
           "done)"),
    ),
)

_CONTROL_TUNING = Schema(
    "control_tuning", ("task", "method", "trial", "seed", "budget_env_steps", *MACHINE_KEY),
    "one tuning trial of a control method on one seed, scored on validation episodes "
    "(evaluation seed apart from the races')",
    (
        col("task", "str", "", _CTRL_TUNE, True),
        col("method", "str", "", _CTRL_TUNE, True),
        col("trial", "int", "", "the trial's index in the method's quasi-random sequence", True),
        col("seed", "int", "", "1000 + trial + j n_trials for the trial's j-th seed", True),
        col("budget_env_steps", "int", "env steps", _CTRL_TUNE, True),
        col("library", "str", "", _CTRL_TUNE),
        col("recipe", "str", "", _CTRL_TUNE),
        col("hparams", "str", "JSON", "JSON object of the trial's settings"),
        col("n_trials", "int", "count", "trials the method was given"),
        col("threshold", "num", "return", _CTRL_TUNE),
        col("reached", "bool", "", "whether the validation return reached the threshold"),
        col("env_steps_to_target", "num", "env steps", "as control.csv, on validation "
           "episodes; inf when missed"),
        col("time_to_target_s", "num", "s", "as control.csv, on validation episodes"),
        col("best_return", "num", "return", "best validation mean return"),
        col("final_return", "num", "return", "validation mean return at the last evaluation"),
        col("score", "num", "env steps", "the trial's ranking score on each of its rows: the "
           "median over its seeds of env_steps_to_target (lower is better)"),
        col("selected", "bool", "", "whether this trial is the one raced (control.csv)"),
        col("eval_seed", "int", "", "seed of the validation episodes"),
        col("elapsed_s", "num", "s", "timed training seconds in all"),
        col("compile_s", "num", "s", _CTRL_TUNE),
        col("evals_to_target", "num", "evaluations", _CTRL_TUNE),
        col("env_steps_run", "num", "env steps", _CTRL_TUNE),
        col("eval_env_steps", "num", "env steps", _CTRL_TUNE),
        col("n_params", "num", "count", _CTRL_TUNE),
        col("skipped_steps", "int", "steps", _CTRL_TUNE),
        col("capped", "bool", "", _CTRL_TUNE),
    ),
)

_CONTROL_SPEED = Schema(
    "control_speed", ("task", "method", "n_params", "population", "episode_length",
                      "num_episodes", *MACHINE_KEY),
    "one ES generation (a training step: ask, every member's episodes, tell) of one method "
    "on a control task's policy, timed in alternating rounds with the other methods of its "
    "configuration (fold_jax/bench/suites/control.py, speed)",
    (
        col("task", "str", "", _CTRL_TUNE, True),
        col("method", "str", "", _CTRL_TUNE, True),
        col("library", "str", "", _CTRL_TUNE, True),
        col("n_params", "num", "count", "parameters d of the policy", True),
        col("hidden", "str", "", "the policy MLP's hidden widths (JSON)"),
        col("population", "num", "evaluations", "loss evaluations a generation (evosax: its "
           "population, its mean not evaluated here)", True),
        col("episode_length", "num", "steps", "horizon of each episode", True),
        col("num_episodes", "num", "episodes", "episodes per loss evaluation", True),
        col("env_steps_per_gen", "num", "env steps", "population x num_episodes x "
           "episode_length"),
        col("compile_s", "num", "s", "ahead-of-time compile seconds of the generation"),
        *timing_columns("gen", "one generation (alternating rounds)", True),
        col("rounds", "num", "count", "timed rounds behind the median"),
        col("mem_bytes", "num", "bytes", "compiled memory of the generation: argument + "
           "output + temp - alias bytes (NaN where the backend gives none)", True),
        col("baseline", "str", "", "the method timed in the same rounds that the ratio "
           "divides by (evosax's Open_ES)", True),
        col("baseline_median_s", "num", "s", "its median seconds per generation"),
        col("baseline_mem_bytes", "num", "bytes", "its compiled memory"),
        col("seconds_ratio", "num", "ratio", "gen_median_s / baseline_median_s (< 1: faster "
           "than the baseline)", True),
        col("profile", "str", "", "benchmark profile that made the row: quick or full"),
    ),
)


SCHEMAS = (_CONTROL, _CONTROL_CURVES, _CONTROL_TUNING, _CONTROL_SPEED)
