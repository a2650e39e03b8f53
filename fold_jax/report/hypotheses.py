"""Report section for results/hypotheses.csv: "The essays' claims, tested".

A verdict table, one row per claim and workload: the claim in one line, the workload,
the best backprop setup (with its workaround) and the best forward-only setup (best by
the median over seeds), the deciding numbers with 95% bootstrap intervals over seeds
(:func:`fold_jax.report._common.bootstrap_median`), memory and time where they decide,
and a verdict in words with the condition under which it flips. Everything is computed
from the CSV rows (the report trains nothing); :func:`verdicts` is the logic, testable on
a small frame. Figures: accuracy vs depth by method; memory and step time vs T (log-log,
slopes printed); accuracy vs evaluations on the categorical and threshold nets.
:func:`headline` condenses the verdict table for the summary: one line per claim.

The verdict rules and their logic are in :mod:`fold_jax.report.hypotheses_verdicts`; its
names stay importable from here.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from fold_jax.report._common import bootstrap_median, method_styles, save, table
from fold_jax.report.hypotheses_verdicts import (
    CLAIMS,
    FLAT,
    GROWS,
    RSO_MARGIN,
    SHORT,
    WORKED_R2,
    compare,
    memory_slopes,
    memory_verdict,
    sequence_length,
    verdicts,
)

__all__ = [
    "CLAIMS",
    "DEPTH_TARGET",
    "FLAT",
    "GROWS",
    "RSO_MARGIN",
    "SHORT",
    "WORKED_R2",
    "compare",
    "depth_to_target",
    "headline",
    "memory_slopes",
    "memory_verdict",
    "section",
    "sequence_length",
    "tuning_summary",
    "verdicts",
]


# --------------------------------------------------------------------------- figures


def _depth_figure(frame: pd.DataFrame, fig_dir: Path) -> str:
    import matplotlib.pyplot as plt

    sub = frame[(frame["workload"] == "mlp_depth") & (frame["metric"] == "test_accuracy")]
    if sub.empty:
        return ""
    parts = sub["setting"].astype(str).str.extract(r"^(\w+)/d(\d+)$")
    sub = sub.assign(act=parts[0], depth=parts[1].astype(int))
    acts = sorted(sub["act"].unique())
    styles = method_styles(sub["method"])
    fig, axes = plt.subplots(1, len(acts), figsize=(4.5 * len(acts), 3.6), squeeze=False)
    for ax, act in zip(axes[0], acts, strict=True):
        for method, g in sub[sub["act"] == act].groupby("method"):
            stats = [(d, *bootstrap_median(v["value"])) for d, v in g.groupby("depth")]
            d, med, lo, hi, _ = (np.array(c, float) for c in zip(*stats, strict=True))
            ax.plot(d, med, label=method, **styles[method])
            ax.fill_between(d, np.where(np.isnan(lo), med, lo), np.where(np.isnan(hi), med, hi),
                            color=styles[method]["color"], alpha=0.15)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hidden layers (log2)")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"digits, {act}")
        ax.grid(True, alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    return save(fig, fig_dir, "hypotheses_depth", "test accuracy vs depth by method")


def _memory_figure(frame: pd.DataFrame, fig_dir: Path) -> str:
    import matplotlib.pyplot as plt

    sub = frame[frame["workload"] == "adding_memory"]
    if sub.empty:
        return ""
    sub = sub.assign(T=sequence_length(sub["setting"]))
    styles = method_styles(sub["method"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric, label in ((axes[0], "mem_bytes", "compiled step memory (bytes)"),
                              (axes[1], "step_s", "median step time (s)")):
        for method, g in sub[sub["metric"] == metric].groupby("method"):
            med = g.groupby("T")["value"].median()
            slope = memory_slopes(frame, method, metric)[0]
            ax.plot(med.index, med.values, label=f"{method} (slope {slope:.2f})",
                    **styles[method])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T (log2)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("memory vs T (GRU, adding problem)")
    axes[1].set_title("step time vs T")
    return save(fig, fig_dir, "hypotheses_recurrent", "memory and step time vs T, log-log")


def _curves_figure(frame: pd.DataFrame, fig_dir: Path) -> str:
    import matplotlib.pyplot as plt

    workloads = [w for w in ("categorical", "threshold_net")
                 if ((frame["workload"] == w) & (frame["metric"] == "curve_test_accuracy")).any()]
    if not workloads:
        return ""
    sub = frame[frame["metric"] == "curve_test_accuracy"]
    styles = method_styles(sub["method"])
    fig, axes = plt.subplots(1, len(workloads), figsize=(5 * len(workloads), 3.6),
                             squeeze=False)
    for ax, w in zip(axes[0], workloads, strict=True):
        for method, g in sub[sub["workload"] == w].groupby("method"):
            curve = g.groupby("step").agg(evals=("evals", "median"), acc=("value", "median"))
            curve = curve[curve["evals"] > 0]
            ax.plot(curve["evals"], curve["acc"], label=method, **styles[method])
        ax.set_xscale("log")
        ax.set_xlabel("loss evaluations (log)")
        ax.set_ylabel("test accuracy (median over seeds)")
        ax.set_title({"categorical": "categorical bottleneck", "threshold_net":
                      "hard-threshold (sign) net"}[w])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return save(fig, fig_dir, "hypotheses_curves", "accuracy vs evaluations")


def _cost_table(frame: pd.DataFrame) -> str:
    sub = frame[(frame["workload"] == "adding_memory")
                & frame["metric"].isin(["mem_bytes", "step_s"])]
    if sub.empty:
        return ""
    sub = sub.assign(T=sequence_length(sub["setting"]).astype(int))
    wide = sub.pivot_table(index="T", columns=["metric", "method"], values="value",
                           aggfunc="median")
    wide.columns = [f"{'MiB' if m == 'mem_bytes' else 'ms'} {meth}" for m, meth in wide.columns]
    for c in wide.columns:
        wide[c] = wide[c] / (2**20) if c.startswith("MiB") else wide[c] * 1e3
    return table(wide, index=True)


DEPTH_TARGET = 0.9  # test accuracy the depth table's time- and evaluations-to-target use


def depth_to_target(frame: pd.DataFrame, target: float = DEPTH_TARGET) -> pd.DataFrame:
    """Per (setting, method) of the depth workload: the median over seeds of the
    training seconds, steps and loss evaluations until the first evaluation whose test
    accuracy reaches ``target`` (from the stored ``curve_test_accuracy`` rows; inf for a
    seed that never reached it) and how many seeds reached it.

    Args:
        frame: the hypotheses.csv rows.
        target: the test accuracy to reach.

    Returns:
        Columns setting, method, reached ("k/n"), time (s), steps, evals; sorted by
        setting and time.
    """
    curves = frame[(frame["workload"] == "mlp_depth")
                   & (frame["metric"] == "curve_test_accuracy")]
    rows = []
    for (setting, method), g in curves.groupby(["setting", "method"]):
        firsts = []
        for _, run in g.groupby("seed"):
            hit = run[run["value"] >= target].sort_values("step")
            firsts.append((math.inf,) * 3 if hit.empty else
                          tuple(float(hit.iloc[0][c]) for c in ("elapsed_s", "step", "evals")))
        a = np.array(firsts, float)
        rows.append({"setting": setting, "method": method,
                     "reached": f"{int(np.isfinite(a[:, 0]).sum())}/{len(a)}",
                     "time (s)": float(np.median(a[:, 0])), "steps": float(np.median(a[:, 1])),
                     "evals": float(np.median(a[:, 2]))})
    out = pd.DataFrame(rows, columns=["setting", "method", "reached", "time (s)", "steps",
                                      "evals"])
    depth = out["setting"].str.extract(r"(\d+)$")[0].astype(float)  # "relu/d16" -> 16
    return (out.assign(_depth=depth).sort_values(["_depth", "setting", "time (s)"])
            .drop(columns="_depth").reset_index(drop=True))


def _count(seeds: pd.Series) -> str:
    low, high = int(seeds.min()), int(seeds.max())
    return str(low) if low == high else f"{low}-{high}"


def _prepare(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(trials, results)``: the tuning trials' rows and the others, numbers parsed."""
    frame = frame.copy()
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    for c in ("evals", "step", "elapsed_s"):
        if c in frame.columns:
            frame[c] = pd.to_numeric(frame[c], errors="coerce")
    is_trial = frame["metric"].astype(str).str.startswith("trial_")
    return frame[is_trial], frame[~is_trial]


def headline(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """The summary's finding: the verdict table (:func:`verdicts`) in one line per
    claim: per workload its verdict and the first of its deciding numbers (medians
    over seeds with 95% bootstrap intervals); "" without data.

    Args:
        frames: file stem -> DataFrame (the "hypotheses" entry is used).
        fig_dir: the figures folder (the section's figure is linked, not redrawn).

    Returns:
        Markdown: a list, then the depth figure's link.
    """
    frame = frames.get("hypotheses")
    if frame is None or frame.empty:
        return ""
    v = verdicts(_prepare(frame)[1])
    if v.empty:
        return "_No claim has rows to judge it._"
    numbers = "deciding numbers (median [95% CI] over seeds)"
    key = {text: k for k, text in CLAIMS.items()}
    items = []
    for claim, g in v.groupby("claim", sort=False):
        found = [f"**{r['verdict']}** on {r['workload']}: {r[numbers].split('; ')[0]}"
                 for r in g.to_dict("records")]
        items.append(f"- {SHORT[key[claim]]}: " + "; ".join(found))
    figure = Path(fig_dir) / "hypotheses_depth.png"
    return ("Is forward-only training at least as good as the best backprop setup where "
            "the essay says gradients fail? Verdicts, with medians over seeds and 95% "
            "bootstrap intervals:\n\n" + "\n".join(items)
            + ("\n\n![test accuracy vs depth by method](figures/hypotheses_depth.png)"
               if figure.exists() else ""))


def section(frames: dict[str, pd.DataFrame], fig_dir: Path) -> str:
    """Markdown for "The essays' claims, tested"; "" without data.

    Args:
        frames: file stem -> DataFrame (the "hypotheses" entry is used).
        fig_dir: the folder figures are saved in.

    Returns:
        The section's markdown.
    """
    frame = frames.get("hypotheses")
    if frame is None or frame.empty:
        return ""
    trials, frame = _prepare(frame)
    v = verdicts(frame)
    seeds = frame.groupby(["workload", "method", "setting"])["seed"].nunique()
    parts = [
        "Each claim of the gradient-free essay, put where gradients are said to fail, with "
        "the workaround practitioners use beside the forward-only methods. "
        + _protocol(trials) + f" Fixed step budgets (each row's `steps` and `evals`), "
        f"{_count(seeds)} seeds per result; 95% "
        "percentile-bootstrap intervals of the median over seeds. Best = highest median. "
        "Verdict rules are in `fold_jax/report/hypotheses_verdicts.py`.\n",
        table(v),
        _depth_figure(frame, fig_dir),
        f"Depth: training time, steps and loss evaluations to {DEPTH_TARGET:.0%} test "
        f"accuracy (medians over seeds; inf = not reached within the budget):\n\n"
        + table(depth_to_target(frame)),
        _memory_figure(frame, fig_dir),
        "Median compiled memory (MiB) and step time (ms) per T:\n\n" + _cost_table(frame),
        _curves_figure(frame, fig_dir),
        _tuning_table(trials),
    ]
    return "\n".join(p for p in parts if p)


def _protocol(trials: pd.DataFrame) -> str:
    """One sentence on how the rows' settings were chosen."""
    if trials.empty:
        return ("Settings fixed by hand (no tuning trials in these rows), the same for "
                "every seed and stated in each row's `hparams`.")
    n = sorted(pd.to_numeric(trials["n_trials"], errors="coerce").dropna().astype(int).unique())
    counts = "/".join(str(k) for k in n)
    return (f"Every method, backprop included, is tuned alike: {counts} settings drawn from "
            "its space (the recipe `hypotheses/<method>` of `fold_jax.recipes`, a Halton "
            "sequence), each trained on its own seed and scored by its final metric on the "
            "validation split; the best reruns on the seeds below, which alone read the test split "
            "(selected settings: each row's `hparams`; trials: the table at the end).")


def tuning_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """Per (workload, setting, method): trials, the selected one and its validation
    metric, the range over trials, and skipped steps summed over the trials.

    Args:
        trials: the ``trial_*`` rows of hypotheses.csv.

    Returns:
        One row per tuned (workload, setting, method).
    """
    if trials.empty:
        return pd.DataFrame()
    val = trials[trials["metric"].astype(str).str.startswith("trial_val_")]
    skipped = trials[trials["metric"] == "trial_skipped_steps"]
    out = []
    for (w, s, m), g in val.groupby(["workload", "setting", "method"], sort=True):
        chosen = g[g["selected"].astype(str) == "True"]
        sk = skipped[(skipped["workload"] == w) & (skipped["setting"] == s)
                     & (skipped["method"] == m)]
        out.append({"workload": w, "setting": s, "method": m, "trials": len(g),
                    "metric": str(g["metric"].iloc[0]).removeprefix("trial_"),
                    "selected trial": int(chosen["trial"].iloc[0]) if len(chosen) else -1,
                    "selected val": float(chosen["value"].iloc[0]) if len(chosen) else np.nan,
                    "worst val": float(g["value"].min()),
                    "skipped steps": int(pd.to_numeric(sk["value"]).sum())})
    return pd.DataFrame(out)


def _tuning_table(trials: pd.DataFrame) -> str:
    summary = tuning_summary(trials)
    if summary.empty:
        return ""
    return ("Tuning: per method and setting, the selected trial (highest final "
            "validation metric) and the worst trial's, i.e. what tuning bought:\n\n"
            + table(summary))
