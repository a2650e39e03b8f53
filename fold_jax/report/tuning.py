"""Report section for results/tuning.csv beside races.csv: the tuning protocol's trials,
every library's best recipe after the same tuning (N-way, from the rows), and the
declared goals (``fold_jax/bench/goals.toml``: fold_jax vs evosax) judged from them.

Tuning table: per (task, variant, recipe) the number of trials, how many reached the
validation target, the selected trial's hyperparameters (JSON) and its validation
score (evaluations to the validation target). Peers table: per (task, variant), the
best fold_jax forward-only recipe and the best evosax strategy, each by the median over
seeds of its test evaluations-to-target (then time), with 95% bootstrap intervals, and
the three ratios the benchmark's goal reads (evosax / fold_jax of evaluations, of the
races' clocks and of forward passes to target: > 1 means fold_jax needed fewer).
Recipes that could not run on a task (a recipe's ``max_params``) are listed with the
reason from :mod:`fold_jax.learn.recipes`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from fold_jax.learn import heads, recipes
from fold_jax.report._common import fmt, interval_text, table
from fold_jax.report.races import library_order, summary

__all__ = ["Goal", "best_by_library", "goals", "libraries", "peers", "section",
           "trials_table"]

GOALS_FILE = "goals.toml"  # in fold_jax/bench/: the declared goals (:func:`goals`)
_PEER_NOUN = {"evosax": "strategies"}  # how a peer library's recipes are called


class Goal(NamedTuple):
    """One declared goal (``fold_jax/bench/goals.toml``): library ``ours``'s best recipe
    needs fewer than 1 / ``evals_ratio`` of library ``peer``'s best's evaluations and
    reaches the target ``seconds_ratio`` times sooner; ``why``: one line of motivation."""

    ours: str
    peer: str
    evals_ratio: float = 1.0
    seconds_ratio: float = 1.0
    why: str = ""


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


def goals(path: str | Path | None = None) -> list[Goal]:
    """The benchmark's declared goals: the ``[[goal]]`` entries of
    ``fold_jax/bench/goals.toml`` (shipped with the package), or of ``path``.

    Args:
        path: another TOML file with the same table (None: the shipped one).

    Returns:
        The goals, in file order.

    Raises:
        ValueError: an entry without ``ours`` / ``peer`` or with a non-positive ratio.
    """
    import tomllib
    from importlib import resources

    if path is None:
        text = resources.files("fold_jax.bench").joinpath(GOALS_FILE).read_text()
        where = f"fold_jax/bench/{GOALS_FILE}"
    else:
        text, where = Path(path).read_text(), str(path)
    out = []
    for i, g in enumerate(tomllib.loads(text).get("goal", [])):
        missing = [k for k in ("ours", "peer") if not isinstance(g.get(k), str)]
        if missing:
            raise ValueError(f"{where}: goal {i} lacks {missing} (library names)")
        goal = Goal(g["ours"], g["peer"], float(g.get("evals_ratio", 1.0)),
                    float(g.get("seconds_ratio", 1.0)), str(g.get("why", "")))
        if not (goal.evals_ratio > 0 and goal.seconds_ratio > 0):
            raise ValueError(f"{where}: goal {i}: evals_ratio and seconds_ratio must be > 0")
        out.append(goal)
    return out


def libraries(races: pd.DataFrame) -> pd.DataFrame:
    """The N-way comparison: per (task, variant), the best recipe of every library in the
    rows (fewest median evaluations to target, ties: time), whatever libraries they are.

    Args:
        races: the races rows (with ``library``).

    Returns:
        One row per (task, variant, library): its best method, recipes raced, reached,
        evals and time with 95% intervals, forwards, and ``evals / best`` (its evals over
        the fewest of any library there; 1 for the winner).
    """
    if "library" not in races.columns or races.empty:
        return pd.DataFrame()
    s = summary(races)
    raced = races.groupby(["task", "variant", "library"])["method"].nunique()
    rows = []
    for library in library_order(races):
        best = best_by_library(s, races, library)
        for r in best.to_dict("records"):
            rows.append({"task": r["task"], "variant": r["variant"], "library": library,
                         "best method": r["method"],
                         "recipes raced": int(raced[(r["task"], r["variant"], library)]),
                         "reached": r["reached"], "evals": r["evals"],
                         "evals 95% CI": interval_text(r["evals lo"], r["evals hi"],
                                                       r["seeds"]),
                         "time (s)": r["time (s)"],
                         "time 95% CI": interval_text(r["time (s) lo"], r["time (s) hi"],
                                                      r["seeds"]),
                         "forwards": r["forwards"]})
    out = pd.DataFrame(rows)
    fewest = out.groupby(["task", "variant"])["evals"].transform("min")
    with np.errstate(divide="ignore", invalid="ignore"):
        out["evals / best"] = out["evals"].to_numpy(float) / fewest.to_numpy(float)
    return out.sort_values(["task", "variant", "evals", "time (s)"]).reset_index(drop=True)


def peers(races: pd.DataFrame, goal: Goal | None = None) -> pd.DataFrame:
    """Best ``goal.ours`` recipe vs best ``goal.peer`` recipe per (task, variant).

    Args:
        races: the races rows (with ``library``).
        goal: the comparison (None: the first of :func:`goals`, fold_jax vs evosax).

    Returns:
        One row per problem where both ran: the peer's recipes raced there, each side's
        method, evals and time with 95% intervals and forwards (time to target in
        forward passes, from step costs timed in alternating rounds), and ``evals
        <peer> / <ours>``, ``time <peer> / <ours>``, ``forwards <peer> / <ours>``.
    """
    goal = goal or goals()[0]
    me, them = goal.ours, goal.peer
    if "library" not in races.columns:
        return pd.DataFrame()
    s = summary(races)
    ours = best_by_library(s, races, me).set_index(["task", "variant"])
    theirs = best_by_library(s, races, them).set_index(["task", "variant"])
    raced = races.groupby(["task", "variant", "library"])["method"].unique()
    rows = []
    for problem in ours.index.intersection(theirs.index):
        a, b = ours.loc[problem], theirs.loc[problem]
        row = {"task": problem[0], "variant": problem[1],
               f"{them} {_PEER_NOUN.get(them, 'recipes')} raced": ", ".join(
                   sorted(raced[(*problem, them)]))}
        for side, r in ((me, a), (them, b)):
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
            row[f"evals {them} / {me}"] = float(np.float64(b["evals"]) / a["evals"])
            row[f"time {them} / {me}"] = float(np.float64(b["time (s)"]) / a["time (s)"])
            row[f"forwards {them} / {me}"] = float(np.float64(b["forwards"]) / a["forwards"])
        rows.append(row)
    return pd.DataFrame(rows)


def _goal(p: pd.DataFrame, goal: Goal | None = None) -> str:
    """One sentence per problem: whether ``goal.ours`` met the goal (peer / ours
    evaluations > ``evals_ratio``, and peer / ours seconds >= ``seconds_ratio`` both by
    the races' clocks and, where both sides recorded it, in forward passes to target),
    and when the verdict rests on a median that is a miss (the recipe reached the
    target on under half the seeds), which side missed."""
    goal = goal or goals()[0]
    me, them = goal.ours, goal.peer
    need_e, need_t = goal.evals_ratio, goal.seconds_ratio
    lines = []
    for r in p.to_dict("records"):
        e, t = r[f"evals {them} / {me}"], r[f"time {them} / {me}"]
        f = r.get(f"forwards {them} / {me}", math.nan)
        met = e > need_e and t >= need_t and (math.isnan(f) or f >= need_t)
        why = ""
        if not math.isfinite(float(r[f"{them} evals"])):
            why = (f" only through the peer's misses: {r[f'{them} method']} reached the "
                   f"target on {r[f'{them} reached']} seeds, so its median is a miss" if met
                   else "")
        elif not math.isfinite(float(r[f"{me} evals"])):
            why = (f": {r[f'{me} method']} reached the target on {r[f'{me} reached']} "
                   f"seeds, so its median is a miss")
        seconds = (f"{fmt(t)}x the seconds by the races' clocks and {fmt(f)}x the forward "
                   f"passes to target" if not math.isnan(f) else
                   f"{fmt(t)}x the seconds by the races' clocks (forward passes to target "
                   f"not comparable: not recorded on both sides, or both missed; clocks "
                   f"only)")
        lines.append(f"- {r['task']}/{r['variant']}: {r[f'{me} method']} vs "
                     f"{r[f'{them} method']}: {them} needs {fmt(e)}x the evaluations and "
                     f"{seconds}; goal (> {fmt(need_e)}x the evaluations, >= {fmt(need_t)}x "
                     f"in seconds) {'met' if met else 'not met'}{why}.")
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
        lib = libraries(races)
        if lib["library"].nunique() > 1:
            out += ["### Libraries (the best recipe of each, same tuning, same loop)\n",
                    "Every library in the rows, a registered method's included (`library` "
                    "of its recipe): per problem its recipe with the fewest median test "
                    "evaluations to target (ties: time); `evals / best`: its evaluations "
                    "over the fewest of any library there.\n", table(lib)]
        for goal in goals():
            p = peers(races, goal)
            if not len(p):
                continue
            me, them = goal.ours, goal.peer
            out += [f"### Goal: {me} vs {them} (same tuning, same loop, same batches)\n",
                    f"Declared in `fold_jax/bench/{GOALS_FILE}`"
                    + (f" ({goal.why})" if goal.why else "") + f": per problem, the best "
                    f"{me} recipe against the best {them} recipe by median test evaluations "
                    f"to target (ties: time); met when {them} needs more than "
                    f"{fmt(goal.evals_ratio)}x the evaluations and at least "
                    f"{fmt(goal.seconds_ratio)}x the seconds. Seconds are read twice and the "
                    "goal needs both: the races' own clocks (`time`, jobs run minutes apart) "
                    "and `forwards`, the evaluations to target times one evaluation's cost "
                    "in forward passes of a minibatch, timed against a forward pass in "
                    "alternating rounds (`fold_jax.bench.suites.races.step_cost`), which a "
                    "drift of the machine between jobs moves less.\n",
                    table(p), _goal(p, goal)]
        out.append(_not_run(races))
    return "\n".join(x for x in out if x)
