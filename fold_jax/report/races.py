"""Report section for results/races.csv and curves.csv: time-to-target (AlgoPerf style).

Statistics: per (task, variant, method) the median over seeds of each cost, with a
percentile-bootstrap 95% interval (:func:`fold_jax.report._common.bootstrap_median`,
fixed seed); a miss is +inf and stays in the resamples, so an interval reaching inf
means some resampled medians missed. One seed gives the value and "n=1, no interval";
every table says how many seeds it has. Ratios compare a method with Adam on the same
task and variant, measured in the same results (same machine, same run kind).

Performance profiles (Dolan & More 2002) over ONE problem set shared by every method:
the problems are the union of the (task, variant) pairs raced; a problem's cost for a
method is its median over seeds, +inf when it missed or was not run there (as in
AlgoPerf). With r = t(p, s) / min_s t(p, s), rho_s(tau) is the share of the problems
that s solved within tau times the best. Problems no method solved carry no ratio and
are left out of the set (listed in the report).

The statistics are in :mod:`fold_jax.report.races_stats`, the figures and their styles in
:mod:`fold_jax.report.races_figures`; their names stay importable from here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from fold_jax.report._common import fmt, table
from fold_jax.report.races_figures import (
    FAINT,
    FAMILIES,
    STRONG,
    best_of_library,
    curve_figure,
    library_order,
    library_styles,
    profile_figure,
    variants_figure,
)
from fold_jax.report.races_stats import (
    BASELINE,
    MEASURES,
    PROBLEM,
    STATS,
    display,
    latest_budget,
    main_backend,
    performance_profile,
    problem_costs,
    profile_ratios,
    summary,
    versus_adam,
)

# the statistics (races_stats) and the figures (races_figures) stay importable from here
__all__ = ["BASELINE", "FAINT", "FAMILIES", "MEASURES", "PROBLEM", "STATS", "STRONG",
           "best_of_library", "display", "library_order", "library_styles",
           "performance_profile", "problem_costs", "profile_ratios", "section", "summary",
           "versus_adam"]


def _profile_notes(races: pd.DataFrame) -> str:
    """Markdown under the profiles: the problem set, what was left out, who ran where."""
    def names(pairs) -> str:
        return ", ".join(f"`{t}/{v}`" for t, v in pairs) or "none"

    costs = problem_costs(races, next(iter(MEASURES)))
    sets = {unit: profile_ratios(races, m) for m, unit in MEASURES.items()}
    same = len({(tuple(r.index), tuple(u)) for r, u in sets.values()}) == 1
    out = [f"Problems: the {len(costs)} (task, variant) pairs raced, the same set for "
           f"every method; a problem's cost is the median over seeds: {names(costs.index)}."]
    for unit, (ratios, unsolved) in (list(sets.items())[:1] if same else sets.items()):
        where = "" if same else f" ({unit})"
        out.append(f"Profile problems{where}: {len(ratios)}; left out because no method "
                   f"reached the target: {names(unsolved)}.")
    ran = races.groupby("method")[PROBLEM].apply(lambda g: len(g.drop_duplicates()))
    partial = [f"{m} {k}/{len(costs)}" for m, k in sorted(ran.items()) if k < len(costs)]
    if partial:
        out.append("Not run on every problem (each missing one counts as a miss): "
                   + ", ".join(partial) + ".")
    return " ".join(out) + "\n"


def _seed_counts(races: pd.DataFrame) -> str:
    counts = races.groupby(["task", "variant", "method"]).size()
    return "/".join(str(n) for n in sorted(set(counts)))


def section(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """Markdown for the races section (summary tables, profiles, curves); "" without data.

    Args:
        frames: file stem -> DataFrame (the "races" and "curves" entries are used).
        fig_dir: the folder figures are saved in.

    Returns:
        The section's markdown.
    """
    races = frames.get("races")
    if races is None or races.empty:
        return ""
    races, note = main_backend(latest_budget(races))
    curves = frames.get("curves")
    styles = library_styles(races)
    if "max_steps" in races.columns:
        budgets = ", ".join(f"{t} {int(g['max_steps'].max())} steps (cap {fmt(g['budget_s'].max())}"
                            " s)" for t, g in races.groupby("task"))
    else:
        budgets = ", ".join(f"{t} {fmt(b)} s" for t, b in
                            races.groupby("task")["budget_s"].max().items())
    targets = ", ".join(f"{t}: test {m} >= {fmt(v)}" if m != "loss" else f"{t}: loss <= {v}"
                        for t, (m, v) in races.groupby("task")[["target_metric",
                                                                "target"]].first().iterrows())
    seeds = _seed_counts(races)
    out = [f"{len(races)} races: {races['task'].nunique()} tasks x "
           f"{races['method'].nunique()} methods x {races['variant'].nunique()} variants x "
           f"{races['seed'].nunique()} seeds ({seeds} per task, variant and method). Timed "
           f"training steps, untimed evaluation, compile timed apart. Targets (from the "
           f"tuned Adam baseline): {targets}. Budgets: {budgets}.{note}\n",
           "Statistics: medians over seeds with percentile-bootstrap 95% intervals (2000 "
           "resamples with replacement, fixed seed 0); a miss is +inf and is resampled like "
           "any other value, so a bound of inf means that some resampled medians missed. "
           "With one seed a cell shows the value and \"n=1, no interval\": there is no "
           "spread to estimate.\n"]
    if seeds == "1":
        out.append("> **One seed per race:** the medians below are single measurements; "
                   "run the full profile (3 seeds) for intervals.\n")
    s = summary(races)
    vs = versus_adam(s)
    if len(vs):
        out += ["### Forward-only methods vs Adam\n",
                "Geometric means, over the (task, variant) problems where both the method and "
                "Adam reached the target, of the ratio of the medians over seeds; > 1 means "
                "slower or more evaluations than Adam.\n",
                table(vs)]
    dense = display(s[s["variant"] == "dense"].drop(columns="variant"))
    out += ["### Time to target (dense)\n",
            "`time (s)`: the race's own clock (training steps only); `forwards`: the "
            "evaluations to target times one evaluation's cost in forward passes of a "
            "minibatch, timed against a forward pass in alternating rounds "
            "(`fold_jax.bench.suites.races.step_cost`; empty for rows older than it), so it moves "
            "less with the machine's speed between jobs.\n", table(dense)]
    if curves is not None and not curves.empty:
        curves = curves.merge(races[["task", "method", "variant", "seed", "budget_s", "backend",
                                     "device_kind"]].drop_duplicates(),
                              on=["task", "method", "variant", "seed", "budget_s", "backend",
                                  "device_kind"])
        out += ["### Learning curves\n",
                "Line: the median over seeds of the test metric at each evaluation step (x: "
                "the median over seeds of its time or evaluations); band: min to max over "
                "the seeds, drawn for each library's best (none with one seed). One colour "
                "family per library: its best method over these races (its library's "
                "fewest evaluations to target on the most problems, marked *) dark and "
                "strong, its other recipes light and faint.\n",
                curve_figure(curves, races, "elapsed_s", "training time (s, log scale)",
                              fig_dir, "races_metric_vs_time", styles),
                curve_figure(curves, races, "evals", "loss evaluations (log scale)", fig_dir,
                              "races_metric_vs_evals", styles)]
    out += ["### Performance profiles\n",
            "rho(tau) = share of the problems that a method solved within tau times the best "
            "method's cost (the median over seeds); rho(1) = share where it was the best. "
            "Every method is scored on the same problems, and a method not run on a problem "
            "counts as a miss there (as in AlgoPerf), so rho reaches 1 only for a method "
            "that solved every problem.\n",
            profile_figure(races, fig_dir, styles), _profile_notes(races)]
    link, v = variants_figure(s, fig_dir)
    if link:
        dense_ref = s[s["variant"] == "dense"].set_index(["task", "method"])["time (s)"]
        ref = [dense_ref.get((a, b), math.nan) for a, b in zip(v["task"], v["method"],
                                                                strict=True)]
        with np.errstate(divide="ignore", invalid="ignore"):
            v = v.assign(**{"time / dense": v["time (s)"].to_numpy(float) / np.asarray(ref)})
        shown = display(v[["task", "method", "variant", "seeds", "reached", "time (s)",
                           "time (s) lo", "time (s) hi", "time / dense", "evals", "evals lo",
                           "evals hi", "final metric", "final metric lo", "final metric hi",
                           "n_params"]])
        out += ["### Dense vs binarized vs pruned\n",
                "Bars: medians over seeds; whiskers: bootstrap 95% intervals (none with one "
                "seed or an infinite bound).\n", link, table(shown)]
    return "\n".join(x for x in out if x)
