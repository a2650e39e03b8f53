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
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from fold_jax import recipes
from fold_jax.report._common import bootstrap_median, fmt, interval_text, save, table

__all__ = ["best_of_library", "display", "library_order", "library_styles",
           "performance_profile", "problem_costs", "profile_ratios", "section", "summary",
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
# one matplotlib colour family per library (in library_order), so a library's recipes
# share a hue: its best drawn dark and strong, the rest lighter and faint
FAMILIES = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys", "YlOrBr", "PuRd",
            "BuGn", "RdPu")
STRONG = {"lw": 2.0, "alpha": 1.0, "ms": 5, "zorder": 3}
FAINT = {"lw": 0.8, "alpha": 0.45, "ms": 3, "zorder": 2}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", "*", ">")


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


def library_order(races: pd.DataFrame) -> list[str]:
    """The libraries of the rows: the registry's order first (:func:`fold_jax.recipes.
    libraries`), then any other, sorted.

    Args:
        races: rows with a ``library`` column.

    Returns:
        The library names.
    """
    present = set(races["library"].dropna().astype(str))
    known = [x for x in recipes.libraries() if x in present]
    return known + sorted(present - set(known))


def _libraries_of(races: pd.DataFrame) -> pd.Series:
    """method -> library: the rows' ``library`` (older rows without it: the recipe's)."""
    methods = races.drop_duplicates("method").set_index("method")
    if "library" in methods.columns:
        lib = methods["library"].astype(object)
    else:
        lib = pd.Series(math.nan, index=methods.index, dtype=object)
    missing = lib.isna()
    lib[missing] = [recipes.RECIPES[m].library if m in recipes.RECIPES else "unknown"
                    for m in lib.index[missing]]
    return lib.astype(str)


def best_of_library(races: pd.DataFrame) -> dict[str, str]:
    """Each library's best method over the problems of ``races``: the one that is its
    library's best (fewest median evaluations to target, ties: time) on the most
    problems; ties: the lower geometric mean of its evaluations over the library's best.

    Args:
        races: races rows.

    Returns:
        library -> method.
    """
    lib = _libraries_of(races)
    s = summary(races).assign(library=lambda d: d["method"].map(lib))
    s = s.sort_values(["task", "variant", "library", "evals", "time (s)"])
    wins = s.groupby(["task", "variant", "library"]).head(1)["method"].value_counts()
    fewest = s.groupby(["task", "variant", "library"])["evals"].transform("min")
    with np.errstate(divide="ignore", invalid="ignore"):
        s = s.assign(rel=s["evals"].to_numpy(float) / fewest.to_numpy(float))
    out = {}
    for library, g in s.groupby("library"):
        score = {m: (-int(wins.get(m, 0)), _geomean(h["rel"]) if np.isfinite(
            _geomean(h["rel"])) else math.inf, m) for m, h in g.groupby("method")}
        out[str(library)] = min(score, key=score.get)
    return out


def library_styles(races: pd.DataFrame, best: dict[str, str] | None = None
                   ) -> dict[str, dict]:
    """Plot styles by library (issue 34): one colour family per library (``FAMILIES``,
    in :func:`library_order`), its best method (:func:`best_of_library`) dark and strong
    (``STRONG``), the others lighter and faint (``FAINT``), a marker each within the
    library.

    Args:
        races: races rows (``method``, ``library``).
        best: library -> method drawn strongly (None: :func:`best_of_library`).

    Returns:
        method -> ``{"color", "marker", "lw", "alpha", "ms", "zorder", "strong",
        "library"}`` (pop ``strong`` and ``library`` before passing it to ``plot``).
    """
    import matplotlib

    lib = _libraries_of(races)
    best = best_of_library(races) if best is None else best
    out = {}
    for i, library in enumerate(library_order(races.assign(library=races["method"].map(lib)))):
        cmap = matplotlib.colormaps[FAMILIES[i % len(FAMILIES)]]
        members = sorted(lib.index[lib == library], key=lambda m: (m != best.get(library), m))
        shades = np.linspace(0.65, 0.35, max(len(members) - 1, 1))
        for j, m in enumerate(members):
            strong = m == best.get(library)
            colour = cmap(0.85) if strong else cmap(shades[j - 1] if j else shades[0])
            out[m] = {"color": colour, "marker": _MARKERS[j % len(_MARKERS)],
                      **(STRONG if strong else FAINT), "strong": strong, "library": library}
    return out


def _plot_style(style: dict) -> dict:
    """A :func:`library_styles` entry as ``plot`` keyword arguments."""
    return {k: v for k, v in style.items() if k not in ("strong", "library")}


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
                     "time / adam (geo-mean)": _geomean(ratio),
                     "evals / adam (geo-mean)": _geomean(g["evals / adam"])})
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


def _seed_band(g: pd.DataFrame, x: str) -> pd.DataFrame:
    """One method's curve over seeds, per step: median ``x``, median / min / max value."""
    band = g.groupby("step").agg(x=(x, "median"), median=("value", "median"),
                                 low=("value", "min"), high=("value", "max"))
    return band[band["x"] > 0].reset_index()


def _method_legend(fig, axes, extras=(), title: str = "method", rank=None) -> None:
    """One figure legend, outside the axes on the right: the methods sorted (by
    ``rank(label)`` when given, else by name), then ``extras`` (``(handle, label)``
    pairs) and the target lines."""
    unique: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            unique.setdefault(lab, h)
    lines = [k for k in unique if k.startswith("target")]
    order = sorted((k for k in unique if k not in lines), key=rank)
    handles = [unique[k] for k in order] + [h for h, _ in extras] + [unique[k] for k in lines]
    fig.legend(handles, order + [lab for _, lab in extras] + lines, fontsize=8,
               loc="outside right center", title=title)


def _label(method: str, style: dict) -> str:
    """A legend label: ``library: method``, with a star on the library's best."""
    return f"{style['library']}: {method}" + (" *" if style["strong"] else "")


def _legend_rank(styles: dict[str, dict]):
    """Legend order: by library (colour family), its best first, then by name."""
    libs = list(dict.fromkeys(s["library"] for s in styles.values()))

    def rank(label: str):
        library, _, rest = label.partition(": ")
        return (libs.index(library) if library in libs else len(libs),
                " *" not in rest, rest)

    return rank


def _curve_figure(curves, races, x, xlabel, fig_dir, name, styles):
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    targets = races.groupby("task")[["target_metric", "target"]].first()
    tasks = list(targets.index)
    cols = min(2, len(tasks))
    rows_n = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(6.2 * cols + 2, 3.8 * rows_n),
                             squeeze=False, layout="constrained")
    banded = False
    for ax, task in zip(axes.flat, tasks, strict=False):
        metric, target = targets.loc[task]
        c = curves[(curves["task"] == task) & (curves["variant"] == "dense")
                   & (curves["split"] == "test") & (curves["metric"] == metric)]
        for method, g in c.groupby("method"):
            band = _seed_band(g, x)
            style = styles[method]
            ax.plot(band["x"], band["median"], label=_label(method, style),
                    markevery=max(1, len(band) // 6), **_plot_style(style))
            if g["seed"].nunique() > 1 and style["strong"]:  # bands: each library's best
                ax.fill_between(band["x"], band["low"], band["high"], color=style["color"],
                                alpha=0.15, lw=0)
                banded = True
        ax.axhline(target, color="k", ls="--", lw=0.8, label=f"target {target:g}")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"test {metric}")
        ax.set_title(f"{task} (dense)")
        ax.grid(True, which="both", alpha=0.3)
    band = Patch(color="0.5", alpha=0.3, lw=0)
    _method_legend(fig, axes.flat, [(band, "min-max over seeds (each library's best)")]
                   if banded else [], title="library: method (* its best)",
                   rank=_legend_rank(styles))
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    return save(fig, fig_dir, name, f"test metric vs {xlabel}")


def _profile_figure(races, fig_dir, styles):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8), sharey=True, layout="constrained")
    for ax, (measure, unit) in zip(axes, MEASURES.items(), strict=True):
        profiles = performance_profile(races, measure)
        ratios = profile_ratios(races, measure)[0]
        top = max([t[-1] for t, _ in profiles.values()] + [2.0]) * 1.5
        for method, (taus, rho) in sorted(profiles.items()):
            solved = int(np.isfinite(ratios[method]).sum())
            ax.step(np.append(taus, top), np.append(rho, rho[-1]), where="post",
                    markevery=list(range(len(taus))), clip_on=False,
                    label=f"{_label(method, styles[method])} ({solved}/{len(ratios)})",
                    **_plot_style(styles[method]))
        ax.set_xscale("log", base=2)
        ax.set_xlim(2 ** -0.1, top)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel(f"tau: within tau x the best ({unit}, log2 scale)")
        ax.set_title(f"Performance profile over {unit} ({len(ratios)} problems)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("rho(tau): share of all problems solved")
    _method_legend(fig, axes[:1], title="library: method (problems solved)",
                   rank=_legend_rank(styles))
    return save(fig, fig_dir, "races_performance_profiles", "performance profiles")


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
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(14, 4.4), layout="constrained")
    xs = np.arange(len(pairs))
    for i, variant in enumerate(variants):
        part = v[v["variant"] == variant].set_index(["task", "method"])
        for ax, col in ((a1, "final metric"), (a2, "time (s)")):
            mid, low, high = (np.array([part[c].get(p, np.nan) for p in pairs], float)
                              for c in (col, f"{col} lo", f"{col} hi"))
            mid[~np.isfinite(mid)] = np.nan
            ax.bar(xs + i * width, mid, width, label=variant)
            ok = np.isfinite(mid) & np.isfinite(low) & np.isfinite(high)
            if ok.any():  # whiskers only where there is an interval (>= 2 seeds, finite)
                ax.errorbar((xs + i * width)[ok], mid[ok], fmt="none", ecolor="k", lw=0.9,
                            capsize=3, yerr=[mid[ok] - low[ok], high[ok] - mid[ok]])
        time = [part["time (s)"].get(p, np.nan) for p in pairs]
        for x, t in zip(xs + i * width, time, strict=True):
            if t == math.inf:
                a2.annotate("miss", (x, 0.02), xycoords=("data", "axes fraction"),
                            ha="center", va="bottom", fontsize=8, rotation=90)
    names = [f"{t}\n{m}" for t, m in pairs]
    for ax in (a1, a2):
        ax.set_xlim(-width / 2 - 0.3, len(pairs) - 1 + (len(variants) - 0.5) * width + 0.3)
        ax.set_xticks(xs + width * (len(variants) - 1) / 2, names, fontsize=8)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.legend(*a1.get_legend_handles_labels(), fontsize=8, loc="outside right center",
               title="variant")
    a1.set_ylabel("final test metric (median over seeds)")
    a1.set_title("Final test metric by variant")
    a2.set_yscale("log")
    a2.set_ylabel("time to target (s, median, log scale)")
    a2.set_title("Time to target by variant (miss = never reached)")
    return save(fig, fig_dir, "races_variants", "dense vs binarized vs pruned"), v


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
    races, note = _main_backend(_latest_budget(races))
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
                _curve_figure(curves, races, "elapsed_s", "training time (s, log scale)",
                              fig_dir, "races_metric_vs_time", styles),
                _curve_figure(curves, races, "evals", "loss evaluations (log scale)", fig_dir,
                              "races_metric_vs_evals", styles)]
    out += ["### Performance profiles\n",
            "rho(tau) = share of the problems that a method solved within tau times the best "
            "method's cost (the median over seeds); rho(1) = share where it was the best. "
            "Every method is scored on the same problems, and a method not run on a problem "
            "counts as a miss there (as in AlgoPerf), so rho reaches 1 only for a method "
            "that solved every problem.\n",
            _profile_figure(races, fig_dir, styles), _profile_notes(races)]
    link, v = _variants_figure(s, fig_dir)
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
