"""The figures of the races report (:mod:`fold_jax.report.races`) and their styles: one
colour family per library (:func:`library_styles`), each library's best method
(:func:`best_of_library`) dark and strong, its other recipes light and faint; the learning
curves (:func:`curve_figure`), the performance profiles (:func:`profile_figure`) and the
dense / binarized / pruned bars (:func:`variants_figure`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fold_jax.learn import recipes
from fold_jax.report._common import save
from fold_jax.report.races_stats import (
    MEASURES,
    geomean,
    performance_profile,
    profile_ratios,
    summary,
)

__all__ = ["FAINT", "FAMILIES", "STRONG", "best_of_library", "curve_figure", "library_order",
           "library_styles", "profile_figure", "variants_figure"]

# one matplotlib colour family per library (in library_order), so a library's recipes
# share a hue: its best drawn dark and strong, the rest lighter and faint
FAMILIES = ("Blues", "Oranges", "Greens", "Purples", "Reds", "Greys", "YlOrBr", "PuRd",
            "BuGn", "RdPu")
STRONG = {"lw": 2.0, "alpha": 1.0, "ms": 5, "zorder": 3}
FAINT = {"lw": 0.8, "alpha": 0.45, "ms": 3, "zorder": 2}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", "*", ">")


def library_order(races: pd.DataFrame) -> list[str]:
    """The libraries of the rows: the registry's order first (:func:`fold_jax.learn.recipes.
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
        score = {m: (-int(wins.get(m, 0)), geomean(h["rel"]) if np.isfinite(
            geomean(h["rel"])) else math.inf, m) for m, h in g.groupby("method")}
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


def curve_figure(curves, races, x, xlabel, fig_dir, name, styles):
    """Test metric vs ``x`` per task (dense variant): each method's median over seeds,
    min-max bands for each library's best, the target as a dashed line.

    Args:
        curves: curves rows (joined with their races).
        races: races rows (targets per task).
        x: the curves column on the x axis ("elapsed_s" or "evals").
        xlabel: its label.
        fig_dir: the figures folder.
        name: the figure's file stem.
        styles: :func:`library_styles`.

    Returns:
        The figure's markdown link.
    """
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


def profile_figure(races, fig_dir, styles):
    """The performance profiles over time, steps and evaluations
    (:data:`MEASURES`), one panel each.

    Args:
        races: races rows.
        fig_dir: the figures folder.
        styles: :func:`library_styles`.

    Returns:
        The figure's markdown link.
    """
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


def variants_figure(s, fig_dir):
    """Bars of the final test metric and the time to target per (task, method)
    raced in several variants (dense, binarized, pruned), with bootstrap whiskers.

    Args:
        s: a :func:`~fold_jax.report.races_stats.summary` table.
        fig_dir: the figures folder.

    Returns:
        ``(link, rows)``: the figure's markdown link ("" when no pair has two variants) and
        the summary rows it drew.
    """
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
