"""Report section for results/tuning.csv beside races.csv: the tuning protocol's trials
and fold_jax against its peers (evosax) after the same tuning.

Tuning table: per (task, variant, recipe) the number of trials, how many reached the
validation target, the selected trial's hyperparameters (JSON) and its validation
score (evaluations to the validation target). Peers table: per (task, variant), the
best fold_jax forward-only recipe and the best evosax strategy, each by the median over
seeds of its test evaluations-to-target (then time), with 95% bootstrap intervals, and
the three ratios the benchmark's goal reads (evosax / fold_jax of evaluations, of the
races' clocks and of forward passes to target: > 1 means fold_jax needed fewer).
Recipes that could not run on a task (a recipe's ``max_params``) are listed with the
reason from :mod:`fold_jax.recipes`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from fold_jax import heads, recipes
from fold_jax.report._common import fmt, interval_text, table
from fold_jax.report.races import summary

__all__ = ["best_by_library", "peers", "section", "trials_table"]

FORWARD_ONLY = "fold_jax"  # the library of fold_jax's forward-only recipes
PEER = "evosax"


def trials_table(tuning: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, variant, method): trials, reached, selected trial and setting.

    Args:
        tuning: the tuning.csv rows of one run (one per trial and seed; rows without
            ``trial_seeds`` are one seed each).

    Returns:
        The table (task, variant, method, library, trials, seeds per trial, reached val
        target (trials whose median over their seeds reached it), selected trial,
        selected hparams, val evals to target (its score), best val metric (median over
        its seeds)).
    """
    rows = []
    for (task, variant, method), g in tuning.groupby(["task", "variant", "method"]):
        chosen = g[g["selected"].astype(bool)]
        c = chosen.iloc[0] if len(chosen) else None
        scores = g.groupby("trial")["score"].first()
        worst = -math.inf if heads.higher_is_better(str(g["target_metric"].iloc[0])) \
            else math.inf  # a diverged seed's metric, as select() ranks it
        rows.append({
            "task": task, "variant": variant, "method": method,
            "library": g["library"].iloc[0], "trials": len(scores),
            "seeds per trial": int(g.groupby("trial").size().max()),
            "reached val target": int(np.isfinite(scores.to_numpy(float)).sum()),
            "selected trial": "-" if c is None else int(c["trial"]),
            "selected hparams": "-" if c is None else str(c["hparams"]),
            "val evals to target": math.nan if c is None else float(c["score"]),
            "best val metric": math.nan if c is None else float(np.median(
                chosen["best_val_metric"].astype(float).fillna(worst)))})
    return pd.DataFrame(rows)


def best_by_library(s: pd.DataFrame, races: pd.DataFrame, library: str) -> pd.DataFrame:
    """Per (task, variant): the ``library``'s recipe with the lowest median evaluations
    to target (ties: lower median time), from a :func:`fold_jax.report.races.summary`.

    Args:
        s: the races summary.
        races: the races rows (for each method's library).
        library: "fold_jax", "evosax" or "optax".

    Returns:
        One summary row per (task, variant) where the library ran.
    """
    libs = races.drop_duplicates("method").set_index("method")["library"]
    mine = s[s["method"].map(libs) == library]
    if mine.empty:
        return mine
    mine = mine.sort_values(["task", "variant", "evals", "time (s)"])
    return mine.groupby(["task", "variant"], as_index=False).head(1)


def peers(races: pd.DataFrame) -> pd.DataFrame:
    """Best fold_jax forward-only recipe vs best evosax strategy per (task, variant).

    Args:
        races: the races rows (with ``library``).

    Returns:
        One row per problem where both ran: the evosax strategies raced there, each
        side's method, evals and time with 95% intervals and forwards (time to target
        in forward passes, from step costs timed in alternating rounds), and ``evals
        evosax / fold_jax``, ``time evosax / fold_jax``, ``forwards evosax / fold_jax``.
    """
    if "library" not in races.columns:
        return pd.DataFrame()
    s = summary(races)
    ours = best_by_library(s, races, FORWARD_ONLY).set_index(["task", "variant"])
    theirs = best_by_library(s, races, PEER).set_index(["task", "variant"])
    raced = races.groupby(["task", "variant", "library"])["method"].unique()
    rows = []
    for problem in ours.index.intersection(theirs.index):
        a, b = ours.loc[problem], theirs.loc[problem]
        row = {"task": problem[0], "variant": problem[1],
               "evosax strategies raced": ", ".join(sorted(raced[(*problem, PEER)]))}
        for side, r in (("fold_jax", a), ("evosax", b)):
            row |= {f"{side} method": r["method"],
                    f"{side} reached": r["reached"],
                    f"{side} evals": r["evals"],
                    f"{side} evals 95% CI": interval_text(r["evals lo"], r["evals hi"],
                                                          r["seeds"]),
                    f"{side} time (s)": r["time (s)"],
                    f"{side} time 95% CI": interval_text(r["time (s) lo"], r["time (s) hi"],
                                                         r["seeds"]),
                    f"{side} forwards": r["forwards"]}
        with np.errstate(divide="ignore", invalid="ignore"):
            row["evals evosax / fold_jax"] = float(np.float64(b["evals"]) / a["evals"])
            row["time evosax / fold_jax"] = float(np.float64(b["time (s)"]) / a["time (s)"])
            row["forwards evosax / fold_jax"] = float(np.float64(b["forwards"]) / a["forwards"])
        rows.append(row)
    return pd.DataFrame(rows)


def _goal(p: pd.DataFrame) -> str:
    """One sentence per problem: whether fold_jax met the goal (fewer evaluations, and
    >= 2x sooner in seconds than the best evosax strategy both by the races' clocks and,
    where both sides recorded it, in forward passes to target), and when the verdict
    rests on a median that is a miss (the strategy reached the target on under half the
    seeds), which side missed."""
    lines = []
    for r in p.to_dict("records"):
        e, t = r["evals evosax / fold_jax"], r["time evosax / fold_jax"]
        f = r.get("forwards evosax / fold_jax", math.nan)
        met = e > 1 and t >= 2 and (math.isnan(f) or f >= 2)
        why = ""
        if not math.isfinite(float(r["evosax evals"])):
            why = (f" only through the peer's misses: {r['evosax method']} reached the "
                   f"target on {r['evosax reached']} seeds, so its median is a miss" if met
                   else "")
        elif not math.isfinite(float(r["fold_jax evals"])):
            why = (f": {r['fold_jax method']} reached the target on {r['fold_jax reached']} "
                   f"seeds, so its median is a miss")
        seconds = (f"{fmt(t)}x the seconds by the races' clocks and {fmt(f)}x the forward "
                   f"passes to target" if not math.isnan(f) else
                   f"{fmt(t)}x the seconds by the races' clocks (forward passes to target "
                   f"not comparable: not recorded on both sides, or both missed; clocks "
                   f"only)")
        lines.append(f"- {r['task']}/{r['variant']}: {r['fold_jax method']} vs "
                     f"{r['evosax method']}: evosax needs {fmt(e)}x the evaluations and "
                     f"{seconds}; goal (> 1x the evaluations, >= 2x in seconds) "
                     f"{'met' if met else 'not met'}{why}.")
    return "\n".join(lines) + "\n" if lines else ""


def _not_run(races: pd.DataFrame) -> str:
    """Recipes with a parameter limit, and the raced tasks above it."""
    sizes = races.groupby("task")["n_params"].max()
    lines = []
    for r in recipes.RECIPES.values():
        if r.max_params is None:
            continue
        above = [f"{t} (d = {int(d)})" for t, d in sizes.items() if d > r.max_params]
        if above:
            lines.append(f"- `{r.name}` not run on {', '.join(above)}: {r.why_limited}.")
    return "\n".join(lines) + "\n" if lines else ""


def section(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """Markdown for the tuning and peers section; "" without tuning rows.

    Args:
        frames: file stem -> DataFrame ("tuning" and "races" are used).
        fig_dir: the folder figures are saved in (unused: tables only).

    Returns:
        The section's markdown.
    """
    tuning = frames.get("tuning")
    if tuning is None or tuning.empty:
        return ""
    races = frames.get("races")
    n = sorted(set(tuning["n_trials"].astype(int)))
    out = [f"Every recipe, Adam included, gets the same tuning budget: "
           f"{'/'.join(map(str, n))} trials drawn from its search space with a scrambled "
           f"Halton sequence (`fold_jax.recipes.trials`), each trained on its own seeds "
           f"(`seeds per trial`, the same for every recipe on a task) and scored on the "
           f"**validation** split only (the median over its seeds of the evaluations to the "
           f"validation target; a miss ranks by its median best validation metric). The selected "
           f"trial reruns on the race seeds, which alone read the test split. Search spaces: "
           f"`fold_jax.recipes.RECIPES`.\n",
           table(trials_table(tuning))]
    if races is not None and not races.empty and "library" in races.columns:
        races = races[races["run_id"].isin(set(tuning["run_id"]))] \
            if "run_id" in races.columns and "run_id" in tuning.columns else races
        p = peers(races)
        if len(p):
            out += ["### fold_jax vs evosax (same tuning, same loop, same batches)\n",
                    "Per problem, the best fold_jax forward-only recipe and the best evosax "
                    "strategy by median test evaluations to target (ties: time). Goal of the "
                    "suite: fewer evaluations than the best evosax strategy and >= 2x sooner "
                    "in seconds. Seconds are read twice and the goal needs both: the races' "
                    "own clocks (`time`, jobs run minutes apart) and `forwards`, the "
                    "evaluations to target times one evaluation's cost in forward passes of "
                    "a minibatch, timed against a forward pass in alternating rounds "
                    "(`fold_jax.bench.suites.races.step_cost`), which a drift of the machine "
                    "between jobs moves less.\n",
                    table(p), _goal(p)]
        out.append(_not_run(races))
    return "\n".join(x for x in out if x)
