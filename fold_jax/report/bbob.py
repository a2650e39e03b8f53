"""Report section for results/bbob.csv: COCO-style runtimes on the 24 noiseless BBOB
functions (see ``fold_jax/bench/suites/bbob.py``).

- aRT (average running time, the ERT of COCO): for a set of runs and a precision target,
  the evaluations summed over all runs (up to the target where it was reached, the
  whole run where not) divided by the number of runs that reached it; inf when none did.
  Shown per dimension, function group (COCO's five) and target, pooled over the group's
  functions, instances and runs, beside the share of runs that reached the target.
- Empirical runtime distributions: the fraction of (function, instance, run, target)
  tuples reached against evaluations / dimension (log axis), one line per method and a
  panel per dimension, over the five targets 1e1, 1e-1, 1e-3, 1e-5, 1e-8 (COCO's own
  plots use 51 targets between 1e2 and 1e-8 and bootstrap restarts; ``cocopp`` on the
  data in ``results/bbob_coco/`` draws those).

The summary's finding (:func:`headline`): per function group, the method that reached
the largest share of (run, target) pairs within its budget (:func:`shares`), with a 95%
bootstrap interval over runs, beside the runner-up.

Also the constants both the suite and the report use: ``FUNCTIONS`` (id -> name),
``GROUPS`` (cocopp's group names -> function ids), ``TARGETS`` and ``target_column``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fold_jax.report._common import bootstrap_mean, fmt, save, table

__all__ = ["FUNCTIONS", "GROUPS", "TARGETS", "art", "ecdf", "group_of", "headline",
           "section", "shares", "target_column"]

TARGETS: tuple[float, ...] = (1e1, 1e-1, 1e-3, 1e-5, 1e-8)  # COCO's precision targets

FUNCTIONS: dict[int, str] = {
    1: "Sphere", 2: "Ellipsoid separable", 3: "Rastrigin separable",
    4: "Skew Rastrigin-Bueche separable", 5: "Linear slope", 6: "Attractive sector",
    7: "Step-ellipsoid", 8: "Rosenbrock original", 9: "Rosenbrock rotated",
    10: "Ellipsoid", 11: "Discus", 12: "Bent cigar", 13: "Sharp ridge",
    14: "Sum of different powers", 15: "Rastrigin", 16: "Weierstrass",
    17: "Schaffer F7, condition 10", 18: "Schaffer F7, condition 1000",
    19: "Griewank-Rosenbrock F8F2", 20: "Schwefel x*sin(x)", 21: "Gallagher 101 peaks",
    22: "Gallagher 21 peaks", 23: "Katsuuras", 24: "Lunacek bi-Rastrigin",
}

# cocopp's function groups: separable; low or moderate conditioning; high conditioning
# and unimodal; multimodal with adequate global structure; multimodal with weak one
GROUPS: dict[str, tuple[int, ...]] = {
    "separ": (1, 2, 3, 4, 5), "lcond": (6, 7, 8, 9), "hcond": (10, 11, 12, 13, 14),
    "multi": (15, 16, 17, 18, 19), "mult2": (20, 21, 22, 23, 24),
}
_GROUP_OF = {f: g for g, fs in GROUPS.items() for f in fs}


def group_of(function: int) -> str:
    """cocopp's group name of BBOB function ``function`` (1-24).

    Args:
        function: the BBOB function number, 1-24.

    Returns:
        The group name.
    """
    if int(function) not in _GROUP_OF:
        raise ValueError(f"function={function!r} is not a bbob function id (1-24)")
    return _GROUP_OF[int(function)]


def target_column(target: float) -> str:
    """The bbob.csv column of a precision target: 1e1 -> ``evals_to_1e1``, 1e-8 ->
    ``evals_to_1e-8``.

    Args:
        target: a power of ten.

    Returns:
        The column name.
    """
    exponent = round(math.log10(target))
    if not math.isclose(10.0 ** exponent, target, rel_tol=1e-9):
        raise ValueError(f"target={target!r} must be a power of ten")
    return f"evals_to_1e{exponent}"


def _spent(frame: pd.DataFrame) -> pd.Series:
    """Evaluations each run spent, capped at its budget (later ones do not count)."""
    used = frame["evals_counted"] if "evals_counted" in frame.columns else frame["evals_used"]
    used = pd.to_numeric(used, errors="coerce")
    if "budget" in frame.columns:
        used = used.clip(upper=pd.to_numeric(frame["budget"], errors="coerce"))
    return used


def art(frame: pd.DataFrame, target: float) -> tuple[float, int, int]:
    """COCO's aRT of the runs in ``frame`` for ``target``.

    Args:
        frame: bbob.csv rows (``target_column(target)``, ``evals_counted`` or
            ``evals_used``, optionally ``budget``).
        target: a precision target of ``TARGETS``.

    Returns:
        ``(aRT, successes, runs)``: evaluations summed over runs (to the target where
        reached, else all the run spent) over successes; inf without a success, NaN
        without runs.
    """
    hits = pd.to_numeric(frame[target_column(target)], errors="coerce").to_numpy(float)
    spent = _spent(frame).to_numpy(float)
    reached = np.isfinite(hits)
    n, ok = len(hits), int(reached.sum())
    if n == 0:
        return math.nan, 0, 0
    total = float(np.where(reached, hits, spent).sum())
    return (total / ok if ok else math.inf), ok, n


def ecdf(frame: pd.DataFrame, targets: Sequence[float] = TARGETS
         ) -> tuple[np.ndarray, np.ndarray]:
    """Empirical runtime distribution of ``frame``'s runs over ``targets``.

    Args:
        frame: bbob.csv rows of one method and dimension.
        targets: precision targets (columns ``target_column(t)``).

    Returns:
        ``(x, y)``: the sorted finite runtimes in evaluations / dimension and the
        fraction of (run, target) pairs reached by then (empty arrays without hits).
    """
    dims = pd.to_numeric(frame["dim"], errors="coerce").to_numpy(float)
    values = [pd.to_numeric(frame[target_column(t)], errors="coerce").to_numpy(float) / dims
              for t in targets]
    runtimes = np.concatenate(values) if values else np.array([])
    total = runtimes.size
    finite = np.sort(runtimes[np.isfinite(runtimes)])
    if total == 0 or finite.size == 0:
        return np.array([]), np.array([])
    return finite, np.arange(1, finite.size + 1) / total


def _number(value: float) -> str:
    """aRT text: 3 significant digits (``45``, ``1.45e+03``), ``inf``, ``-`` for NaN."""
    if math.isnan(value):
        return "-"
    return "inf" if math.isinf(value) else f"{value:.3g}"


def _art_table(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    groups = [g for g in GROUPS if g in set(frame["group"])]
    for group in [*groups, "all"]:
        sub = frame if group == "all" else frame[frame["group"] == group]
        for method, g in sub.groupby("method", sort=True):
            row = {"group": group, "method": method}
            for t in TARGETS:
                value, ok, n = art(g, t)
                row[f"aRT 1e{round(math.log10(t))}"] = f"{_number(value)} ({ok}/{n})"
            rows.append(row)
    return pd.DataFrame(rows)


def _summary(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (method, dim), g in frame.groupby(["method", "dim"], sort=True):
        hits = np.stack([pd.to_numeric(g[target_column(t)], errors="coerce").to_numpy(float)
                         for t in TARGETS])
        final = np.isfinite(hits[-1])
        solved = g.loc[final, "function"].nunique() if final.any() else 0
        rows.append({"method": method, "library": ", ".join(sorted(set(g["library"]))),
                     "dim": dim, "runs": len(g), "budget": g["budget"].max(),
                     "targets reached": float(np.isfinite(hits).mean()),
                     "functions solved to 1e-8": f"{solved}/{g['function'].nunique()}",
                     "median best f - f_opt": float(np.median(g["best_precision"])),
                     "median s/run": float(np.median(g["seconds"])),
                     "compile s": float(g["compile_s"].max()) if "compile_s" in g else math.nan})
    return pd.DataFrame(rows)


def _figure(frame: pd.DataFrame, fig_dir: Path) -> str:
    import matplotlib.pyplot as plt

    dims = sorted(frame["dim"].unique())
    fig, axes = plt.subplots(1, len(dims), figsize=(4.2 * len(dims), 3.8), squeeze=False,
                             sharey=True)
    methods = sorted(frame["method"].unique())
    colors = plt.get_cmap("tab10")
    for ax, dim in zip(axes[0], dims, strict=True):
        for k, method in enumerate(methods):
            g = frame[(frame["dim"] == dim) & (frame["method"] == method)]
            if g.empty:
                continue
            x, y = ecdf(g)
            end = float(g["budget"].max()) / dim
            first = 1.0 / dim  # the first evaluation
            xs = np.concatenate([[first], x, [end]]) if x.size else np.array([first, end])
            ys = np.concatenate([[0.0], y, [y[-1]]]) if y.size else np.array([0.0, 0.0])
            ax.step(xs, ys, where="post", color=colors(k % 10), label=method)
            ax.plot([end], [ys[-1]], marker="x", color=colors(k % 10))
        ax.set_xscale("log")
        ax.set_ylim(0, 1)
        ax.set_xlabel("evaluations / dimension (log scale)")
        ax.set_title(f"{frame['function'].nunique()} bbob functions, {dim}-D")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("fraction of (function, instance, target) reached")
    axes[0][-1].legend(fontsize=7, loc="upper left")
    return save(fig, fig_dir, "bbob_ecdf", "bbob runtime ECDF per dimension")


def shares(frame: pd.DataFrame, targets: Sequence[float] = TARGETS) -> pd.DataFrame:
    """Per method: the share of (run, target) pairs reached within the budget (the
    runtime ECDF's end), its 95% percentile-bootstrap interval over runs
    (:func:`~fold_jax.report._common.bootstrap_mean` of each run's share), the runs,
    and the median final precision (best f - f_opt).

    Args:
        frame: bbob.csv rows of one dimension and function group.
        targets: precision targets (columns ``target_column(t)``).

    Returns:
        Columns method, share, low, high, runs, precision; best first (highest share,
        then lowest median precision, then name).
    """
    rows = []
    for method, g in frame.groupby("method", sort=True):
        hits = np.stack([pd.to_numeric(g[target_column(t)], errors="coerce").to_numpy(float)
                         for t in targets])
        share, low, high, n = bootstrap_mean(np.isfinite(hits).mean(axis=0))
        rows.append({"method": method, "share": share, "low": low, "high": high, "runs": n,
                     "precision": float(np.median(pd.to_numeric(g["best_precision"])))})
    out = pd.DataFrame(rows, columns=["method", "share", "low", "high", "runs", "precision"])
    return out.sort_values(["share", "precision", "method"],
                           ascending=[False, True, True]).reset_index(drop=True)


def _share_text(row) -> str:
    interval = (f" [{row['low']:.2f}, {row['high']:.2f}]" if not math.isnan(row["low"])
                else " (one run)")
    return f"{row['method']} {row['share']:.2f}{interval}"


def headline(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """The summary's finding: per function group and dimension (largest first), the
    method with the largest share of targets reached (:func:`shares`) beside the
    runner-up; "" without data.

    Args:
        frames: file stem -> DataFrame (the "bbob" entry is used).
        fig_dir: the figures folder (the section's figure is linked, not redrawn).

    Returns:
        Markdown: a list, then the figure's link.
    """
    frame = frames.get("bbob")
    if frame is None or frame.empty:
        return ""
    missing = [c for c in (*_NEEDED, *(target_column(t) for t in TARGETS))
               if c not in frame.columns]
    if missing:
        return f"_bbob.csv lacks the columns {missing}._"
    frame = frame.assign(function=pd.to_numeric(frame["function"]).astype(int))
    frame = frame.assign(group=frame["function"].map(_GROUP_OF))
    dims = sorted(frame["dim"].unique(), reverse=True)
    items = []
    for group, functions in GROUPS.items():
        parts = []
        for dim in dims:
            s = shares(frame[(frame["group"] == group) & (frame["dim"] == dim)])
            if s.empty:
                continue
            runner = f" (next {_share_text(s.iloc[1])})" if len(s) > 1 else ""
            parts.append(f"{dim}-D {_share_text(s.iloc[0])}{runner}")
        if parts:
            items.append(f"- **{group}** (f{functions[0]}-f{functions[-1]}): " + "; ".join(parts))
    figure = Path(fig_dir) / "bbob_ecdf.png"
    return ("Best method per function group: the largest share of (run, target) pairs "
            f"reached within the budget (targets {TARGETS[0]:g} to {TARGETS[-1]:g}; 95% "
            "bootstrap interval over runs):\n\n" + "\n".join(items)
            + ("\n\n![bbob runtime ECDF per dimension](figures/bbob_ecdf.png)"
               if figure.exists() else ""))


_NEEDED = ("function", "dim", "method", "budget", "best_precision", "seconds", "library")


def section(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """Markdown for the bbob section (aRT tables, runtime ECDF figure); "" without data.

    Args:
        frames: file stem -> DataFrame (the "bbob" entry is used).
        fig_dir: the folder figures are saved in.

    Returns:
        The section's markdown.
    """
    frame = frames.get("bbob")
    if frame is None or frame.empty:
        return ""
    needed = [*_NEEDED, *(target_column(t) for t in TARGETS)]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        return f"_bbob.csv lacks the columns {missing}; nothing to show._\n"
    frame = frame.copy()
    frame["function"] = pd.to_numeric(frame["function"]).astype(int)
    if "group" not in frame.columns:
        frame["group"] = frame["function"].map(_GROUP_OF)
    parts = [
        "COCO's 24 noiseless BBOB functions (cocoex, the reference implementation); each "
        "run starts uniformly in [-4, 4]^d and stops at its budget or at f - f_opt <= "
        "1e-8. aRT = evaluations summed over all runs (to the target, or the whole run "
        "when it missed) / runs that reached the target, pooled over the group's "
        "functions and instances; (k/n) counts the runs that reached it. inf: no run did. "
        "The figure is the runtime ECDF over the five targets (x marks each method's "
        "budget); `python -m cocopp` on `results/bbob_coco/<run_id>/*` draws COCO's own "
        "plots.\n",
        _figure(frame, fig_dir),
        "### Per method and dimension\n",
        table(_summary(frame)),
    ]
    for dim, g in frame.groupby("dim", sort=True):
        budgets = ", ".join(fmt(b) for b in sorted(g["budget"].unique()))
        parts.append(f"### aRT in evaluations, {dim}-D (budget {budgets})\n")
        parts.append(table(_art_table(g)))
    return "\n".join(parts)
