"""Report section for results/races.csv and curves.csv: time-to-target (AlgoPerf style).

Medians are over seeds; a miss is infinity. Ratios compare a method with Adam on the
same task and variant, measured in the same results (same machine, same run kind).
Performance profiles (Dolan & More 2002): for each problem p (task, variant, seed) and
method s, r = t(p, s) / min_s t(p, s); rho_s(tau) is the share of the problems s was
run on that it solved within tau times the best; problems nobody solved are dropped.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from fold_jax.report._common import fmt, save, table

__all__ = ["performance_profile", "section"]

MEASURES = {"time_to_target_s": "seconds", "steps_to_target": "steps",
            "evals_to_target": "loss evaluations"}
BASELINE = "adam"


def _latest_budget(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep, per task, only rows with the largest step budget (max_steps, else budget_s):
    a full run supersedes quick."""
    column = next((c for c in ("max_steps", "budget_s") if c in frame.columns), None)
    if column is None or frame.empty:
        return frame
    top = frame.groupby("task")[column].transform("max")
    return frame[frame[column] == top]


def _main_backend(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    where = frame["backend"].astype(str) + ":" + frame["device_kind"].astype(str)
    main = where.value_counts().index[0]
    note = "" if where.nunique() == 1 else (
        f" Rows from other machines ({', '.join(sorted(set(where) - {main}))}) are left "
        f"out of this section; the races shown ran on {main}.")
    return frame[where == main], note


def _geomean(x) -> float:
    x = np.asarray(x, float)
    x = x[np.isfinite(x) & (x > 0)]
    return float(np.exp(np.mean(np.log(x)))) if len(x) else math.nan


def summary(races: pd.DataFrame) -> pd.DataFrame:
    """Per task x variant x method: reach rate, medians over seeds, ratios to Adam."""
    rows = []
    for (task, variant, method), g in races.groupby(["task", "variant", "method"]):
        rows.append({"task": task, "variant": variant, "method": method,
                     "reached": f"{int(g['reached'].fillna(False).astype(bool).sum())}/{len(g)}",
                     "time (s)": g["time_to_target_s"].median(),
                     "steps": g["steps_to_target"].median(),
                     "evals": g["evals_to_target"].median(),
                     "final metric": g["final_test_metric"].median(),
                     "n_params": g["n_params"].median()})
    out = pd.DataFrame(rows).sort_values(["task", "variant", "time (s)", "final metric"],
                                         ascending=[True, True, True, False])
    base = out[out["method"] == BASELINE].set_index(["task", "variant"])
    for col, name in (("time (s)", "time / adam"), ("evals", "evals / adam")):
        ref = [base[col].get((t, v), math.nan) for t, v in zip(out["task"], out["variant"],
                                                                strict=True)]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[name] = out[col].to_numpy(float) / np.asarray(ref, float)
    return out


def versus_adam(s: pd.DataFrame) -> pd.DataFrame:
    """Per method: geometric-mean time and evaluation ratios to Adam where both reached."""
    rows = []
    for method, g in s[s["method"] != BASELINE].groupby("method"):
        ratio = g["time / adam"].to_numpy(float)
        rows.append({"method": method, "problems": len(g),
                     "both reached": int(np.isfinite(ratio).sum()),
                     "missed where adam reached": int(np.isposinf(ratio).sum()),
                     "time / adam (geo-mean)": _geomean(ratio),
                     "evals / adam (geo-mean)": _geomean(g["evals / adam"])})
    return pd.DataFrame(rows)


def performance_profile(races: pd.DataFrame, measure: str) -> dict[str, tuple]:
    """``{method: (taus, rho)}`` step functions of the performance profile of ``measure``."""
    problem = ["task", "variant", "seed"]
    data = races[[*problem, "method", measure]].copy()
    best = data.groupby(problem)[measure].transform("min")
    data["ratio"] = data[measure] / best
    data = data[np.isfinite(best) & (best > 0)]
    out = {}
    for method, g in data.groupby("method"):
        r = np.sort(g["ratio"].to_numpy(float))
        finite = r[np.isfinite(r)]
        taus = np.concatenate([[1.0], finite])
        rho = np.array([np.mean(r <= t) for t in taus])
        out[method] = (taus, rho)
    return out


def _colors(methods) -> dict[str, tuple]:
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    return {m: cmap(i % cmap.N) for i, m in enumerate(sorted(methods))}


def _curve_figure(curves, races, x, xlabel, fig_dir, name, colors):
    import matplotlib.pyplot as plt

    targets = races.groupby("task")[["target_metric", "target"]].first()
    tasks = list(targets.index)
    cols = min(2, len(tasks))
    rows_n = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(6.2 * cols, 3.8 * rows_n), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        metric, target = targets.loc[task]
        c = curves[(curves["task"] == task) & (curves["variant"] == "dense")
                   & (curves["split"] == "test") & (curves["metric"] == metric)]
        for (method, _seed), g in c.groupby(["method", "seed"]):
            g = g.sort_values("step")
            g = g[g[x] > 0]
            ax.plot(g[x], g["value"], color=colors[method], lw=1.2, alpha=0.85,
                    label=method)
        ax.axhline(target, color="k", ls="--", lw=0.8, label=f"target {target:g}")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"test {metric}")
        ax.set_title(f"{task} (dense)")
        ax.grid(True, which="both", alpha=0.3)
    unique = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            unique.setdefault("target" if lab.startswith("target") else lab, h)
    order = sorted(k for k in unique if k != "target") + ["target"] * ("target" in unique)
    fig.legend([unique[k] for k in order], order, fontsize=8, loc="center left",
               bbox_to_anchor=(1.0, 0.5), title="method")
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    return save(fig, fig_dir, name, f"test metric vs {xlabel}")


def _profile_figure(races, fig_dir, colors):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6), sharey=True)
    for ax, (measure, unit) in zip(axes, MEASURES.items(), strict=True):
        profiles = performance_profile(races, measure)
        top = max([t[-1] for t, _ in profiles.values()] + [2.0]) * 1.5
        for method, (taus, rho) in sorted(profiles.items()):
            ax.step(np.append(taus, top), np.append(rho, rho[-1]), where="post",
                    color=colors[method], label=method)
        ax.set_xscale("log", base=2)
        ax.set_xlim(1, top)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"tau: within tau x the best method ({unit}, log2 scale)")
        ax.set_title(f"Performance profile over {unit}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("rho(tau): share of problems solved")
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="center left",
               bbox_to_anchor=(1.0, 0.5), title="method")
    return save(fig, fig_dir, "races_performance_profiles", "performance profiles")


def _variants_figure(s, fig_dir):
    import matplotlib.pyplot as plt

    multi = s.groupby(["task", "method"])["variant"].transform("nunique") > 1
    v = s[multi]
    if v.empty:
        return "", v
    pairs = list(v.groupby(["task", "method"]).groups)
    variants = [x for x in ("dense", "binarized", "pruned") if x in set(v["variant"])]
    variants += sorted(set(v["variant"]) - set(variants))
    width = 0.8 / len(variants)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.2))
    xs = np.arange(len(pairs))
    for i, variant in enumerate(variants):
        part = v[v["variant"] == variant].set_index(["task", "method"])
        metric = [part["final metric"].get(p, np.nan) for p in pairs]
        time = [part["time (s)"].get(p, np.nan) for p in pairs]
        a1.bar(xs + i * width, metric, width, label=variant)
        finite = [t if np.isfinite(t) else np.nan for t in time]
        a2.bar(xs + i * width, finite, width, label=variant)
        for x, t in zip(xs + i * width, time, strict=True):
            if t == math.inf:
                a2.annotate("miss", (x, 0.02), xycoords=("data", "axes fraction"),
                            ha="center", va="bottom", fontsize=8, rotation=90)
    names = [f"{t}\n{m}" for t, m in pairs]
    for ax in (a1, a2):
        ax.set_xlim(-width / 2 - 0.3, len(pairs) - 1 + (len(variants) - 0.5) * width + 0.3)
        ax.set_xticks(xs + width * (len(variants) - 1) / 2, names, fontsize=8)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.legend(*a1.get_legend_handles_labels(), fontsize=8, loc="center left",
               bbox_to_anchor=(1.0, 0.5), title="variant")
    a1.set_ylabel("final test metric (median over seeds)")
    a1.set_title("Final test metric by variant")
    a2.set_yscale("log")
    a2.set_ylabel("time to target (s, median, log scale)")
    a2.set_title("Time to target by variant (miss = never reached)")
    return save(fig, fig_dir, "races_variants", "dense vs binarized vs pruned"), v


def section(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    races = frames.get("races")
    if races is None or races.empty:
        return ""
    races, note = _main_backend(_latest_budget(races))
    curves = frames.get("curves")
    colors = _colors(set(races["method"]))
    if "max_steps" in races.columns:
        budgets = ", ".join(f"{t} {int(g['max_steps'].max())} steps (cap {fmt(g['budget_s'].max())}"
                            " s)" for t, g in races.groupby("task"))
    else:
        budgets = ", ".join(f"{t} {fmt(b)} s" for t, b in
                            races.groupby("task")["budget_s"].max().items())
    targets = ", ".join(f"{t}: test {m} >= {fmt(v)}" if m != "loss" else f"{t}: loss <= {v}"
                        for t, (m, v) in races.groupby("task")[["target_metric",
                                                                "target"]].first().iterrows())
    out = [f"{len(races)} races: {races['task'].nunique()} tasks x "
           f"{races['method'].nunique()} methods x {races['variant'].nunique()} variants x "
           f"{races['seed'].nunique()} seeds. Timed training steps, untimed evaluation, "
           f"compile timed apart; a miss counts as infinity; medians over seeds. Targets "
           f"(from the tuned Adam baseline): {targets}. Budgets: {budgets}.{note}\n"]
    s = summary(races)
    vs = versus_adam(s)
    if len(vs):
        out += ["### Forward-only methods vs Adam\n",
                "Geometric means over the (task, variant) problems where both the method and "
                "Adam reached the target; > 1 means slower or more evaluations than Adam.\n",
                table(vs)]
    dense = s[s["variant"] == "dense"].drop(columns="variant")
    out += ["### Time to target (dense)\n", table(dense)]
    if curves is not None and not curves.empty:
        curves = curves.merge(races[["task", "method", "variant", "seed", "budget_s", "backend",
                                     "device_kind"]].drop_duplicates(),
                              on=["task", "method", "variant", "seed", "budget_s", "backend",
                                  "device_kind"])
        out += ["### Learning curves\n",
                _curve_figure(curves, races, "elapsed_s", "training time (s, log scale)",
                              fig_dir, "races_metric_vs_time", colors),
                _curve_figure(curves, races, "evals", "loss evaluations (log scale)", fig_dir,
                              "races_metric_vs_evals", colors)]
    out += ["### Performance profiles\n",
            "rho(tau) = share of the problems (task, variant, seed) a method was run on that "
            "it solved within tau times the best method's cost; rho(1) = share where it was "
            "the best; a method that never reached a target stays at 0.\n",
            _profile_figure(races, fig_dir, colors)]
    link, v = _variants_figure(s, fig_dir)
    if link:
        dense_ref = s[s["variant"] == "dense"].set_index(["task", "method"])["time (s)"]
        ref = [dense_ref.get((a, b), math.nan) for a, b in zip(v["task"], v["method"],
                                                                strict=True)]
        with np.errstate(divide="ignore", invalid="ignore"):
            v = v.assign(**{"time / dense": v["time (s)"].to_numpy(float) / np.asarray(ref)})
        out += ["### Dense vs binarized vs pruned\n", link,
                table(v[["task", "method", "variant", "reached", "time (s)", "time / dense",
                         "evals", "final metric", "n_params"]])]
    return "\n".join(x for x in out if x)
