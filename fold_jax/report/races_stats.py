"""The statistics of the races report (:mod:`fold_jax.report.races`): per (task, variant,
method) the median over seeds of each cost with its percentile-bootstrap 95% interval
(:func:`summary`, :func:`display`), the ratios to Adam (:func:`versus_adam`), and the
performance profiles over one problem set shared by every method (:func:`problem_costs`,
:func:`profile_ratios`, :func:`performance_profile`). A miss is +inf and stays in the
resamples.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fold_jax.report._common import bootstrap_median, interval_text

__all__ = ["BASELINE", "MEASURES", "PROBLEM", "STATS", "display", "geomean", "latest_budget",
           "main_backend", "performance_profile", "problem_costs", "profile_ratios", "summary",
           "versus_adam"]

MEASURES = {"time_to_target_s": "seconds", "steps_to_target": "steps",
            "evals_to_target": "loss evaluations"}
BASELINE = "adam"
PROBLEM = ["task", "variant"]
# summary column -> races column it is the median of (each gets a "<name> 95% CI")
STATS = {"time (s)": "time_to_target_s", "steps": "steps_to_target",
         "evals": "evals_to_target", "forwards": "forwards_to_target",
         "final metric": "final_test_metric"}
_MISSES = ("time_to_target_s", "steps_to_target", "evals_to_target")  # NaN there = a miss
# recorded per job since its column existed: a group with a row missing it has none
_ALL_OR_NONE = ("forwards_to_target",)


def latest_budget(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep, per task, only rows with the largest step budget (max_steps, else
    budget_s): a full run supersedes quick.

    Args:
        frame: races rows.

    Returns:
        The kept rows.
    """
    column = next((c for c in ("max_steps", "budget_s") if c in frame.columns), None)
    if column is None or frame.empty:
        return frame
    top = frame.groupby("task")[column].transform("max")
    return frame[frame[column] == top]


def main_backend(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows of the machine (backend and device kind) with the most rows.

    Args:
        frame: races rows.

    Returns:
        ``(rows, note)``: the note names the machines left out ("" when there is one).
    """
    where = frame["backend"].astype(str) + ":" + frame["device_kind"].astype(str)
    main = where.value_counts().index[0]
    note = "" if where.nunique() == 1 else (
        f" Rows from other machines ({', '.join(sorted(set(where) - {main}))}) are left "
        f"out of this section; the races shown ran on {main}.")
    return frame[where == main], note


def geomean(x) -> float:
    """The geometric mean of the finite positive entries.

    Args:
        x: values (array-like).

    Returns:
        The mean; NaN when no entry is finite and positive.
    """
    x = np.asarray(x, float)
    x = x[np.isfinite(x) & (x > 0)]
    return float(np.exp(np.mean(np.log(x)))) if len(x) else math.nan


def _values(g: pd.DataFrame, column: str) -> np.ndarray:
    """A column's per-seed values; for a cost, NaN (nothing recorded) counts as a miss;
    a column the rows do not have (runs older than it), or that any row lacks in an
    all-or-none column (a run resumed across its introduction), is NaN throughout."""
    if column not in g.columns:
        return np.full(len(g), np.nan)
    x = g[column].to_numpy(float)
    if column in _ALL_OR_NONE and np.isnan(x).any():
        return np.full(len(g), np.nan)
    return np.where(np.isnan(x), np.inf, x) if column in _MISSES else x


def summary(races: pd.DataFrame) -> pd.DataFrame:
    """Per task x variant x method: seeds, reach rate, the median over seeds of each of
    :data:`STATS` with its bootstrap 95% bounds in ``"<name> lo"`` / ``"<name> hi"``
    (NaN with one seed), and the ratios of the medians to Adam's.

    Args:
        races: the races.csv rows.

    Returns:
        One row per (task, variant, method), sorted by task, variant and time.
    """
    rows = []
    for (task, variant, method), g in races.groupby(["task", "variant", "method"]):
        row = {"task": task, "variant": variant, "method": method, "seeds": len(g),
               "reached": f"{int(g['reached'].fillna(False).astype(bool).sum())}/{len(g)}"}
        for name, column in STATS.items():
            median, low, high, _ = bootstrap_median(_values(g, column))
            row |= {name: median, f"{name} lo": low, f"{name} hi": high}
        rows.append(row | {"n_params": g["n_params"].median()})
    out = pd.DataFrame(rows).sort_values(["task", "variant", "time (s)", "final metric"],
                                         ascending=[True, True, True, False])
    base = out[out["method"] == BASELINE].set_index(["task", "variant"])
    for col, name in (("time (s)", "time / adam"), ("evals", "evals / adam")):
        ref = [base[col].get((t, v), math.nan) for t, v in zip(out["task"], out["variant"],
                                                                strict=True)]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[name] = out[col].to_numpy(float) / np.asarray(ref, float)
    return out


def display(s: pd.DataFrame) -> pd.DataFrame:
    """:func:`summary` for a table: each ``lo`` / ``hi`` pair becomes one ``"<name> 95%
    CI"`` text column beside its median (``n=1, no interval`` for one seed).

    Args:
        s: a :func:`summary` table.

    Returns:
        The table for display.
    """
    out = s.copy()
    for name in STATS:
        if f"{name} lo" not in out.columns:
            continue
        text = [interval_text(lo, hi, n) for lo, hi, n in
                zip(out[f"{name} lo"], out[f"{name} hi"], out["seeds"], strict=True)]
        out = out.drop(columns=[f"{name} lo", f"{name} hi"])
        out.insert(out.columns.get_loc(name) + 1, f"{name.split(' (')[0]} 95% CI", text)
    return out


def versus_adam(s: pd.DataFrame) -> pd.DataFrame:
    """Per method: geometric-mean time and evaluation ratios to Adam where both reached.

    Args:
        s: a :func:`summary` table.

    Returns:
        One row per non-Adam method.
    """
    rows = []
    for method, g in s[s["method"] != BASELINE].groupby("method"):
        ratio = g["time / adam"].to_numpy(float)
        rows.append({"method": method, "problems": len(g),
                     "seeds": "/".join(str(n) for n in sorted(set(g["seeds"]))),
                     "both reached": int(np.isfinite(ratio).sum()),
                     "missed where adam reached": int(np.isposinf(ratio).sum()),
                     "time / adam (geo-mean)": geomean(ratio),
                     "evals / adam (geo-mean)": geomean(g["evals / adam"])})
    return pd.DataFrame(rows)


def problem_costs(races: pd.DataFrame, measure: str) -> pd.DataFrame:
    """(task, variant) x method: the median over seeds of ``measure`` on every problem of
    the union of pairs raced; +inf where the method missed or was not run there.

    Args:
        races: the races.csv rows.
        measure: the races.csv column of the cost.

    Returns:
        A DataFrame indexed by (task, variant), one column per method.
    """
    data = races[[*PROBLEM, "method"]].assign(cost=_values(races, measure))
    median = data.groupby([*PROBLEM, "method"])["cost"].agg(lambda x: float(np.median(x)))
    return median.unstack("method").astype(float).fillna(math.inf).sort_index()


def profile_ratios(races: pd.DataFrame, measure: str) -> tuple[pd.DataFrame, list[tuple]]:
    """``(ratios, unsolved)``: r = cost / best cost per solved problem (rows) and method
    (columns, inf = miss or not run), and the problems no method solved (left out).

    Args:
        races: the races.csv rows.
        measure: the races.csv column of the cost.

    Returns:
        ``(ratios, unsolved)``: a DataFrame (problems x methods) and a list of
        (task, variant) tuples.
    """
    costs = problem_costs(races, measure)
    best = costs.min(axis=1)
    solved = np.isfinite(best) & (best > 0)
    return (costs[solved].div(best[solved], axis=0),
            list(costs.index[~solved.to_numpy()]))


def performance_profile(races: pd.DataFrame, measure: str) -> dict[str, tuple]:
    """``{method: (taus, rho)}`` step functions of the performance profile of ``measure``:
    at each tau (1 and every finite ratio of the method), rho = the share of ALL solved
    problems (:func:`profile_ratios`) the method solved within tau x the best.

    Args:
        races: the races.csv rows.
        measure: the races.csv column of the cost (NaN in a to-target column: a miss).

    Returns:
        method -> ``(taus, rho)``, two arrays of one length.
    """
    ratios, _ = profile_ratios(races, measure)
    out = {}
    for method in ratios.columns:
        r = ratios[method].to_numpy(float)
        taus = np.unique(np.concatenate([[1.0], r[np.isfinite(r)]]))
        rho = np.array([np.sum(r <= t) / len(r) if len(r) else 0.0 for t in taus])
        out[method] = (taus, rho)
    return out
